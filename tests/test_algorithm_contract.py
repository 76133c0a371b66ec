"""What every registered algorithm owes the pipeline, on each action kind it declares.

Parametrised over the registry: an algorithm added to it (one file and one line) is checked here
with no test edit. Sizes come from the ``smoke`` protocol, data from small synthetic datasets.
"""
import numpy as np
import pytest
import torch

from marl_offline_bench import Unsupported, algorithm_registry, build_algorithm
from marl_offline_bench.runstore import checkpoint_from_bytes, checkpoint_to_bytes
from marl_offline_bench.training import _rng_state, _set_rng_state
from tests.baselines.test_cfcql import (continuous_dataset, continuous_task, discrete_dataset,
                                        discrete_task)

PAIRS = [(name, discrete) for name, spec in sorted(algorithm_registry().items())
         for discrete in (True, False) if spec.supports(discrete)]
REFUSED = [(name, discrete) for name, spec in sorted(algorithm_registry().items())
           for discrete in (True, False) if not spec.supports(discrete)]


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _data(discrete: bool):
    if discrete:
        info = discrete_task()
        return info, discrete_dataset(info, unavailable=(1, 4))
    info = continuous_task()
    return info, continuous_dataset(info)


def _build(name: str, discrete: bool, seed: int = 0):
    info, data = _data(discrete)
    return info, build_algorithm(name, info, data, protocol="smoke", seed=seed)


@pytest.mark.parametrize("name, discrete", PAIRS,
                         ids=[f"{n}-{'discrete' if d else 'continuous'}" for n, d in PAIRS])
def test_smoke_checkpoint_and_resume(name, discrete):
    info, algo = _build(name, discrete)
    for _ in range(3):
        metrics = algo.update()
    assert metrics and all(np.isfinite(float(v)) for v in metrics.values())
    # the greedy policy acts on a batch of observations, within the action space
    policy = algo.policy()
    if hasattr(policy, "reset"):
        policy.reset(5)
    obs = np.random.default_rng(0).normal(size=(5, info.n_agents, info.obs_dim)).astype(np.float32)
    avail = np.ones((5, info.n_agents, info.n_actions), bool) if discrete else None
    actions = np.asarray(policy(obs, avail))
    if discrete:
        assert actions.shape == (5, info.n_agents) and (actions < info.n_actions).all()
    else:
        assert actions.shape == (5, info.n_agents, info.action_dim)
        assert np.abs(actions).max() <= 1.0
    # a checkpoint survives the runs' own torch.save / torch.load(weights_only=True) ...
    state = checkpoint_from_bytes(
        checkpoint_to_bytes({"algorithm": algo.state_dict(), "rng": _rng_state()}), name)
    # ... and a fresh learner resumed from it makes the same next update as the original
    expected = algo.update()
    _, twin = _build(name, discrete, seed=1)
    twin.load_state_dict(state["algorithm"])
    _set_rng_state(state["rng"])
    resumed = twin.update()
    assert resumed.keys() == expected.keys()
    for key in expected:
        assert resumed[key] == pytest.approx(expected[key], rel=1e-5, abs=1e-6), key


@pytest.mark.parametrize("name, discrete", PAIRS,
                         ids=[f"{n}-{'discrete' if d else 'continuous'}" for n, d in PAIRS])
def test_prepare_does_its_one_off_fits_once(name, discrete):
    _, algo = _build(name, discrete)
    shown = []

    def progress(steps, what):
        for step in steps:
            shown.append(what)
            yield step

    algo.prepare(progress)
    fitted = list(shown)
    algo.prepare(progress)
    algo.update()  # update() prepares too, and finds nothing left to do
    assert shown == fitted


@pytest.mark.parametrize("name, discrete", REFUSED,
                         ids=[f"{n}-{'discrete' if d else 'continuous'}" for n, d in REFUSED])
def test_unsupported_pairings_are_refused_before_any_work(name, discrete, monkeypatch):
    spec = algorithm_registry()[name]
    info, data = _data(discrete)
    # no class is even imported for the missing kind: the refusal comes from the spec alone
    monkeypatch.setattr(type(spec), "algorithm_class", lambda *a: pytest.fail("built anyway"))
    with pytest.raises(Unsupported, match=name):
        build_algorithm(name, info, data, protocol="smoke")
