"""CFCQL training speed on this machine: updates per second, and what the batching buys.

Three learners are timed on the same synthetic data, each for full updates (sampling, forward,
backward, optimiser step):

* discrete, SMAC sizes (32 episodes x 60 steps, 5 agents, obs 80, 12 actions, state 120):
  CFCQL as shipped (mixer hypernetworks once per state, all counterfactuals in one product);
  CFCQL with the reference code's per-agent loop (one full mixer call per agent and action);
  plain QMIX (TD(lambda) loss only) on the same networks.
* continuous, MPE sizes (1024 transitions, 3 agents, obs 18, action 2, state 54):
  CFCQL as shipped (all n x 3M counterfactual joint actions through the critic in one call);
  CFCQL with a per-agent, per-source loop that re-runs the whole critic on repeated states;
  CFCQL with a loop over agents and sampled actions, one critic call of B rows each (the
  continuous counterpart of the discrete loop over agents and actions);
  the same update without the conservative term (TD loss and counterfactual actor only).
  All three CFCQL variants push the same B x n x 3M rows through the critic's hidden layers,
  which is where the time goes on a CPU; batching saves only the repeated state part of the
  first layer and Python overhead, so expect little speed-up here (a GPU is another matter).
  The behaviour density for lambda (a VAE with L importance samples) costs the same in both
  CFCQL variants and is timed on its own.

Run: ``python benchmarks/train_speed.py [--repeats 5] [--threads 2]``. Synthetic tensors stand in
for data: speed does not depend on the values.
"""
from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import numpy as np
import torch

from baselines.cfcql import (CFCQLContinuous, CFCQLDiscrete, counterfactual_actor_loss,
                             counterfactual_joint_q_reference, qmix_td_loss)
from marl_offline_bench.networks import (QMixer, build_agent_inputs, masked_argmax, soft_update,
                                td_lambda_targets)
from marl_offline_bench.dataset import EpisodeArrays, MARLDataset
from marl_offline_bench.envs import TaskInfo


# -- synthetic datasets ---------------------------------------------------------------------------
def synthetic_dataset(info: TaskInfo, episodes: int, length: int, seed: int = 0) -> MARLDataset:
    """Full-length episodes of random values with the task's shapes."""
    rng = np.random.default_rng(seed)
    n, steps = info.n_agents, episodes * length
    obs_rows = steps + episodes
    if info.discrete:
        avail = rng.random((obs_rows, n, info.n_actions)) > 0.3
        avail[..., 0] = True
        actions = np.zeros((steps, n), np.int64)                    # action 0 is always available
    else:
        avail = None
        actions = rng.uniform(-1, 1, (steps, n, info.action_dim)).astype(np.float32)
    arrays = EpisodeArrays(
        obs=rng.normal(size=(obs_rows, n, info.obs_dim)).astype(np.float32),
        states=rng.normal(size=(obs_rows, info.state_dim)).astype(np.float32),
        avail_actions=avail, actions=actions,
        rewards=rng.normal(size=steps).astype(np.float32),
        agent_rewards=np.zeros((steps, n), np.float32), terminals=np.zeros(steps, bool),
        timeouts=np.tile(np.arange(length) == length - 1, episodes), won=None,
        episode_starts=np.arange(0, steps + 1, length).astype(np.int64),
        seeds=np.zeros(episodes, np.int64))
    return MARLDataset(arrays, f"{info.task_id}-synthetic-v0", info.task_id, {}, info.obs_mask,
                       info.action_mask)


def task(task_id: str, n: int, obs_dim: int, state_dim: int, n_actions: int = 0,
         action_dim: int = 0, limit: int = 60) -> TaskInfo:
    return TaskInfo(task_id=task_id, agent_ids=tuple(f"agent_{i}" for i in range(n)),
                    obs_dims=(obs_dim,) * n, state_dim=state_dim, discrete=n_actions > 0,
                    n_actions=n_actions, action_dims=(action_dim,) * n if action_dim else (),
                    episode_limit=limit)


