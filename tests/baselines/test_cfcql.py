"""Tests of baselines/cfcql.py and the shared parts it uses (networks, behaviour, greedy)."""

import numpy as np
import pytest
import torch

from marl_offline_bench import build_algorithm
from baselines.cfcql import (CONTINUOUS_PER_DATASET, DISCRETE_PER_DATASET, CFCQLContinuous,
                             CFCQLDiscrete, cfcql_continuous_penalty, cfcql_discrete_penalty,
                             counterfactual_actor_loss, counterfactual_joint_actions,
                             counterfactual_joint_q, counterfactual_joint_q_reference,
                             counterfactual_lambda, lambda_entropy,
                             native_bfloat16, policy_behaviour_kl)
from marl_offline_bench.policies import RecurrentGreedyPolicy
from marl_offline_bench.networks import (AgentActors, QMixer, RNNAgent, TwinCritic, UNAVAILABLE_Q,
                                build_agent_inputs, clip_grad_norm_agentwise_, td_lambda_targets)
from marl_offline_bench.dataset import EpisodeArrays, MARLDataset
from marl_offline_bench.envs import TaskInfo
from marl_offline_bench.registry import DATASETS


# -- small datasets built by hand ----------------------------------------------------------------
def discrete_task(n_agents=2, n_actions=5, obs_dim=3, state_dim=4, limit=6) -> TaskInfo:
    return TaskInfo(task_id="test-discrete", agent_ids=tuple(f"a{i}" for i in range(n_agents)),
                    obs_dims=(obs_dim,) * n_agents, state_dim=state_dim, discrete=True,
                    n_actions=n_actions, action_dims=(), episode_limit=limit)


def discrete_dataset(info: TaskInfo, lengths=(6, 4, 6, 3, 5, 6), fixed_actions=None,
                     unavailable=None, seed=0) -> MARLDataset:
    """Episodes of the given lengths; actions uniform over available ones, or fixed per agent.

    ``unavailable`` = (agent, action) that is never available.
    """
    rng = np.random.default_rng(seed)
    n, a = info.n_agents, info.n_actions
    lengths = np.asarray(lengths)
    steps, episodes = int(lengths.sum()), len(lengths)
    avail = np.ones((steps + episodes, n, a), bool)
    if unavailable is not None:
        avail[:, unavailable[0], unavailable[1]] = False
    if fixed_actions is None:
        actions = rng.integers(0, a, (steps, n))
        if unavailable is not None:
            actions[:, unavailable[0]] %= unavailable[1] if unavailable[1] else 1
    else:
        actions = np.tile(np.asarray(fixed_actions), (steps, 1))
    starts = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    terminals = np.zeros(steps, bool)
    terminals[starts[1:3] - 1] = True              # two episodes end for real, the rest time out
    arrays = EpisodeArrays(
        obs=rng.normal(size=(steps + episodes, n, info.obs_dim)).astype(np.float32),
        states=rng.normal(size=(steps + episodes, info.state_dim)).astype(np.float32),
        avail_actions=avail, actions=actions.astype(np.int64),
        rewards=rng.normal(scale=0.1, size=steps).astype(np.float32),
        agent_rewards=np.zeros((steps, n), np.float32), terminals=terminals,
        timeouts=~terminals & np.isin(np.arange(steps), starts[1:] - 1), won=None,
        episode_starts=starts, seeds=np.zeros(episodes, np.int64))
    return MARLDataset(arrays, "test-discrete-v0", info.task_id, {}, info.obs_mask, None)


def continuous_task(action_dims=(3, 2), obs_dim=4, state_dim=6) -> TaskInfo:
    n = len(action_dims)
    return TaskInfo(task_id="test-continuous", agent_ids=tuple(f"a{i}" for i in range(n)),
                    obs_dims=(obs_dim,) * n, state_dim=state_dim, discrete=False, n_actions=0,
                    action_dims=tuple(action_dims), episode_limit=10)


