"""Offline algorithms as the evaluation pipeline sees them, and the registry that finds them.

An algorithm is a class (:class:`OfflineAlgorithm`) with a flat, validated config dataclass
(:class:`BaseConfig`), a per-dataset table and an ``update()``; it is declared to the suite by
an :class:`AlgorithmSpec` that says which class serves each action kind, so capability is known
before anything is built. Packages declare their specs through an entry point, which is how
the suite's own ``baselines`` and a researcher's package plug in alike::

    # pyproject.toml of the package
    [project.entry-points."marl_offline_bench.algorithms"]
    mypackage = "mypackage:ALGORITHMS"     # a list of AlgorithmSpec

``marl-bench evaluate --algo NAME`` then finds ``NAME`` here, checks its pairing with each
dataset once, validates ``--set`` keys against its config's fields, and builds it with
:func:`build_algorithm`.
"""
from __future__ import annotations

import abc
import dataclasses
import functools
import importlib
from dataclasses import asdict, dataclass, field
from importlib.metadata import entry_points
from typing import Any, Callable, ClassVar, Iterable, Mapping

import numpy as np
import torch

from .dataset import MARLDataset
from .envs import TaskInfo
from .protocols import FRACTION_OF_FULL, reference_overrides

__all__ = ["BaseConfig", "OfflineAlgorithm", "AlgorithmSpec", "ENTRY_POINT_GROUP",
           "algorithm_registry", "get_algorithm", "algorithm_names", "resolve_algorithms",
           "display_name", "is_ablation", "build_algorithm", "Unsupported", "Progress",
           "no_progress"]

ENTRY_POINT_GROUP = "marl_offline_bench.algorithms"


# -- what an algorithm is ------------------------------------------------------------------------
#: Wraps the steps of a one-off fit, with what it fits in words, for a progress display:
#: ``for _ in progress(range(steps), "behaviour model"): ...``.
Progress = Callable[[Iterable[int], str], Iterable[int]]


def no_progress(steps: Iterable[int], what: str) -> Iterable[int]:
    return steps


