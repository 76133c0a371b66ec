"""The QMIX backbone: TD(lambda) loss by hand, double Q, the step and the target copy."""
from __future__ import annotations

import torch

from baselines.qmix_backbone import QMIX_CHECKPOINT, QMIXBackbone, double_q_values, qmix_td_loss
from marl_offline_bench.networks import QMixer, RNNAgent, td_lambda_targets


def test_td_lambda_target_matches_hand_computation():
    gamma, lam = 0.5, 0.5
    rewards = torch.tensor([[1.0, 2.0, 3.0], [1.0, 2.0, 3.0], [1.0, 2.0, 0.0]])
    terminals = torch.tensor([[False, False, False], [False, False, True],
                              [False, False, False]])
    mask = torch.tensor([[True, True, True], [True, True, True], [True, True, False]])
    values = torch.tensor([[0.0, 10.0, 20.0, 30.0]] * 3)            # (B, T+1) target Q_tot
    # Row 0, truncated at T=3: G2 = 3 + .5*30 = 18; G1 = 2 + .5*(.5*20 + .5*18) = 11.5;
    #   G0 = 1 + .5*(.5*10 + .5*11.5) = 6.375.
    # Row 1, terminal at t=2: G2 = 3; G1 = 2 + .5*(.5*20 + .5*3) = 7.75; G0 = 1 + .5*(5 + 3.875).
    # Row 2, two real steps: G1 = 2 + .5*20 = 12 (bootstraps from its last observation);
    #   G0 = 1 + .5*(.5*10 + .5*12) = 6.5; the padded step's target is 0.
    expected = torch.tensor([[6.375, 11.5, 18.0], [5.4375, 7.75, 3.0], [6.5, 12.0, 0.0]])
    chosen = torch.zeros(3, 3)
    targets = td_lambda_targets(rewards, terminals, mask, values, gamma, lam)
    loss = qmix_td_loss(chosen, targets, mask)
    torch.testing.assert_close(targets, expected)
    hand_loss = 0.5 * (expected[mask] ** 2).mean()
    torch.testing.assert_close(loss, hand_loss)


def test_double_q_uses_online_argmax_over_available_actions():
    q = torch.tensor([[[[1.0, 5.0, 9.0]]]])              # online prefers action 2 ...
    target_q = torch.tensor([[[[10.0, 20.0, 30.0]]]])
    avail = torch.tensor([[[[True, True, False]]]])       # ... which is unavailable
    assert double_q_values(q, target_q, avail).item() == 20.0
    assert double_q_values(q, target_q, None).item() == 30.0


def test_step_moves_the_online_networks_and_the_copy_reaches_the_targets():
    torch.manual_seed(0)
    backbone = QMIXBackbone(RNNAgent(6, 3, 8), QMixer(2, 4, 8, 8), lr=1e-2, grad_clip=10.0,
                            gamma=0.99, td_lambda=0.6)
    assert list(backbone.state_dict()) == list(QMIX_CHECKPOINT)
    inputs, state = torch.randn(2, 4, 2, 6), torch.randn(2, 4, 4)           # (B, T+1, n, in)
    rewards, terminals = torch.randn(2, 3), torch.zeros(2, 3, dtype=torch.bool)
    mask = torch.ones(2, 3, dtype=torch.bool)
    agent_qs = backbone.agent.unroll(inputs)                                 # (B, T+1, n, A)
    targets = backbone.td_targets(inputs, agent_qs, None, state, rewards, terminals, mask)
    assert targets.shape == (2, 3) and not targets.requires_grad
    q_tot = backbone.mixer(agent_qs[:, :-1].max(-1).values, state[:, :-1])
    grad_norm = backbone.step(qmix_td_loss(q_tot, targets, mask))
    assert grad_norm > 0
    before = [p.clone() for p in backbone.target_agent.parameters()]
    assert not all(torch.equal(a, b) for a, b in zip(before, backbone.agent.parameters()))
    backbone.update_targets()
    assert all(torch.equal(a, b) for a, b in zip(backbone.target_agent.parameters(),
                                                 backbone.agent.parameters()))
    assert all(torch.equal(a, b) for a, b in zip(backbone.target_mixer.parameters(),
                                                 backbone.mixer.parameters()))