def continuous_dataset(info: TaskInfo, episodes=20, length=10, fixed_action=None, seed=0):
    rng = np.random.default_rng(seed)
    n, d = info.n_agents, info.action_dim
    steps = episodes * length
    if fixed_action is None:
        actions = rng.uniform(-1, 1, (steps, n, d))
    else:
        actions = np.full((steps, n, d), fixed_action)
    actions = (actions * info.action_mask).astype(np.float32)
    arrays = EpisodeArrays(
        obs=rng.normal(size=(steps + episodes, n, info.obs_dim)).astype(np.float32),
        states=rng.normal(size=(steps + episodes, info.state_dim)).astype(np.float32),
        avail_actions=None, actions=actions,
        rewards=rng.normal(scale=0.1, size=steps).astype(np.float32),
        agent_rewards=np.zeros((steps, n), np.float32), terminals=np.zeros(steps, bool),
        timeouts=np.tile(np.arange(length) == length - 1, episodes), won=None,
        episode_starts=np.arange(0, steps + 1, length).astype(np.int64),
        seeds=np.zeros(episodes, np.int64))
    return MARLDataset(arrays, "test-continuous-v0", info.task_id, {}, info.obs_mask,
                       info.action_mask)


TINY_DISCRETE = dict(batch_size=4, bc_steps=30, bc_batch_size=4, hidden_dim=16)
TINY_CONTINUOUS = dict(batch_size=32, hidden_dim=16, vae_steps=20, vae_hidden_dim=16,
                       vae_batch_size=32, vae_samples=4, num_sampled_actions=4)


# -- lambda ---------------------------------------------------------------------------------------
def test_lambda_sums_to_one_and_follows_sign():
    kl = torch.tensor([[0.1, 0.5, 2.0], [3.0, 0.0, 1.0]])
    for sign in (-1, 1):
        lam = counterfactual_lambda(kl, tau=2.0, sign=sign)
        torch.testing.assert_close(lam.sum(-1), torch.ones(2))
        order = lam.argsort(-1)
        expected = kl.argsort(-1, descending=(sign == -1))
        assert torch.equal(order, expected), f"sign={sign}: weights not ordered by {sign} * KL"
    # sign -1 puts the least weight on the agent furthest from the data
    assert counterfactual_lambda(kl, 2.0, -1)[0].argmin() == 2
    assert counterfactual_lambda(kl, 2.0, +1)[0].argmax() == 2


def test_lambda_is_uniform_at_tau_zero_and_one_hot_at_large_tau():
    kl = torch.rand(7, 5) * 3
    torch.testing.assert_close(counterfactual_lambda(kl, 0.0, -1), torch.full((7, 5), 0.2))
    lam = counterfactual_lambda(kl, 1e4, -1)
    torch.testing.assert_close(lam, torch.nn.functional.one_hot(kl.argmin(-1), 5).float())
    torch.testing.assert_close(lambda_entropy(lam), torch.zeros(7), atol=1e-5, rtol=0)
    assert not counterfactual_lambda(kl.requires_grad_(), 1.0, -1).requires_grad


# -- discrete counterfactual mixing ---------------------------------------------------------------
def _random_mixing_problem(batch=(3, 4), n=4, a=6, state_dim=7, seed=0):
    g = torch.Generator().manual_seed(seed)
    mixer = QMixer(n, state_dim)
    qs = torch.randn(*batch, n, a, generator=g)
    actions = torch.randint(0, a, (*batch, n), generator=g)
    state = torch.randn(*batch, state_dim, generator=g)
    avail = torch.rand(*batch, n, a, generator=g) > 0.3
    avail.scatter_(-1, actions.unsqueeze(-1), True)           # dataset actions are available
    return mixer, qs, actions, state, avail