@dataclass
class BaseConfig:
    """Fields every algorithm's config has."""

    seed: int = 0
    """Seed for torch, numpy and batch sampling."""
    device: str = "cpu"
    """Torch device ("cpu", "cuda")."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class OfflineAlgorithm(abc.ABC):
    """An offline MARL learner bound to one dataset.

    Class attributes:
        Config: its config dataclass (a :class:`BaseConfig`).
        per_dataset: dataset id -> config overrides (the authors' per-dataset table).
        reference_settings: the settings the algorithm takes, under ``full``, from the
            reference code's table of its dataset's task
            (:data:`marl_offline_bench.protocols.REFERENCE`: batch, learning rate, CQL
            sampling), where they mean what its config means by them.
        protocol_overrides: protocol name -> config overrides that size the run for that
            protocol's budget (``smoke`` for tests, ``quick`` for a 2-core machine); they sit
            between the per-dataset table and explicit overrides, and every run records the
            resolved config.
        checkpoint_attributes: attributes whose ``state_dict()`` make up a checkpoint (see
            :meth:`state_dict`); an algorithm whose parts sit elsewhere (in a backbone object)
            names them in :meth:`checkpoint_parts` instead.
    """

    Config: ClassVar[type[BaseConfig]]
    per_dataset: ClassVar[dict[str, dict[str, Any]]] = {}
    reference_settings: ClassVar[tuple[str, ...]] = ()
    protocol_overrides: ClassVar[dict[str, dict[str, Any]]] = {}
    checkpoint_attributes: ClassVar[tuple[str, ...]] = ()

    def __init__(self, info: TaskInfo, dataset: MARLDataset, config: BaseConfig):
        self.info, self.dataset, self.config = info, dataset, config
        torch.manual_seed(config.seed)
        np.random.seed(config.seed)

    @classmethod
    def config_fields(cls) -> set[str]:
        """The names ``--set`` may give for this algorithm."""
        return {f.name for f in dataclasses.fields(cls.Config)}

    @classmethod
    def config_for(cls, dataset_id: str, protocol: str | None = None,
                   **overrides: Any) -> BaseConfig:
        """Defaults, then the per-dataset entry, then (under ``full``) the reference code's
        settings of the task, then the protocol's sizing, then overrides."""
        taken = tuple(name for name in cls.reference_settings if name in cls.config_fields())
        # `tenth` trains with full's settings, for fewer updates
        sizing = "full" if protocol in FRACTION_OF_FULL else protocol or ""
        return cls.Config(**{**cls.per_dataset.get(dataset_id, {}),
                             **reference_overrides(protocol, dataset_id, taken),
                             **cls.protocol_overrides.get(sizing, {}), **overrides})

    def prepare(self, progress: Progress = no_progress) -> None:
        """One-off work before the first update: fitting a behaviour model or a teacher.

        :meth:`update` calls it, so calling it first only lets a caller show its progress. It
        does nothing once done, and a resumed run restores that it was done."""

    @abc.abstractmethod
    def update(self) -> dict[str, float]:
        """One gradient update on a batch drawn from the dataset; returns scalar metrics."""

    @abc.abstractmethod
    def policy(self):
        """A greedy acting policy: ``policy(obs, avail) -> actions`` with optional ``reset(B)``."""

    def checkpoint_parts(self) -> dict[str, Any]:
        """Checkpoint key -> object with ``state_dict``/``load_state_dict``; by default the
        ``checkpoint_attributes``, each under its own name."""
        return {name: getattr(self, name) for name in self.checkpoint_attributes}

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume training: the ``checkpoint_attributes``' state, the
        update count, the batch sampler's random state and torch's."""
        parts = self.checkpoint_parts()
        if not parts:
            raise NotImplementedError(f"{type(self).__name__} sets no checkpoint_attributes "
                                      "and does not override state_dict()")
        state: dict[str, Any] = {name: part.state_dict() for name, part in parts.items()}
        state.update(config=self.config.to_dict(), updates=self.updates,
                     sampler_rng=self.sampler.rng.bit_generator.state,
                     torch_rng=torch.get_rng_state())
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore from :meth:`state_dict`."""
        for name, part in self.checkpoint_parts().items():
            part.load_state_dict(state[name])
        self.updates = int(state["updates"])
        self.sampler.rng.bit_generator.state = state["sampler_rng"]
        torch.set_rng_state(state["torch_rng"])


# -- how an algorithm is declared ----------------------------------------------------------------
class Unsupported(ValueError):
    """An algorithm cannot run on a dataset (its action kind); the message names both."""


@dataclass(frozen=True)
class AlgorithmSpec:
    """One ``--algo`` name: the class serving each action kind, and fixed settings.

    Attributes:
        name: the ``--algo`` name (and the records' folder).
        display_name: how tables print it (the papers' spelling).
        discrete: ``"module:Class"`` of the learner for discrete actions, or None.
        continuous: ``"module:Class"`` for continuous actions, or None.
        settings: config values this name fixes (an ablation's change), on both kinds.
        discrete_settings, continuous_settings: values fixed on one kind only.
        scale: factors applied to the resolved config's values (``{"alpha": 0.5}``).
        ablation: a variant of another algorithm, run by name only (never by ``all``) and
            never ranked against the contenders.
    """

    name: str
    display_name: str
    discrete: str | None = None
    continuous: str | None = None
    settings: Mapping[str, Any] = field(default_factory=dict)
    discrete_settings: Mapping[str, Any] = field(default_factory=dict)
    continuous_settings: Mapping[str, Any] = field(default_factory=dict)
    scale: Mapping[str, float] = field(default_factory=dict)
    ablation: bool = False

    def __post_init__(self) -> None:
        if self.discrete is None and self.continuous is None:
            raise ValueError(f"algorithm {self.name!r} declares no class for either action kind")

    def supports(self, discrete: bool) -> bool:
        return (self.discrete if discrete else self.continuous) is not None

    def check_supports(self, info: TaskInfo, dataset_id: str) -> None:
        """Raise :class:`Unsupported` naming both when the algorithm has no class for the
        dataset's action kind."""
        if not self.supports(info.discrete):
            kind = "discrete" if info.discrete else "continuous"
            raise Unsupported(f"{self.name} does not support {kind} actions, which "
                              f"{dataset_id} has.")

    def algorithm_class(self, discrete: bool) -> type[OfflineAlgorithm]:
        target = self.discrete if discrete else self.continuous
        if target is None:
            raise Unsupported(f"{self.name} has no {'discrete' if discrete else 'continuous'} "
                              "learner")
        module_name, _, attr = target.partition(":")
        try:
            return getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError) as err:
            raise RuntimeError(f"algorithm {self.name!r} is declared as {target!r}, which cannot "
                               f"be imported: {err}") from err

    def fixed_settings(self, discrete: bool) -> dict[str, Any]:
        return {**self.settings, **(self.discrete_settings if discrete
                                    else self.continuous_settings)}

    def config(self, info: TaskInfo, dataset_id: str, protocol: str | None,
               **overrides: Any) -> BaseConfig:
        """The resolved config: the class's layers, this name's settings and scales, then
        ``overrides`` (which win)."""
        cls = self.algorithm_class(info.discrete)
        config = cls.config_for(dataset_id, protocol, **self.fixed_settings(info.discrete))
        scaled = {k: f * getattr(config, k) for k, f in self.scale.items()}
        return dataclasses.replace(config, **{**scaled, **overrides})