# -- the reference code's way, as subclasses -------------------------------------------------
class LoopCFCQLDiscrete(CFCQLDiscrete):
    """CFCQL whose counterfactual Q re-runs the full mixer per agent and action (as the code)."""

    def counterfactual_q(self, qs, chosen_qs, actions, state, weights, avail):
        return counterfactual_joint_q_reference(self.mixer, qs, actions, state, avail)


class LoopCFCQLContinuous(CFCQLContinuous):
    """CFCQL whose counterfactual Q runs the whole critic once per agent and sample source."""

    def counterfactual_q(self, features, state, actions, samples):
        batch_size, n, n_samples, d = samples.shape
        per_source = self.config.num_sampled_actions
        rows = []
        for i in range(n):
            blocks = []
            for start in range(0, n_samples, per_source):
                joint = actions.unsqueeze(1).repeat(1, per_source, 1, 1)           # (B, M, n, d)
                joint[:, :, i] = samples[:, i, start:start + per_source]
                states = state.unsqueeze(1).expand(-1, per_source, -1)
                q = self.critic(states.reshape(batch_size * per_source, -1),
                                joint.reshape(batch_size * per_source, n * d))
                blocks.append(q.reshape(2, batch_size, per_source))
            rows.append(torch.cat(blocks, dim=-1))
        return torch.stack(rows, dim=2)


class SampleLoopCFCQLContinuous(CFCQLContinuous):
    """CFCQL whose counterfactual Q runs the whole critic once per agent and sampled action,
    the continuous counterpart of the discrete loop over agents and actions."""

    def counterfactual_q(self, features, state, actions, samples):
        batch_size, n, n_samples, d = samples.shape
        rows = []
        for i in range(n):
            columns = []
            for k in range(n_samples):
                joint = actions.clone()                                            # (B, n, d)
                joint[:, i] = samples[:, i, k]
                columns.append(self.critic(state, joint.reshape(batch_size, n * d)))  # (2, B)
            rows.append(torch.stack(columns, dim=-1))
        return torch.stack(rows, dim=2)


# -- the plain updates CFCQL is compared with ------------------------------------------------
def qmix_update(algo: CFCQLDiscrete) -> None:
    """One plain QMIX update (TD(lambda), double Q) with the learner's networks and optimiser."""
    cfg = algo.config
    batch = algo.sampler.sample()
    state, actions, mask = batch["states"], batch["actions"].long(), batch["mask"]
    inputs = build_agent_inputs(batch["obs"], actions, algo.info.n_actions)
    agent_qs = algo.agent.unroll(inputs)
    with torch.no_grad():
        target_qs = algo.target_agent.unroll(inputs)
        greedy = masked_argmax(agent_qs.detach(), batch["avail_actions"])
        greedy_qs = target_qs.gather(-1, greedy.unsqueeze(-1)).squeeze(-1)
        next_values = algo.target_mixer(greedy_qs, state)
        targets = td_lambda_targets(batch["rewards"], batch["terminals"], mask, next_values,
                                    cfg.gamma, cfg.td_lambda)
    chosen = agent_qs[:, :-1].gather(-1, actions.unsqueeze(-1)).squeeze(-1)
    loss = qmix_td_loss(algo.mixer(chosen, state[:, :-1]), targets, mask)
    algo.optimiser.zero_grad()
    loss.backward()
    torch.nn.utils.clip_grad_norm_(algo.params, cfg.grad_clip)
    algo.optimiser.step()


