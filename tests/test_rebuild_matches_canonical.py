"""Behaviour agents choose the same actions on any CPU, so rebuilds match the canonical bytes.

The shipped QMIX agents acted in float32; torch's vectorised CPU kernels (AVX2, AVX-512) round
the GRU's activations differently from its scalar ones, and on equal_line-n4-expert-v0 that
flipped one greedy choice (episode 3612, step 38). Collection now decides in float64 with the
lowest index winning ties.
"""
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from collection.qmix import EpsilonGreedyPolicy, build_agent
from marl_offline_bench.envs import task_info
from marl_offline_bench.registry import recorded_statistics


def _constant_agent(info, value=1.0):
    agent = build_agent(info, 8)
    with torch.no_grad():
        agent.fc2.weight.zero_()
        agent.fc2.bias.fill_(value)
    return agent


def test_ties_go_to_the_lowest_available_index():
    info = task_info("equal_line-n4")
    policy = EpsilonGreedyPolicy(_constant_agent(info), info.n_agents, info.n_actions, 0.0,
                                 float64=True)
    obs = np.zeros((3, info.n_agents, info.obs_dim), np.float32)
    avail = np.ones((3, info.n_agents, info.n_actions), bool)
    avail[1, :, :4] = False
    avail[2, :, ::2] = False
    actions = policy(obs, avail)
    np.testing.assert_array_equal(actions, [[0] * 4, [4] * 4, [1] * 4])


def test_float64_choice_agrees_with_float32_away_from_ties():
    info = task_info("equal_line-n4")
    torch.manual_seed(0)
    agent = build_agent(info, 16)
    rng = np.random.default_rng(0)
    p32 = EpsilonGreedyPolicy(agent, info.n_agents, info.n_actions, 0.0)
    p64 = EpsilonGreedyPolicy(agent, info.n_agents, info.n_actions, 0.0, float64=True)
    for _ in range(10):
        obs = rng.random((32, info.n_agents, info.obs_dim)).astype(np.float32)
        np.testing.assert_array_equal(p32(obs, None), p64(obs, None))
    assert next(agent.parameters()).dtype == torch.float32, "the live agent is left as it was"


_BUILD = """
import json, sys
from marl_offline_bench.collect import collect_dataset
path = collect_dataset("equal_line-n4-expert-v0", show_progress=False)
print(json.loads((path / "data" / "metadata.json").read_text())["marl_bench"]["sha256"])
"""


@pytest.mark.parametrize("capability", ["default", "native"])
def test_equal_line_expert_rebuild_is_the_canonical_one(tmp_path, capability):
    env = {**os.environ, "MINARI_DATASETS_PATH": str(tmp_path)}
    if capability != "native":
        env["ATEN_CPU_CAPABILITY"] = capability
    out = subprocess.run([sys.executable, "-c", _BUILD], env=env, capture_output=True,
                         text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    canonical = recorded_statistics("equal_line-n4-expert-v0")["sha256"]
    assert out.stdout.strip().splitlines()[-1] == canonical