# -- the registry --------------------------------------------------------------------------------
@functools.lru_cache(maxsize=1)
def algorithm_registry() -> dict[str, AlgorithmSpec]:
    """Every algorithm declared through the ``marl_offline_bench.algorithms`` entry points.

    Raises:
        RuntimeError: two packages declare one name, or no package declares any (the package
            was not installed, so its entry points are unknown).
    """
    found: dict[str, AlgorithmSpec] = {}
    for point in entry_points(group=ENTRY_POINT_GROUP):
        for spec in point.load():
            if spec.name in found:
                raise RuntimeError(f"algorithm {spec.name!r} is declared twice (entry point "
                                   f"{point.name!r} and another); rename one.")
            found[spec.name] = spec
    if not found:
        raise RuntimeError(f"no algorithm is declared under the entry point group "
                           f"{ENTRY_POINT_GROUP!r}; install the package (`pip install -e .` in "
                           "a checkout) so that its entry points are registered.")
    return found


def get_algorithm(name: str) -> AlgorithmSpec:
    """The spec registered under ``name``.

    Raises:
        KeyError: ``name`` is not registered; the message lists the valid names.
    """
    registry = algorithm_registry()
    if name not in registry:
        raise KeyError(f"Unknown algorithm {name!r}; valid: {', '.join(algorithm_names())} "
                       f"(or 'all'), and the ablations "
                       f"{', '.join(algorithm_names(ablations=True, contenders=False))}.")
    return registry[name]


def algorithm_names(ablations: bool = False, contenders: bool = True) -> list[str]:
    """Registered names, sorted: the contenders (what ``all`` runs), the ablations, or both."""
    return sorted(name for name, spec in algorithm_registry().items()
                  if (spec.ablation and ablations) or (not spec.ablation and contenders))


def resolve_algorithms(spec: str) -> list[str]:
    """``"all"``, one name or a comma list -> registered names.

    Raises:
        KeyError: an unknown name (listing the valid ones).
        ValueError: an empty list.
    """
    names = algorithm_names() if spec == "all" else [s.strip() for s in spec.split(",")
                                                      if s.strip()]
    if not names:
        raise ValueError("--algo is empty; give a registered name or 'all'.")
    for name in names:
        get_algorithm(name)
    return names


def display_name(name: str) -> str:
    """How tables print an algorithm (its own name where it is no longer registered)."""
    spec = algorithm_registry().get(name)
    return spec.display_name if spec else name


def is_ablation(name: str) -> bool:
    spec = algorithm_registry().get(name)
    return bool(spec and spec.ablation)


def build_algorithm(name: str, info: TaskInfo, dataset: MARLDataset,
                    protocol: str | None = None, **overrides: Any) -> OfflineAlgorithm:
    """Build ``name`` for a dataset: capability checked first, then its resolved config.

    Args:
        name: a registered algorithm.
        info: the dataset's task.
        dataset: the loaded dataset.
        protocol: the protocol whose sizing applies (None: the class's defaults and tables).
        **overrides: config values that win over every layer (``seed``, ``device``, ``--set``).
    """
    spec = get_algorithm(name)
    spec.check_supports(info, dataset.dataset_id)
    config = spec.config(info, dataset.dataset_id, protocol, **overrides)
    return spec.algorithm_class(info.discrete)(info, dataset, config)