def td_only_update(algo: CFCQLContinuous) -> None:
    """The continuous update without the conservative term (and so without lambda)."""
    cfg = algo.config
    batch = algo.sampler.sample()
    state, actions = batch["states"], batch["actions"]
    with torch.no_grad():
        next_q = algo.target_critic(batch["next_states"],
                                    algo._target_actions(batch["next_observations"]).flatten(1))
        targets = batch["rewards"] + cfg.gamma * (1 - batch["terminals"]) * next_q.min(0).values
    td_loss = ((algo.critic(state, actions.flatten(1)) - targets) ** 2).mean(-1).sum()
    algo.critic_optimiser.zero_grad()
    td_loss.backward()
    torch.nn.utils.clip_grad_norm_(algo.critic.parameters(), cfg.grad_clip)
    algo.critic_optimiser.step()
    if algo.updates % cfg.critic_updates_per_round == 0:
        policy_actions = algo.actors(batch["observations"])
        actor_loss = counterfactual_actor_loss(algo.critic, state, policy_actions, actions,
                                               algo.action_mask, cfg.action_reg).sum()
        algo.actor_optimiser.zero_grad()
        actor_loss.backward()
        algo.actor_optimiser.step()
    if algo.updates % cfg.critic_updates_per_round == cfg.critic_updates_per_round - 1:
        soft_update(algo.target_critic, algo.critic, cfg.target_rate)
        soft_update(algo.target_actors, algo.actors, cfg.target_rate)
    algo.updates += 1


# -- timing ---------------------------------------------------------------------------------------
def seconds_per_call(steps: dict[str, Callable[[], object]], repeats: int, warmup: int = 1,
                     reduce: Callable[[list[float]], float] = statistics.median
                     ) -> dict[str, float]:
    """Wall time per call of each step, ``reduce`` (median) over ``repeats`` timed calls.

    The steps take turns, one call each per turn, so that load from other processes on a shared
    machine falls on all of them alike.
    """
    for step in steps.values():
        for _ in range(warmup):
            step()
    times: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(repeats):
        for name, step in steps.items():
            start = time.perf_counter()
            step()
            times[name].append(time.perf_counter() - start)
    return {name: reduce(values) for name, values in times.items()}


def row(label: str, seconds: float) -> str:
    return f"  {label} {seconds:7.3f} s/update  {1 / seconds:6.2f} updates/s"


def check_same_values() -> None:
    """The batched and looped counterfactual Q agree (else the timing compares different things)."""
    torch.manual_seed(0)
    mixer = QMixer(5, 120)
    qs, state = torch.randn(2, 7, 5, 12), torch.randn(2, 7, 120)
    actions = torch.randint(0, 12, (2, 7, 5))
    chosen = qs.gather(-1, actions.unsqueeze(-1)).squeeze(-1)
    from baselines.cfcql import counterfactual_joint_q
    fast = counterfactual_joint_q(qs, chosen, mixer.hyper(state))
    slow = counterfactual_joint_q_reference(mixer, qs, actions, state)
    torch.testing.assert_close(fast, slow, rtol=1e-5, atol=1e-5)


