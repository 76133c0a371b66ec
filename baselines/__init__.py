"""Offline MARL baselines, one file per algorithm, and the literal registry of them.

:data:`ALGORITHMS` maps each ``marl-bench evaluate --algo`` name to ``"module:factory"``. It is a
literal dict, never filled as an import side effect, and nothing is imported until a name is
resolved, so ``import baselines`` stays light. A factory is called as
``factory(info, dataset, **config_overrides)`` and returns an
:class:`~baselines.base.OfflineAlgorithm`; it may be the algorithm class itself or a function
that picks a class (for instance by ``info.discrete``). When the factory has a
``check_supports(info, dataset_id)`` attribute (every class does), the pipeline calls it once per
(algorithm, dataset) pairing before any training; otherwise it checks the built algorithm's class.
"""
from __future__ import annotations

import importlib
from typing import Any, Callable

ALGORITHMS: dict[str, str] = {
    "bc": "baselines.bc:make_bc",
    "cfcql": "baselines.cfcql:make_cfcql",
    # "discrete|continuous": the two action spaces live in separate files.
    "macql": "baselines.macql:make_macql|baselines.macql_continuous:make_macql_continuous",
    "maicq": "baselines.maicq:make_maicq|baselines.maicq_continuous:make_maicq_continuous",
    "omar": "baselines.omar_discrete:make_omar_discrete|baselines.omar:make_omar_continuous",
    "madtkd": "baselines.madtkd:make_madtkd",
    "matd3-bc": "baselines.matd3bc:make_matd3bc",
    "icql": "baselines.icql:make_icql",
}

#: Variants run by name only (never by ``--algo all``): the ablations the leaderboard reports.
ABLATIONS: dict[str, str] = {
    "cfcql_sign_plus": "baselines.cfcql:make_cfcql_sign_plus",
    "cfcql_tau0": "baselines.cfcql:make_cfcql_tau0",
    "cfcql_vae": "baselines.cfcql:make_cfcql_vae",
    "cfcql_alpha_half": "baselines.cfcql:make_cfcql_alpha_half",
    "cfcql_alpha_double": "baselines.cfcql:make_cfcql_alpha_double",
}


#: How tables name each algorithm (the papers' spelling).
DISPLAY_NAMES: dict[str, str] = {
    "bc": "BC", "cfcql": "CFCQL", "macql": "MACQL", "maicq": "MAICQ", "omar": "OMAR",
    "madtkd": "MADTKD", "matd3-bc": "MATD3-BC", "icql": "ICQL",
    "cfcql_sign_plus": "CFCQL (sign +1)", "cfcql_tau0": "CFCQL (tau 0)",
    "cfcql_vae": "CFCQL (VAE lambda)",
    "cfcql_alpha_half": "CFCQL (alpha / 2)", "cfcql_alpha_double": "CFCQL (alpha x 2)",
}


def display_name(name: str) -> str:
    """The name tables print for a registered algorithm id."""
    return DISPLAY_NAMES.get(name, name)


def algorithm_names() -> list[str]:
    """The registered algorithm names, sorted."""
    return sorted(ALGORITHMS)


def get_algorithm(name: str) -> Callable[..., Any]:
    """Import and return the factory registered under ``name``.

    Raises:
        KeyError: ``name`` is not registered; the message lists the valid names.
        RuntimeError: the registered module or factory cannot be imported.
    """
    target = ALGORITHMS.get(name) or ABLATIONS.get(name)
    if target is None:
        raise KeyError(f"Unknown algorithm {name!r}; valid: {', '.join(algorithm_names())} "
                       f"(or 'all'), and the ablations {', '.join(sorted(ABLATIONS))}.")
    if "|" in target:
        discrete, continuous = target.split("|")
        return _by_action_space(name, discrete, continuous)
    return _import_factory(name, target)


def _import_factory(name: str, target: str) -> Callable[..., Any]:
    module_name, _, attr = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise RuntimeError(f"algorithm {name!r} is registered as {target!r}, but its module "
                           f"cannot be imported: {err}") from err
    try:
        return getattr(module, attr)
    except AttributeError:
        raise RuntimeError(f"algorithm {name!r} is registered as {target!r}, but "
                           f"{module_name} has no {attr!r}") from None


def _by_action_space(name: str, discrete: str, continuous: str) -> Callable[..., Any]:
    """A factory that builds the discrete or the continuous version from ``info.discrete``."""
    def factory(info, dataset, **overrides):
        return _import_factory(name, discrete if info.discrete else continuous)(
            info, dataset, **overrides)
    factory.__name__ = f"make_{name}"
    return factory


__all__ = ["ALGORITHMS", "ABLATIONS", "DISPLAY_NAMES", "display_name", "algorithm_names", "get_algorithm"]