def test_batched_counterfactual_q_matches_per_agent_loop():
    mixer, qs, actions, state, avail = _random_mixing_problem()
    chosen = qs.gather(-1, actions.unsqueeze(-1)).squeeze(-1)
    batched = counterfactual_joint_q(qs, chosen, mixer.hyper(state), avail)
    looped = counterfactual_joint_q_reference(mixer, qs, actions, state, avail)
    torch.testing.assert_close(batched, looped, rtol=1e-5, atol=1e-5)
    # Only agent i's action moves: at j = a_D_i every row gives back Q_tot of the data.
    q_data = mixer(chosen, state)
    at_data = batched.gather(-1, actions.unsqueeze(-1)).squeeze(-1)
    torch.testing.assert_close(at_data, q_data.unsqueeze(-1).expand_as(at_data))
    # Changing another agent's Q of a non-data action leaves agent i's row unchanged.
    bumped = qs.clone()
    other = (actions[..., 1] + 1) % qs.shape[-1]
    bumped[..., 1, :].scatter_add_(-1, other.unsqueeze(-1), torch.full_like(chosen[..., :1], 5.0))
    again = counterfactual_joint_q(bumped, chosen, mixer.hyper(state), avail)
    rows = [0, 2, 3]
    torch.testing.assert_close(again[..., rows, :], batched[..., rows, :])


def test_unavailable_actions_never_enter_the_logsumexp():
    mixer, qs, actions, state, avail = _random_mixing_problem(seed=1)
    qs.requires_grad_(True)
    chosen = qs.gather(-1, actions.unsqueeze(-1)).squeeze(-1)
    weights = mixer.hyper(state)
    cf_q = counterfactual_joint_q(qs, chosen, weights, avail)
    assert (cf_q[~avail] == UNAVAILABLE_Q).all()
    lam = torch.full(actions.shape, 1 / actions.shape[-1])
    mask = torch.ones(actions.shape[:-1], dtype=torch.bool)
    penalty = cfcql_discrete_penalty(cf_q, lam, mixer(chosen, state), mask)
    penalty.backward()
    assert (qs.grad[~avail] == 0).all() and (qs.grad[avail] != 0).any()
    # Huge Q-values on unavailable actions change nothing.
    with torch.no_grad():
        huge = qs.detach().masked_fill(~avail, 1e6)
        cf_huge = counterfactual_joint_q(huge, chosen, weights, avail)
        again = cfcql_discrete_penalty(cf_huge, lam, mixer(chosen, state), mask)
    torch.testing.assert_close(again, penalty.detach())
    # ...and the KL to beta ignores them too.
    log_beta = torch.log_softmax(torch.randn_like(cf_q).masked_fill(~avail, -1e10), -1)
    torch.testing.assert_close(policy_behaviour_kl(cf_huge, log_beta, avail),
                               policy_behaviour_kl(cf_q.detach(), log_beta, avail))


def test_td_lambda_targets():
    rewards = torch.tensor([[1.0, 2.0, 3.0], [1.0, 1.0, 0.0]])
    terminals = torch.tensor([[False, False, True], [False, False, False]])
    mask = torch.tensor([[True, True, True], [True, True, False]])    # 2nd: truncated after 2
    values = torch.tensor([[10.0, 20.0, 30.0, 40.0], [5.0, 6.0, 7.0, 999.0]])
    g = 0.9
    one_step = td_lambda_targets(rewards, terminals, mask, values, g, 0.0)
    torch.testing.assert_close(one_step, torch.tensor([[1 + g * 20, 2 + g * 30, 3.0],
                                                       [1 + g * 6, 1 + g * 7, 0.0]]))
    monte_carlo = td_lambda_targets(rewards, terminals, mask, values, g, 1.0)
    torch.testing.assert_close(monte_carlo, torch.tensor(
        [[1 + g * 2 + g * g * 3, 2 + g * 3, 3.0], [1 + g * (1 + g * 7), 1 + g * 7, 0.0]]))


# -- continuous counterfactuals -------------------------------------------------------------------
def test_counterfactual_joint_actions_replace_one_agent():
    data = torch.randn(5, 3, 2)
    sampled = torch.randn(5, 3, 4, 2)
    joint = counterfactual_joint_actions(data, sampled).reshape(5, 3, 4, 3, 2)
    for i in range(3):
        for k in range(3):
            expected = sampled[:, i] if k == i else data[:, None, k].expand(-1, 4, -1)
            torch.testing.assert_close(joint[:, i, :, k], expected)


