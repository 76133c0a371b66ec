"""What every offline algorithm offers the evaluation pipeline (``marl-bench evaluate``).

An algorithm is a class with capability flags (after BenchMARL) and a flat ``Config``
dataclass. The pipeline pairs it with a dataset, checks the flags once, then alternates
``update()`` calls with evaluations of ``policy()`` through
:func:`marl_offline_bench.evaluate_policy`.
"""
from __future__ import annotations

import abc
import dataclasses
from dataclasses import asdict, dataclass
from typing import Any, ClassVar

import numpy as np
import torch

from marl_offline_bench.dataset import MARLDataset
from marl_offline_bench.envs import TaskInfo
from marl_offline_bench.protocols import reference_overrides


#: CPU sizing under the ``quick`` protocol, one rule for every learner so that their runs are
#: comparable: a discrete learner draws this many episodes per update (128 in the authors' code)...
QUICK_EPISODE_BATCH = 32
#: ...and a continuous learner this many transitions (1024 on MPE, 256 on HalfCheetah in the code).
QUICK_TRANSITION_BATCH = 256

#: What the learners built on the reference code's continuous backbone take from its per-task
#: table under ``full`` (:data:`marl_offline_bench.protocols.REFERENCE`).
CONTINUOUS_REFERENCE_SETTINGS: tuple[str, ...] = ("batch_size", "lr", "policy_samples",
                                                  "critic_updates_per_round")


