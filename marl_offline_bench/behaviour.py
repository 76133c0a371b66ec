"""The shipped behaviour agents as acting policies, and the medium-replay they rebuild.

The behaviour agents that make the medium, expert and mixed datasets ship with the package, one
folder per task under :data:`SHIPPED_ROOT` (``expert.pt``, ``medium.pt``, the run's
``config.json`` and ``curve.csv``, and for medium-replay the learner's joint actions per acting
batch, :data:`MEDIUM_REPLAY_LOG`). Every function takes the root to read from as an argument,
so a build can act from agents retrained elsewhere (``marl-bench collect --train``) in a
folder of the same layout. Training and choosing the agents is ``collection``'s work; this
module only reads what they shipped.
"""
from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .action_log import replay_action_log
from .dataset import EpisodeArrays
from .envs import split_task_id
from .networks import AgentActors, RNNAgent
from .policies import EpsilonGreedyPolicy, GaussianActorPolicy

__all__ = ["SHIPPED_ROOT", "MEDIUM_REPLAY_LOG", "load_checkpoint", "agent_from_checkpoint",
           "build_actors", "actors_from_checkpoint", "behaviour_policy", "shipped_checkpoint",
           "shipped_medium_replay", "medium_replay_description", "rebuild_medium_replay"]

#: Where the package's behaviour agents ship: ``SHIPPED_ROOT / <task_id> / {expert,medium}.pt``.
SHIPPED_ROOT = Path(__file__).with_name("data") / "behaviour"
#: What rebuilds medium-replay: ``<root> / <task_id> / MEDIUM_REPLAY_LOG``, the learner's joint
#: actions per acting batch (:mod:`marl_offline_bench.action_log`).
MEDIUM_REPLAY_LOG = "medium_replay_actions.npz"


def _root(root: str | Path | None) -> Path:
    return SHIPPED_ROOT if root is None else Path(root)


# -- checkpoints as networks and policies ---------------------------------------------------------
def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """A behaviour checkpoint (QMIX or MATD3, run or shipped) as a dict of tensors and values."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no behaviour checkpoint at {path}; train one with "
                                "`python -m collection.qmix --task T --out DIR` (or "
                                "collection.matd3 for continuous tasks)")
    return torch.load(path, weights_only=True)


def agent_from_checkpoint(checkpoint: dict[str, Any]) -> RNNAgent:
    """The GRU agent network of a QMIX checkpoint, weights loaded, in eval mode."""
    dims = checkpoint["task"]
    agent = RNNAgent(dims["obs_dim"] + dims["n_actions"] + dims["n_agents"], dims["n_actions"],
                     checkpoint["config"]["agent_hidden_dim"])
    agent.load_state_dict(checkpoint["agent"])
    return agent.eval()


def build_actors(obs_dim: int, action_mask: np.ndarray, hidden_dim: int) -> AgentActors:
    """Per-agent deterministic actors (tanh output, zero on padded action entries)."""
    return AgentActors(obs_dim, np.asarray(action_mask, bool), hidden_dim)


def actors_from_checkpoint(checkpoint: dict[str, Any], key: str = "actors") -> AgentActors:
    """The actors of a MATD3 checkpoint (run or shipped), weights loaded, in eval mode."""
    weights = checkpoint[key]
    mask = weights["action_mask"].numpy().astype(bool)
    obs_dim = weights["net.hidden.0.weight"].shape[1]
    actors = build_actors(obs_dim, mask, int(checkpoint["hidden_dim"]))
    actors.load_state_dict(weights)
    return actors.eval()


def behaviour_policy(checkpoint: str | Path | dict[str, Any], epsilon: float = 0.0,
                     seed: int = 0, noise_std: float = 0.0
                     ) -> EpsilonGreedyPolicy | GaussianActorPolicy:
    """An acting policy for :func:`~marl_offline_bench.rollout.rollout` from a checkpoint.

    Args:
        checkpoint: a path, or a dict from :func:`load_checkpoint`.
        epsilon: QMIX: exploration rate over available actions (0: greedy, as evaluated).
        seed: seed of the exploration draws; ``reset(num_envs)`` restarts them (and QMIX's
            hidden state), so each batch of episodes is reproducible.
        noise_std: MATD3: std of the Gaussian noise added to the deterministic actors' actions
            (clipped to [-1, 1]; 0: the actors as evaluated).
    """
    if not isinstance(checkpoint, dict):
        checkpoint = load_checkpoint(checkpoint)
    if checkpoint.get("algorithm") == "matd3":
        return GaussianActorPolicy(actors_from_checkpoint(checkpoint), noise_std, seed)
    dims = checkpoint["task"]
    # float64: the same actions on any CPU (see EpsilonGreedyPolicy).
    return EpsilonGreedyPolicy(agent_from_checkpoint(checkpoint), dims["n_agents"],
                               dims["n_actions"], epsilon, seed, float64=True)


# -- what ships ---------------------------------------------------------------------------------
def shipped_checkpoint(task_id: str, quality: str, root: str | Path | None = None) -> Path:
    """Path of a behaviour checkpoint (``expert`` or ``medium``) under ``root`` (default: the
    package's)."""
    split_task_id(task_id)
    if quality not in ("expert", "medium"):
        raise ValueError(f"behaviour checkpoints exist for 'expert' and 'medium', not {quality!r}")
    return _root(root) / task_id / f"{quality}.pt"


def shipped_medium_replay(task_id: str, root: str | Path | None = None) -> Path | None:
    """The action log that rebuilds a task's medium-replay under ``root``, or None."""
    split_task_id(task_id)
    path = _root(root) / task_id / MEDIUM_REPLAY_LOG
    return path if path.is_file() else None


def medium_replay_description(task_id: str, root: str | Path | None = None) -> dict[str, Any]:
    """How a task's shipped medium-replay was made (its window of the learner's episodes)."""
    path = shipped_medium_replay(task_id, root)
    if path is None:
        raise FileNotFoundError(f"{task_id} ships nothing to rebuild medium-replay from (no "
                                f"{MEDIUM_REPLAY_LOG} in {_root(root) / task_id})")
    return json.loads((path.parent / "config.json").read_text())["medium_replay"]


def rebuild_medium_replay(task_id: str, episodes: int | None = None, engine: str | None = None,
                          progress: Any = None, root: str | Path | None = None
                          ) -> tuple[EpisodeArrays, dict[str, Any]]:
    """Medium-replay of a task from what ships: its episodes and how they were made.

    ``episodes`` keeps only the last ones of the window (acting batches before them are not
    replayed), for small re-collections.
    """
    description = medium_replay_description(task_id, root)
    first, until = int(description["first_episode"]), int(description["until_episode"])
    if episodes is not None:
        if episodes < 1:
            raise ValueError(f"episodes must be at least 1, got {episodes}")
        first = max(first, until - episodes)
    data, matches = replay_action_log(shipped_medium_replay(task_id, root), task_id, first,
                                      engine=engine, progress=progress)
    if matches is False:
        warnings.warn(f"{task_id}: the rebuilt medium-replay differs from the episodes recorded "
                      "when it shipped; this simulator version behaves differently",
                      RuntimeWarning, stacklevel=2)
    return data, {**description, "first_episode": first, "episodes": until - first,
                  "matches_shipped_digest": matches}