def test_counterfactual_actor_loss_sends_gradient_to_its_own_actor_only():
    info = continuous_task()
    actors = AgentActors(info.obs_dim, info.action_mask, hidden_dim=8)
    critic = TwinCritic(info.state_dim, info.n_agents * info.action_dim, hidden_dim=8)
    obs, state = torch.randn(16, 2, info.obs_dim), torch.randn(16, info.state_dim)
    data = torch.rand(16, 2, info.action_dim) * torch.as_tensor(info.action_mask)
    mask = torch.as_tensor(info.action_mask, dtype=torch.float32)
    for i in range(info.n_agents):
        actors.zero_grad()
        losses = counterfactual_actor_loss(critic, state, actors(obs), data, mask, 1e-3)
        losses[i].backward()
        for p in actors.parameters():
            assert p.grad[i].abs().sum() > 0
            assert (p.grad[1 - i] == 0).all(), "agent i's loss moved another agent's actor"
    # The non-counterfactual joint loss Q(s, pi_1, pi_2) would reach both actors.
    actors.zero_grad()
    critic(state, actors(obs).flatten(1))[0].mean().backward()
    assert all((p.grad[k] != 0).any() for p in actors.parameters() for k in range(2))


def test_agentwise_clip_is_per_agent():
    actors = AgentActors(3, np.ones((2, 2), bool), hidden_dim=4)
    for p in actors.parameters():
        p.grad = torch.ones_like(p)
        p.grad[1] *= 1e-4
    norms = clip_grad_norm_agentwise_(actors, 0.5)
    after = torch.stack([sum(p.grad[k].pow(2).sum() for p in actors.parameters()) for k in (0, 1)])
    torch.testing.assert_close(after.sqrt()[0], torch.tensor(0.5), rtol=1e-4, atol=0)
    torch.testing.assert_close(after.sqrt()[1], norms[1])   # small one untouched


def test_continuous_penalty_uses_lambda_and_density():
    cf_q = torch.zeros(2, 3, 2, 4)
    log_density = torch.zeros(3, 2, 4)
    lam = torch.tensor([[1.0, 0.0]]).expand(3, 2)
    q_data = torch.zeros(2, 3)
    base = cfcql_continuous_penalty(cf_q, log_density, lam, q_data)
    torch.testing.assert_close(base, torch.tensor(2 * np.log(4), dtype=torch.float32))
    cf_q2 = cf_q.clone()
    cf_q2[:, :, 1] = 100.0                                    # agent 1 has lambda 0
    torch.testing.assert_close(cfcql_continuous_penalty(cf_q2, log_density, lam, q_data), base)
    # a sample from a denser proposal counts less
    assert cfcql_continuous_penalty(cf_q, log_density + 1.0, lam, q_data) < base


# -- training on small fixed datasets -------------------------------------------------------------
def test_discrete_cql_pushes_unseen_actions_below_dataset_actions():
    info = discrete_task()
    data = discrete_dataset(info, fixed_actions=(1, 3), unavailable=(1, 4))
    algo = CFCQLDiscrete(info, data, CFCQLDiscrete.Config(alpha=2.0, tau=1.0, **TINY_DISCRETE))
    for _ in range(250):
        metrics = algo.update()
    assert np.isfinite(list(metrics.values())).all()
    batch = next(data.sampler(6, kind="episodes", seed=3))
    with torch.no_grad():
        inputs = build_agent_inputs(batch.observations, batch.actions, info.n_actions)
        qs = algo.qmix.agent.unroll(inputs)[:, :-1]
        actions = batch.actions
        chosen = qs.gather(-1, actions.unsqueeze(-1)).squeeze(-1)
        avail = batch.avail_actions[:, :-1]
        weights = algo.qmix.mixer.hyper(batch.states[:, :-1])
        cf_q = counterfactual_joint_q(qs, chosen, weights, avail)
    real = batch.mask
    at_data = cf_q.gather(-1, actions.unsqueeze(-1))
    others = cf_q.scatter(-1, actions.unsqueeze(-1), UNAVAILABLE_Q)
    margin = (at_data.squeeze(-1) - others.max(-1).values)[real]     # (steps, n)
    assert (margin > 0).all(), f"an unseen action beats the data: min margin {margin.min():.3f}"