def check_same_continuous(batched: CFCQLContinuous, *loops: CFCQLContinuous) -> None:
    """Every continuous variant gives the same counterfactual Q with the same critic."""
    torch.manual_seed(0)
    n, d = batched.info.n_agents, batched.info.action_dim
    state, actions = torch.randn(5, batched.info.state_dim), torch.rand(5, n, d) * 2 - 1
    samples = torch.rand(5, n, 3 * batched.config.num_sampled_actions, d) * 2 - 1
    with torch.no_grad():
        fast = batched.counterfactual_q(batched.critic.state_features(state), state, actions,
                                        samples)
        for loop in loops:
            loop.critic.load_state_dict(batched.critic.state_dict())
            slow = loop.counterfactual_q(loop.critic.state_features(state), state, actions,
                                         samples)
            torch.testing.assert_close(fast, slow, rtol=1e-5, atol=1e-5)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=5, help="timed updates per learner")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--vae-hidden", type=int, default=750,
                        help="hidden width of the behaviour VAE (the code's 750 by default)")
    parser.add_argument("--vae-samples", type=int, default=20,
                        help="importance samples L per log-density estimate (the code's 20)")
    parser.add_argument("--skip-continuous", action="store_true")
    parser.add_argument("--skip-discrete", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    check_same_values()
    print(f"torch {torch.__version__}, {args.threads} threads; learners take turns, one update "
          f"each per turn\n")

    if not args.skip_discrete:
        info = task("smac-synthetic", n=5, obs_dim=80, state_dim=120, n_actions=12, limit=60)
        data = synthetic_dataset(info, episodes=64, length=60)
        small = dict(batch_size=32, bc_steps=0)
        batched = CFCQLDiscrete(info, data, CFCQLDiscrete.Config(**small))
        looped = LoopCFCQLDiscrete(info, data, LoopCFCQLDiscrete.Config(**small))
        qmix = CFCQLDiscrete(info, data, CFCQLDiscrete.Config(**small))
        t = seconds_per_call({"batched": batched.update, "looped": looped.update,
                              "qmix": lambda: qmix_update(qmix)}, args.repeats)
        t_batched, t_looped, t_qmix = t["batched"], t["looped"], t["qmix"]
        print("discrete, SMAC sizes: 32 episodes x 60 steps, 5 agents, obs 80, 12 actions, "
              f"state 120; median of {args.repeats} updates")
        print(row("CFCQL, batched counterfactuals   ", t_batched))
        print(row("CFCQL, per-agent loop (ref. code)", t_looped))
        print(row("plain QMIX                       ", t_qmix))
        print(f"  speed-up of batching: {t_looped / t_batched:.2f}x;  CFCQL cost over QMIX: "
              f"{t_batched / t_qmix:.2f}x\n")

    if not args.skip_continuous:
        info = task("mpe-synthetic", n=3, obs_dim=18, state_dim=54, action_dim=2, limit=25)
        data = synthetic_dataset(info, episodes=400, length=25)
        settings = dict(batch_size=1024, vae_steps=0, vae_hidden_dim=args.vae_hidden,
                        vae_samples=args.vae_samples)
        batched = CFCQLContinuous(info, data, CFCQLContinuous.Config(**settings))
        looped = LoopCFCQLContinuous(info, data, LoopCFCQLContinuous.Config(**settings))
        sampled = SampleLoopCFCQLContinuous(info, data,
                                            SampleLoopCFCQLContinuous.Config(**settings))
        plain = CFCQLContinuous(info, data, CFCQLContinuous.Config(**settings))
        check_same_continuous(batched, looped, sampled)
        # mean over whole rounds (1 critic+actor update, then 4 critic-only updates)
        per_round = batched.config.critic_updates_per_round
        timed = per_round * max(1, round(args.repeats / per_round))
        t = seconds_per_call({"batched": batched.update, "looped": looped.update,
                              "sampled": sampled.update, "plain": lambda: td_only_update(plain)},
                             timed, 1, statistics.mean)
        t_batched, t_looped, t_plain = t["batched"], t["looped"], t["plain"]
        t_sampled = t["sampled"]
        cfg = batched.config
        state = torch.randn(1024, 54)
        with torch.no_grad():
            acts = batched.actors(torch.randn(1024, 3, 18))
            t_lambda = seconds_per_call(
                {"lambda": lambda: batched.vae.log_prob(state, acts, cfg.vae_samples)}, 3)["lambda"]
        print("continuous, MPE sizes: 1024 transitions, 3 agents, obs 18, action 2, state 54; "
              f"M = {cfg.num_sampled_actions} x 3 sources; mean over {timed} updates")
        print(row("CFCQL, batched counterfactuals   ", t_batched))
        print(row("CFCQL, loop over agents x sources", t_looped))
        print(row("CFCQL, loop over agents x samples", t_sampled))
        print(row("without the CQL term (TD + actor)", t_plain))
        print(f"  of which lambda (VAE hidden {cfg.vae_hidden_dim}, L = {cfg.vae_samples}): "
              f"{t_lambda:.3f} s per update, in both CFCQL variants")
        excl_b, excl_l = t_batched - t_lambda, t_looped - t_lambda
        excl_s = t_sampled - t_lambda
        print(f"  speed-up of batching over the agent x sample loop: {t_sampled / t_batched:.2f}x "
              f"whole update, {excl_s / excl_b:.2f}x without lambda")
        print(f"  speed-up of batching over the agent x source loop: {t_looped / t_batched:.2f}x "
              f"whole update, {excl_l / excl_b:.2f}x without lambda;  CFCQL cost over TD-only: "
              f"{t_batched / t_plain:.2f}x ({excl_b / t_plain:.2f}x without lambda)")


if __name__ == "__main__":
    main()
