"""Offline MARL baselines, one file per algorithm, and the literal list that declares them.

:data:`ALGORITHMS` is what the ``marl_offline_bench.algorithms`` entry point of this package
names (see ``pyproject.toml``): one :class:`~marl_offline_bench.AlgorithmSpec` per
``marl-bench evaluate --algo`` name, saying which class serves each action kind. Nothing is
imported until a name is built, so ``import baselines`` stays light. Adding an algorithm is
one file and one line here.

Files: ``<algo>.py`` for an algorithm with one action kind, or whose two kinds share their
config, tables and losses (BC, CFCQL); ``<algo>_discrete.py`` and ``<algo>_continuous.py`` where
the two kinds are separate learners (MACQL, MAICQ, OMAR).
"""
from __future__ import annotations

from marl_offline_bench import AlgorithmSpec

ALGORITHMS: list[AlgorithmSpec] = [
    AlgorithmSpec("bc", "BC", discrete="baselines.bc:BCDiscrete",
                  continuous="baselines.bc:BCContinuous"),
    AlgorithmSpec("cfcql", "CFCQL", discrete="baselines.cfcql:CFCQLDiscrete",
                  continuous="baselines.cfcql:CFCQLContinuous"),
    AlgorithmSpec("macql", "MACQL", discrete="baselines.macql_discrete:MACQLDiscrete",
                  continuous="baselines.macql_continuous:MACQLContinuous"),
    AlgorithmSpec("maicq", "MAICQ", discrete="baselines.maicq_discrete:MAICQDiscrete",
                  continuous="baselines.maicq_continuous:MAICQContinuous"),
    AlgorithmSpec("omar", "OMAR", discrete="baselines.omar_discrete:OMARDiscrete",
                  continuous="baselines.omar_continuous:OMARContinuous"),
    AlgorithmSpec("madtkd", "MADTKD", discrete="baselines.madtkd:MADTKDDiscrete"),
    AlgorithmSpec("matd3-bc", "MATD3-BC", continuous="baselines.matd3bc:MATD3BC"),
    AlgorithmSpec("icql", "ICQL", continuous="baselines.icql:ICQL"),
    # Variants run by name only (never by `--algo all`): the ablations the leaderboard reports.
    AlgorithmSpec("cfcql_sign_plus", "CFCQL (sign +1)", discrete="baselines.cfcql:CFCQLDiscrete",
                  continuous="baselines.cfcql:CFCQLContinuous", settings={"sign": 1},
                  # under `full` continuous CFCQL runs lambda = 1/n; the sign needs the VAE
                  continuous_settings={"tau": 1.0}, ablation=True),
    AlgorithmSpec("cfcql_tau0", "CFCQL (tau 0)", discrete="baselines.cfcql:CFCQLDiscrete",
                  continuous="baselines.cfcql:CFCQLContinuous", settings={"tau": 0.0},
                  ablation=True),
    # lambda from the behaviour VAE with the paper's sign, at tau 1 (the code's --cf_tau)
    AlgorithmSpec("cfcql_vae", "CFCQL (VAE lambda)", continuous="baselines.cfcql:CFCQLContinuous",
                  settings={"tau": 1.0}, ablation=True),
    # the CQL term also samples around pi(o) and pi(o') on MPE (the code does on MaMuJoCo only)
    AlgorithmSpec("cfcql_policy_samples", "CFCQL (policy samples)",
                  continuous="baselines.cfcql:CFCQLContinuous",
                  settings={"policy_samples": True}, ablation=True),
    AlgorithmSpec("cfcql_alpha_half", "CFCQL (alpha / 2)",
                  discrete="baselines.cfcql:CFCQLDiscrete",
                  continuous="baselines.cfcql:CFCQLContinuous", scale={"alpha": 0.5},
                  ablation=True),
    AlgorithmSpec("cfcql_alpha_double", "CFCQL (alpha x 2)",
                  discrete="baselines.cfcql:CFCQLDiscrete",
                  continuous="baselines.cfcql:CFCQLContinuous", scale={"alpha": 2.0},
                  ablation=True),
]

__all__ = ["ALGORITHMS"]