def test_continuous_cql_pushes_unseen_actions_below_dataset_actions():
    info = continuous_task()
    data = continuous_dataset(info, fixed_action=0.5)
    algo = CFCQLContinuous(info, data, CFCQLContinuous.Config(alpha=1.0, **TINY_CONTINUOUS))
    for _ in range(150):
        metrics = algo.update()
    assert np.isfinite(list(metrics.values())).all()
    batch = next(algo.sampler)
    state, actions = batch.states, batch.actions
    mask = torch.as_tensor(info.action_mask, dtype=torch.float32)
    sampled = (torch.rand(32, 2, 16, info.action_dim) * 2 - 1) * mask[:, None]
    with torch.no_grad():
        q_data = algo.critic(state, actions.flatten(1))                       # (2, B)
        joint = counterfactual_joint_actions(actions, sampled).reshape(32, 32, -1)
        q_unseen = algo.critic.from_features(algo.critic.state_features(state), joint)
    gap = q_data.mean() - q_unseen.mean()
    assert gap > 0.2, f"unseen actions are not pushed down: gap {gap:.3f}"


# -- end to end -----------------------------------------------------------------------------------
def test_discrete_smoke_on_equal_line(round_trip, monkeypatch, tmp_path):
    import marl_offline_bench as mob
    from marl_offline_bench.envs import task_info

    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path))
    mob.collect_dataset("equal_line-n2-random-v0", episodes=8, show_progress=False)
    data = mob.load("equal_line-n2-random-v0", build=False)
    info = task_info("equal_line-n2")
    algo = build_algorithm("cfcql", info, data, **TINY_DISCRETE)
    assert isinstance(algo, CFCQLDiscrete) and algo.config.alpha == 50.0
    for _ in range(3):
        metrics = algo.update()
    assert {"td_loss", "cql_loss", "lambda_entropy"} <= set(metrics)
    state = round_trip(algo.state_dict())
    twin = build_algorithm("cfcql", info, data, **TINY_DISCRETE)
    twin.load_state_dict(state)
    assert twin.behaviour_ready and twin.updates == 3
    resumed = twin.update()
    torch.set_rng_state(state["torch_rng"])
    assert resumed == algo.update()
    result = mob.evaluate_policy(algo.policy(), "equal_line-n2", episodes=2)
    assert np.isfinite(result.mean_return)


def test_cached_behaviour_log_probs_match_the_network():
    info = discrete_task()
    data = discrete_dataset(info, unavailable=(1, 4))
    algo = CFCQLDiscrete(info, data, CFCQLDiscrete.Config(**TINY_DISCRETE))
    algo.update()
    batch = next(algo.sampler)
    inputs = build_agent_inputs(batch.observations, batch.actions, info.n_actions)[:, :-1]
    with torch.no_grad():
        direct = algo.behaviour.log_probs(inputs, batch.avail_actions[:, :-1])
    real = batch.mask
    torch.testing.assert_close(batch.extras["log_beta"][real], direct[real])
    assert torch.isfinite(batch.extras["log_beta"]).all()


def test_prepare_shows_the_behaviour_fit_and_its_table():
    info = discrete_task()
    algo = CFCQLDiscrete(info, discrete_dataset(info), CFCQLDiscrete.Config(**TINY_DISCRETE))
    shown = []
    algo.prepare(lambda steps, what: (shown.append(what) or step for step in steps))
    assert shown.count("behaviour model") == algo.config.bc_steps
    assert shown.count("behaviour log-probabilities") >= 1  # chunks of 64 episodes
    assert algo.behaviour_ready and "log_beta" in algo.sampler.extras


def test_greedy_policy_respects_available_actions():
    agent = RNNAgent(3 + 5 + 2, 5, 8)
    policy = RecurrentGreedyPolicy(agent, 2, 5)
    policy.reset(4)
    rng = np.random.default_rng(0)
    for _ in range(5):
        avail = rng.random((4, 2, 5)) > 0.5
        avail[..., 0] = True
        actions = policy(rng.normal(size=(4, 2, 3)).astype(np.float32), avail)
        assert actions.shape == (4, 2)
        assert np.take_along_axis(avail, actions[..., None], -1).all()


