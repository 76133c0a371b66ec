"""A run's record: what one (algorithm, dataset, seed) run was and what it scored.

:class:`RunRecord` is written by the training loop (:mod:`marl_offline_bench.training`), carried
back by either executor, stored as JSON by :mod:`marl_offline_bench.runstore` and read by the
leaderboard. Its JSON keys are its field names; records written before a field existed read
with that field's default, so every published record stays valid.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

__all__ = ["RECORD_FORMAT", "RunRecord", "iter_records"]

RECORD_FORMAT = 1


@dataclass
class RunRecord:
    """One run, as recorded.

    Attributes:
        status: ``running`` while it trains, then ``done`` or ``failed`` (a non-finite update).
        algo, dataset_id, task_id, family, seed: what ran.
        protocol, budget: under which protocol and budget (updates, evaluations).
        budget_source: where the budget comes from (the reference code's lines under ``full``).
        config: the algorithm's resolved config.
        dataset_sha256: the SHA-256 of the data file it trained on (None: not recorded).
        device, commit, versions: where and with what code it ran.
        resumed_from: the update it resumed from, if it was interrupted.
        curve: the learning curve, one evaluation per point (``step``, returns, score, the
            mean training metrics since the previous point under ``train``).
        final: the final evaluation (its score is the run's score), None when failed.
        failure: the update and reason of a failed run.
        wall_time_s: training and evaluation time, summed over resumed segments.
        eval_time_s: the part of ``wall_time_s`` spent evaluating (None: not recorded).
        prepare_time_s: the part of ``wall_time_s`` spent in one-off fits before the first update
            (a behaviour model, a teacher); near 0 where the fit store held the fit already
            (:mod:`marl_offline_bench.fits`). None: not recorded.
        finished: when it ended (local time, ISO 8601).
    """

    algo: str
    dataset_id: str
    task_id: str
    family: str
    seed: int
    protocol: str
    budget: dict[str, Any]
    config: dict[str, Any] = field(default_factory=dict)
    status: str = "running"
    format: int = RECORD_FORMAT
    budget_source: str | None = None
    dataset_sha256: str | None = None
    device: str = "cpu"
    commit: str | None = None
    versions: dict[str, str] = field(default_factory=dict)
    resumed_from: int | None = None
    curve: list[dict[str, Any]] = field(default_factory=list)
    final: dict[str, Any] | None = None
    failure: dict[str, Any] | None = None
    wall_time_s: float | None = None
    eval_time_s: float | None = None
    prepare_time_s: float | None = None
    finished: str | None = None

    @property
    def final_score(self) -> float | None:
        """The final evaluation's normalised score, or its mean return where the task has no
        references; None when the run failed."""
        final = self.final or {}
        score = final.get("normalized_score")
        return final.get("mean_return") if score is None else score

    def to_json(self) -> dict[str, Any]:
        """The record as JSON: its fields, leaving out the optional ones it does not have."""
        optional = {"budget_source", "dataset_sha256", "failure", "eval_time_s",
                    "prepare_time_s"}
        return {k: v for k, v in dataclasses.asdict(self).items()
                if not (k in optional and v is None)}

    @classmethod
    def from_json(cls, payload: dict[str, Any]) -> "RunRecord":
        """A record from its JSON (unknown keys are ignored, missing optional ones default).

        Raises:
            ValueError: the payload is not a record (the message names the missing keys).
        """
        if not isinstance(payload, dict):
            raise ValueError(f"a run record is a JSON object, got {type(payload).__name__}")
        names = {f.name for f in dataclasses.fields(cls)}
        required = {f.name for f in dataclasses.fields(cls)
                    if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING}
        missing = sorted(required - set(payload))
        if missing:
            raise ValueError(f"not a run record: it lacks {', '.join(missing)}")
        return cls(**{k: v for k, v in payload.items() if k in names})


def iter_records(out: Path) -> Iterator[tuple[Path, RunRecord]]:
    """Every readable record under ``out/runs`` (unreadable files are skipped)."""
    for path in sorted(Path(out).glob("runs/*/*/*/seed*.json")):
        try:
            yield path, RunRecord.from_json(json.loads(path.read_text()))
        except (OSError, ValueError):
            continue
