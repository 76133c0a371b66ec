"""One-off fits kept on disk: a behaviour model fitted once serves every run that would fit it
the same way, and a fit cut off part-way resumes where it stopped.

A fit is named by everything that decides its result on this machine: the model's initial
weights, the torch random state it starts from, the data's checksum, its settings (steps, batch,
learning rate, seed, device), the torch and numpy versions, and the source of the code that runs
it (the model's module and the batch sampler's). Loading a stored fit therefore leaves the model
and the random state exactly as fitting it again would, so a run's result does not depend on
whether the store held it: ``cfcql_vae`` and ``cfcql_sign_plus`` differ only after the fit and
share one (an hour of one core on World at the paper's VAE size). Any change to those inputs,
an edited comment in the model's module included, names another fit.

::

    <store>/<what>-<key>.pt            the finished fit
    <store>/<what>-<key>.partial.pt    the fit so far, rewritten every few minutes while it runs

The store is ``~/.cache/marl-offline-bench/fits``, or the folder ``MARL_BENCH_FIT_STORE`` names;
``MARL_BENCH_FIT_STORE=off`` fits every time and keeps nothing. Data without a checksum (built
in memory) are never stored. Files are written atomically and read with ``weights_only=True``;
removing the folder only costs refitting.
"""
from __future__ import annotations

import hashlib
import inspect
import json
import os
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .runstore import FileCheckpoints

__all__ = ["FIT_STORE_ENV", "fit_store_folder", "StoredFit", "fit_by_adam"]

FIT_STORE_ENV = "MARL_BENCH_FIT_STORE"
#: How often a running fit rewrites its partial file.
SAVE_EVERY_S = 300.0


def fit_store_folder() -> Path | None:
    """The store's folder, or None where ``MARL_BENCH_FIT_STORE=off``."""
    configured = os.environ.get(FIT_STORE_ENV)
    if configured and configured.strip().lower() == "off":
        return None
    if configured:
        return Path(configured).expanduser()
    return Path.home() / ".cache" / "marl-offline-bench" / "fits"


def _random_state(device: torch.device) -> dict[str, torch.Tensor]:
    """torch's random state a fit on ``device`` draws from (the CPU's, and the GPU's on one)."""
    state = {"cpu": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_random_state(state: dict[str, torch.Tensor], device: torch.device) -> None:
    torch.set_rng_state(state["cpu"])
    if "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def _device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def _sources(*objects: Any) -> Iterator[bytes]:
    for obj in objects:
        yield inspect.getsource(inspect.getmodule(obj)).encode()


class StoredFit:
    """One fit's place in the store; :meth:`for_model` names it (or declines to)."""

    def __init__(self, folder: Path, what: str, key: str):
        stem = f"{what.replace(' ', '-')}-{key}"
        self.done = FileCheckpoints(Path(folder) / f"{stem}.pt")
        self.partial = FileCheckpoints(Path(folder) / f"{stem}.partial.pt")
        self._last_save = time.monotonic()

    @classmethod
    def for_model(cls, what: str, model: nn.Module, dataset_sha256: str | None,
                  settings: Mapping[str, Any], code: tuple[Any, ...] = ()) -> StoredFit | None:
        """The stored fit of ``model`` from its present weights and torch's present random
        state on the data ``dataset_sha256`` with ``settings``; ``code`` names further objects
        whose modules decide the fit (the model's own and this one always do). None where the
        store is off or the data have no checksum."""
        folder = fit_store_folder()
        if folder is None or not dataset_sha256:
            return None
        digest = hashlib.sha256()
        for part in (what.encode(), dataset_sha256.encode(),
                     json.dumps(dict(settings), sort_keys=True, default=str).encode(),
                     torch.__version__.encode(), np.__version__.encode(),
                     *_sources(type(model), StoredFit, *code),
                     *(t.cpu().numpy().tobytes() for t in _random_state(_device(model)).values())):
            digest.update(hashlib.sha256(part).digest())
        for name, tensor in model.state_dict().items():
            digest.update(name.encode())
            digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
        return cls(folder, what, digest.hexdigest()[:24])

    def load(self) -> dict[str, Any] | None:
        """The finished fit, else the partial one, else None."""
        return self.done.load() or self.partial.load()

    def save_due(self) -> bool:
        return time.monotonic() - self._last_save >= SAVE_EVERY_S

    def save(self, state: dict[str, Any], finished: bool) -> None:
        """Keep the fit so far; a finished one without its optimiser, which nothing resumes
        (two thirds of the file under Adam)."""
        if finished:
            state = {key: value for key, value in state.items() if key != "optimiser"}
        (self.done if finished else self.partial).save(state)
        self._last_save = time.monotonic()
        if finished:
            self.partial.path.unlink(missing_ok=True)

    def __str__(self) -> str:
        return str(self.done.path)


def fit_by_adam(model: nn.Module, loss_of: Callable[[Any], torch.Tensor], sampler: Any,
                steps: int, lr: float, progress: Callable, what: str,
                grad_clip: float | None = None, store: StoredFit | None = None) -> float:
    """Train ``model`` by Adam for ``steps`` batches of ``sampler``; returns the last loss.

    With a ``store``, a finished fit is loaded instead of run and a partial one resumes; either
    way the model, the sampler's generator and torch's random state end as an uninterrupted fit
    would leave them.
    """
    optimiser = torch.optim.Adam(model.parameters(), lr=lr)
    state = store.load() if store is not None else None
    start, loss, seconds = 0, torch.tensor(float("nan")), 0.0
    if state is not None:
        model.load_state_dict(state["model"])
        if "optimiser" in state:    # a partial fit: it resumes
            optimiser.load_state_dict(state["optimiser"])
        sampler.rng.bit_generator.state = state["sampler_rng"]
        _set_random_state(state["torch_rng"], _device(model))
        start, loss, seconds = int(state["step"]), torch.tensor(state["loss"]), state["seconds"]
    began = time.monotonic()

    def snapshot(step: int) -> dict[str, Any]:
        return {"model": model.state_dict(), "optimiser": optimiser.state_dict(),
                "sampler_rng": sampler.rng.bit_generator.state,
                "torch_rng": _random_state(_device(model)),
                "step": step, "loss": loss.item(), "seconds": seconds + time.monotonic() - began}

    for step in progress(range(start, steps), what):
        loss = loss_of(next(sampler))
        optimiser.zero_grad()
        loss.backward()
        if grad_clip is not None:
            nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        optimiser.step()
        if store is not None and step + 1 < steps and store.save_due():
            store.save(snapshot(step + 1), finished=False)
    if store is not None and start < steps:
        store.save(snapshot(steps), finished=True)
    return loss.item()