def test_continuous_smoke_with_ragged_actions_and_cf_target(round_trip):
    info = continuous_task(action_dims=(3, 2))
    data = continuous_dataset(info)
    algo = CFCQLContinuous(info, data, CFCQLContinuous.Config(cf_target=True, **TINY_CONTINUOUS))
    for _ in range(5):
        metrics = algo.update()
    assert "actor_loss" not in metrics and np.isfinite(list(metrics.values())).all()
    assert "actor_loss" in algo.update()                      # the 6th starts a new round
    state = round_trip(algo.state_dict())
    twin = CFCQLContinuous(info, data, CFCQLContinuous.Config(cf_target=True, **TINY_CONTINUOUS))
    twin.load_state_dict(state)
    resumed = twin.update()
    torch.set_rng_state(state["torch_rng"])
    assert resumed == algo.update()
    actions = algo.policy()(np.zeros((3, 2, info.obs_dim), np.float32), None)
    assert actions.shape == (3, 2, 3) and (actions[:, 1, 2] == 0).all()
    assert (np.abs(actions) <= 1).all()


def test_agentwise_batch_norm_is_each_agents_batchnorm1d():
    from marl_offline_bench.networks import AgentwiseBatchNorm

    torch.manual_seed(0)
    x = torch.randn(7, 5, 3, 4) * 3 + 1                       # (..., n=3 agents, f=4)
    ours, reference = AgentwiseBatchNorm(3, 4), torch.nn.BatchNorm1d(12)
    assert torch.allclose(ours(x), reference(x.reshape(-1, 12)).reshape(x.shape), atol=1e-5)
    assert torch.allclose(ours.running_var.reshape(-1), reference.running_var, atol=1e-5)
    ours.eval(), reference.eval()
    assert torch.allclose(ours(x), reference(x.reshape(-1, 12)).reshape(x.shape), atol=1e-5)


def test_input_norm_and_mean_actor_loss_train_and_act_on_running_statistics(round_trip):
    info = continuous_task(action_dims=(3, 2))
    data = continuous_dataset(info)
    config = CFCQLContinuous.Config(input_norm=True, actor_loss_mean=True, **TINY_CONTINUOUS)
    algo = CFCQLContinuous(info, data, config)
    for _ in range(6):
        metrics = algo.update()
    assert np.isfinite(list(metrics.values())).all() and algo.actors.training
    obs = np.random.default_rng(0).normal(size=(4, 2, info.obs_dim)).astype(np.float32)
    policy = algo.policy()
    # eval mode inside the policy: one observation acts as it does among others
    assert np.allclose(policy(obs[:1], None), policy(obs, None)[:1], atol=1e-6)
    assert algo.actors.training                              # and training mode comes back
    twin = CFCQLContinuous(info, data, config)
    twin.load_state_dict(round_trip(algo.state_dict()))
    assert torch.equal(twin.actors.norm.running_mean, algo.actors.norm.running_mean)


def test_reward_agent_trains_the_critic_on_that_agents_reward():
    """The code's critic reads agent 0's reward; ``reward_agent`` chooses it over the team's."""
    info = continuous_task(action_dims=(3, 2))
    data = continuous_dataset(info)
    data.episodes_data.agent_rewards[:, 1] = 10.0           # the team reward is ~N(0, 0.1)
    targets = {}
    for reward_agent in (None, 1):
        torch.manual_seed(0)
        config = CFCQLContinuous.Config(reward_agent=reward_agent, **TINY_CONTINUOUS)
        targets[reward_agent] = CFCQLContinuous(info, data, config).update()["target_mean"]
    assert targets[1] - targets[None] == pytest.approx(10.0, abs=0.1)
    with pytest.raises(ValueError, match="reward_agent=2, but test-continuous has 2 agents"):
        CFCQLContinuous(info, data, CFCQLContinuous.Config(reward_agent=2, **TINY_CONTINUOUS))
    with pytest.raises(ValueError, match="reward_agent"):
        CFCQLContinuous.Config(reward_agent=-1)