@dataclass
class BaseConfig:
    """Fields every algorithm's config has."""

    seed: int = 0
    """Seed for torch, numpy and batch sampling."""
    device: str = "cpu"
    """Torch device ("cpu", "cuda")."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class QMIXBackboneConfig(BaseConfig):
    """The PyMARL/QMIX backbone shared by the discrete value-based learners (ALGORITHMS.md)."""

    batch_size: int = 128
    """Episodes per update."""
    lr: float = 1e-3
    """Adam learning rate of the agent network and mixer."""
    grad_clip: float = 10.0
    """Gradient-norm clip over the agent network and mixer together."""
    gamma: float = 0.99
    """Discount (per task; 0.99 on every discrete task)."""
    td_lambda: float = 0.6
    """lambda of the TD(lambda) targets."""
    target_update_interval: int = 25
    """Updates between hard copies of the agent network and mixer into their targets."""
    hidden_dim: int = 64
    """Width of the agent network's layers and GRU."""
    mixing_dim: int = 32
    """Width of the QMIX mixing layer."""
    hypernet_dim: int = 64
    """Width of the mixer's hypernetworks."""

    def __post_init__(self) -> None:
        if not 0.0 <= self.gamma <= 1.0:
            raise ValueError(f"gamma must lie in [0, 1], got {self.gamma}")
        if not 0.0 <= self.td_lambda <= 1.0:
            raise ValueError(f"td_lambda must lie in [0, 1], got {self.td_lambda}")
        if self.lr <= 0 or self.grad_clip <= 0:
            raise ValueError(f"lr and grad_clip must be positive, got {self.lr}, {self.grad_clip}")
        for name in ("batch_size", "target_update_interval", "hidden_dim", "mixing_dim",
                     "hypernet_dim"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")


@dataclass
class ContinuousBackboneConfig(BaseConfig):
    """The actor/central-critic backbone of the continuous learners (ALGORITHMS.md; MPE sizes
    by default, each algorithm's per-dataset table sets HalfCheetah's)."""

    batch_size: int = 1024
    """Transitions per update."""
    hidden_dim: int = 64
    """Hidden width of the actors and critics (MPE 64, HalfCheetah 256)."""
    lr: float = 1e-3
    """Adam learning rate of actors and critics."""
    target_rate: float = 0.01
    """Polyak rate of the target networks."""
    gamma: float = 0.95
    """Discount (per task; 0.95 on every continuous task, as the authors' code ran)."""

    def __post_init__(self) -> None:
        for name in ("batch_size", "hidden_dim"):
            if getattr(self, name) < 1:
                raise ValueError(f"{type(self).__name__}.{name} must be at least 1, got "
                                 f"{getattr(self, name)}")
        if self.lr <= 0:
            raise ValueError(f"lr must be positive, got {self.lr}")
        if not 0.0 < self.target_rate <= 1.0:
            raise ValueError(f"target_rate must lie in (0, 1], got {self.target_rate}")
        if not 0.0 <= self.gamma <= 1.0:
            raise ValueError(f"gamma must lie in [0, 1], got {self.gamma}")


#: What an actor-critic learner (per-agent actors, a central critic, their targets and
#: optimisers) keeps in its checkpoints.
ACTOR_CRITIC_CHECKPOINT: tuple[str, ...] = ("actors", "critic", "target_actors", "target_critic",
                                            "actor_optimiser", "critic_optimiser")


class OfflineAlgorithm(abc.ABC):
    """An offline MARL learner bound to one dataset.

    Class attributes:
        name: the id used by ``marl-bench evaluate --algo``.
        supports_discrete / supports_continuous: which action spaces it handles.
        Config: its config dataclass.
        per_dataset: dataset id -> config overrides (the authors' per-dataset table).
        reference_settings: the settings the algorithm takes, under ``full``, from the
            reference code's table of its dataset's task
            (:data:`marl_offline_bench.protocols.REFERENCE`: batch, learning rate, CQL
            sampling), where they mean what its config means by them.
        protocol_overrides: protocol name -> config overrides that size the run for that
            protocol's budget (``smoke`` for tests, ``quick`` for a 2-core machine); they sit
            between the per-dataset table and explicit overrides, and every run records the
            resolved config.
    """

    name: ClassVar[str]
    supports_discrete: ClassVar[bool] = False
    supports_continuous: ClassVar[bool] = False
    Config: ClassVar[type[BaseConfig]]
    per_dataset: ClassVar[dict[str, dict[str, Any]]] = {}
    reference_settings: ClassVar[tuple[str, ...]] = ()
    protocol_overrides: ClassVar[dict[str, dict[str, Any]]] = {}

    def __init__(self, info: TaskInfo, dataset: MARLDataset, config: BaseConfig):
        self.info, self.dataset, self.config = info, dataset, config
        torch.manual_seed(config.seed)
        np.random.seed(config.seed)

    @classmethod
    def check_supports(cls, info: TaskInfo, dataset_id: str) -> None:
        """Raise ValueError naming both when the algorithm cannot run on this dataset."""
        ok = cls.supports_discrete if info.discrete else cls.supports_continuous
        if not ok:
            kind = "discrete" if info.discrete else "continuous"
            raise ValueError(f"{cls.name} does not support {kind} actions, which {dataset_id} has.")

    @classmethod
    def config_for(cls, dataset_id: str, protocol: str | None = None,
                   **overrides: Any) -> BaseConfig:
        """Defaults, then the per-dataset entry, then (under ``full``) the reference code's
        settings of the task, then the protocol's sizing, then overrides."""
        fields = {f.name for f in dataclasses.fields(cls.Config)}
        taken = tuple(name for name in cls.reference_settings if name in fields)
        return cls.Config(**{**cls.per_dataset.get(dataset_id, {}),
                             **reference_overrides(protocol, dataset_id, taken),
                             **cls.protocol_overrides.get(protocol or "", {}), **overrides})

    @abc.abstractmethod
    def update(self) -> dict[str, float]:
        """One gradient update on a batch drawn from the dataset; returns scalar metrics."""

    @abc.abstractmethod
    def policy(self):
        """A greedy acting policy: ``policy(obs, avail) -> actions`` with optional ``reset(B)``."""

    #: Attributes whose ``state_dict()`` make up a checkpoint (networks, target networks,
    #: optimisers, normalisers). With it set, the default :meth:`state_dict` and
    #: :meth:`load_state_dict` save and restore them together with ``updates``, the batch
    #: sampler's random state (``self.sampler.rng``) and torch's.
    checkpoint_attributes: ClassVar[tuple[str, ...]] = ()

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume training (networks, optimisers, counters)."""
        if not self.checkpoint_attributes:
            raise NotImplementedError(f"{type(self).__name__} sets no checkpoint_attributes "
                                      "and does not override state_dict()")
        state: dict[str, Any] = {name: getattr(self, name).state_dict()
                                 for name in self.checkpoint_attributes}
        state.update(config=self.config.to_dict(), updates=self.updates,
                     sampler_rng=self.sampler.rng.bit_generator.state,
                     torch_rng=torch.get_rng_state())
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore from :meth:`state_dict`."""
        for name in self.checkpoint_attributes:
            getattr(self, name).load_state_dict(state[name])
        self.updates = int(state["updates"])
        self.sampler.rng.bit_generator.state = state["sampler_rng"]
        torch.set_rng_state(state["torch_rng"])
