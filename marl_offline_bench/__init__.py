"""marl-offline-bench: offline multi-agent RL datasets and baselines for the CFCQL tasks.

Typical use::

    import marl_offline_bench as mob
    data = mob.load("equal_line-n6-random-v0")      # builds it on first use
    data["observations"].shape                      # (N, n_agents, obs_dim)
    mob.normalized_score("equal_line-n6-random-v0", returns)
    env = mob.make_env(data.task_id)                # a PettingZoo ParallelEnv
"""
from .algorithms import (AlgorithmSpec, BaseConfig, OfflineAlgorithm, Progress, Unsupported,
                         algorithm_names, algorithm_registry, build_algorithm, display_name,
                         get_algorithm, no_progress)
from .api import dataset_card, list_datasets, load
from .collect import collect_dataset
from .rollout import RandomPolicy, rollout
from .dataset import EpisodeArrays, EpisodeBatch, MARLDataset
from .envs import TaskInfo, task_info
from .envs import make_env as _make_env
from .envs import make_vec_env as _make_vec_env
from .evaluation import EvaluationResult, evaluate_policy, play_episodes
from .protocols import PROTOCOLS, REFERENCE, Budget, protocol_budget
from .registry import DATASETS, QUALITIES, TASKS, get_dataset, get_task, reference_scores
from .scores import normalized_score
from .storage import CorruptDatasetError
from .training import load_learner

__version__ = "0.1.0"


def make_env(task_or_dataset_id: str, **kwargs):
    """A PettingZoo ``ParallelEnv`` for a task id or for the task a dataset came from."""
    return _make_env(get_task(task_or_dataset_id).task_id, **kwargs)


def make_vec_env(task_or_dataset_id: str, num_envs: int, **kwargs):
    """A batched :class:`~marl_offline_bench.envs.VectorTaskEnv` for a task or dataset id."""
    return _make_vec_env(get_task(task_or_dataset_id).task_id, num_envs, **kwargs)


__all__ = [
    # datasets
    "load", "list_datasets", "dataset_card", "collect_dataset", "MARLDataset",
    "EpisodeArrays", "EpisodeBatch", "CorruptDatasetError", "DATASETS", "TASKS", "QUALITIES",
    "get_dataset", "get_task",
    # environments and scoring
    "make_env", "make_vec_env", "evaluate_policy", "play_episodes", "EvaluationResult", "normalized_score",
    "reference_scores", "rollout", "RandomPolicy", "TaskInfo", "task_info",
    # algorithms and protocols
    "OfflineAlgorithm", "BaseConfig", "Progress", "no_progress", "AlgorithmSpec", "Unsupported",
    "algorithm_registry", "algorithm_names", "get_algorithm", "build_algorithm", "display_name",
    "PROTOCOLS", "REFERENCE", "Budget", "protocol_budget", "load_learner",
]