def test_actor_partners_choose_the_other_agents_actions_in_the_actor_loss(monkeypatch):
    """Eq. 10 trains each actor against the data's partners; ``actor_partners="policy"`` against
    the other actors' current actions, which carry no gradient to them."""
    import baselines.cfcql as cfcql

    seen, real = {}, cfcql.counterfactual_actor_loss

    def spy(critic, state, policy_actions, partner_actions, *rest):
        seen.update(policy=policy_actions, partners=partner_actions)
        return real(critic, state, policy_actions, partner_actions, *rest)

    monkeypatch.setattr(cfcql, "counterfactual_actor_loss", spy)
    info = continuous_task(action_dims=(3, 2))
    data = continuous_dataset(info)
    for partners in ("data", "policy"):
        torch.manual_seed(0)
        config = CFCQLContinuous.Config(actor_partners=partners, **TINY_CONTINUOUS)
        CFCQLContinuous(info, data, config).update()
        the_actors = torch.equal(seen["partners"], seen["policy"].detach())
        assert the_actors == (partners == "policy") and not seen["partners"].requires_grad
    with pytest.raises(ValueError, match="actor_partners"):
        CFCQLContinuous.Config(actor_partners="actors")


# -- tables and dispatch --------------------------------------------------------------------------
def test_per_dataset_tables_name_registered_datasets():
    assert set(DISCRETE_PER_DATASET) <= set(DATASETS)
    assert set(CONTINUOUS_PER_DATASET) <= set(DATASETS)
    assert CFCQLDiscrete.config_for("smac-5m_vs_6m-expert-v0").tau == 100.0
    assert CFCQLDiscrete.config_for("smac-2s3z-medium-v0").alpha == 0.1
    assert CFCQLDiscrete.config_for("equal_line-n6-mixed-v0").alpha == 50.0
    cheetah = CFCQLContinuous.config_for("mamujoco-halfcheetah_2x3-expert-v0")
    assert (cheetah.alpha, cheetah.hidden_dim, cheetah.gamma) == (1.7, 256, 0.95)
    assert CFCQLContinuous.config_for("mpe-cn-medium-v0").alpha == 5.0
    assert CFCQLContinuous.config_for("mpe-world-mixed-v0").alpha == 1.0


def test_config_rejects_bad_values():
    with pytest.raises(ValueError, match="sign"):
        CFCQLDiscrete.Config(sign=0)
    with pytest.raises(ValueError, match="td_lambda"):
        CFCQLDiscrete.Config(td_lambda=1.5)
    with pytest.raises(ValueError):
        CFCQLContinuous.Config(num_sampled_actions=0)
    with pytest.raises(ValueError, match="vae_precision"):
        CFCQLContinuous.Config(vae_precision="float16")


def test_vae_precision_auto_resolves_to_what_the_device_multiplies_natively():
    """The recorded config names the precision a run used, never "auto"."""
    native = "bfloat16" if native_bfloat16("cpu") else "float32"
    assert CFCQLContinuous.Config().vae_precision == native
    assert CFCQLContinuous.Config(vae_precision="float32").vae_precision == "float32"


def test_full_continuous_cfcql_runs_lambda_one_over_n_without_a_vae(mpe_cn_tiny):
    """Under `full`, continuous CFCQL is the reference command: lambda = 1/n, no VAE fitted."""
    info, data = mpe_cn_tiny
    algo = build_algorithm("cfcql", info, data, protocol="full", batch_size=64)
    metrics = [algo.update() for _ in range(5)]
    assert not algo.behaviour_ready and "behaviour_loss" not in metrics[-1]
    assert metrics[-1]["lambda_max"] == pytest.approx(1 / info.n_agents)
    vae = build_algorithm("cfcql_vae", info, data, protocol="full", batch_size=64, vae_steps=5,
                         vae_hidden_dim=16, vae_samples=2)
    vae.update()
    assert vae.behaviour_ready and vae.config.tau == 1.0 and vae.config.sign == -1
