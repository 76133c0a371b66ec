"""The fit store: a stored or resumed behaviour fit ends exactly where fitting it again would."""
import pytest
import torch

from baselines.behaviour import VAEBehaviour
from marl_offline_bench import fits, no_progress

STEPS = 40


class Interrupted(Exception):
    pass


def _stopping_after(k: int):
    """A progress hook that cuts the fit off after ``k`` steps, as a kill would."""
    def progress(steps, what):
        for i, step in enumerate(steps):
            if i == k:
                raise Interrupted
            yield step
    return progress


def _fit(info, data, progress=no_progress):
    torch.manual_seed(3)
    vae = VAEBehaviour(info.state_dim, info.action_mask, hidden_dim=16)
    loss = vae.fit(data, steps=STEPS, batch_size=32, lr=1e-3, seed=5, progress=progress)
    return vae, loss, torch.get_rng_state()


def _same(a, b):
    (vae_a, loss_a, rng_a), (vae_b, loss_b, rng_b) = a, b
    weights_a, weights_b = vae_a.state_dict(), vae_b.state_dict()
    return (loss_a == loss_b and torch.equal(rng_a, rng_b)
            and all(torch.equal(weights_a[k], weights_b[k]) for k in weights_a))


@pytest.fixture
def stored_data(tiny_continuous, tmp_path, monkeypatch):
    monkeypatch.setenv(fits.FIT_STORE_ENV, str(tmp_path / "fits"))
    info, data = tiny_continuous(action_dims=(1, 2))
    data.card["sha256"] = "0" * 64          # as a dataset read from disk carries
    return info, data, tmp_path / "fits"


def test_a_stored_fit_is_loaded_and_ends_as_a_fresh_fit(stored_data, monkeypatch):
    info, data, folder = stored_data
    monkeypatch.setenv(fits.FIT_STORE_ENV, "off")
    fresh = _fit(info, data)
    assert not folder.exists()
    monkeypatch.setenv(fits.FIT_STORE_ENV, str(folder))
    first = _fit(info, data)
    [done] = folder.iterdir()
    assert done.name.endswith(".pt") and ".partial" not in done.name
    assert "optimiser" not in torch.load(done, weights_only=True)   # nothing resumes it
    loaded = _fit(info, data, progress=_stopping_after(0))   # would raise on any step it ran
    assert _same(fresh, first) and _same(fresh, loaded)


def test_an_interrupted_fit_resumes_where_it_stopped(stored_data, monkeypatch):
    info, data, folder = stored_data
    monkeypatch.setattr(fits, "SAVE_EVERY_S", 0.0)           # save after every step
    with pytest.raises(Interrupted):
        _fit(info, data, progress=_stopping_after(STEPS // 2))
    [partial] = [p for p in folder.iterdir() if p.name.endswith(".partial.pt")]
    assert "optimiser" in torch.load(partial, weights_only=True)    # Adam's moments go on
    resumed_steps = []

    def counting(steps, what):
        for step in steps:
            resumed_steps.append(step)
            yield step
    resumed = _fit(info, data, progress=counting)
    assert resumed_steps == list(range(STEPS // 2, STEPS))
    monkeypatch.setenv(fits.FIT_STORE_ENV, "off")
    assert _same(resumed, _fit(info, data))
    assert not [p for p in folder.iterdir() if p.name.endswith(".partial.pt")]


def test_another_start_names_another_fit(stored_data):
    info, data, folder = stored_data
    _fit(info, data)
    torch.manual_seed(4)                                      # other initial weights
    VAEBehaviour(info.state_dim, info.action_mask, hidden_dim=16).fit(data, STEPS, 32, 1e-3, 5)
    data.card["sha256"] = "1" * 64                            # other data
    _fit(info, data)
    torch.manual_seed(3)                                      # other settings
    VAEBehaviour(info.state_dim, info.action_mask, hidden_dim=16).fit(data, STEPS, 32, 1e-3, 6)
    assert len(list(folder.iterdir())) == 4


def test_data_without_a_checksum_are_never_stored(tiny_continuous, tmp_path, monkeypatch):
    monkeypatch.setenv(fits.FIT_STORE_ENV, str(tmp_path / "fits"))
    info, data = tiny_continuous(action_dims=(1, 2))
    _fit(info, data)
    assert not (tmp_path / "fits").exists()
