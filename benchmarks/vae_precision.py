"""What bfloat16 costs and buys in the behaviour VAE's estimate of log beta_i, CFCQL's lambda.

The VAE lambda (``cfcql_vae``, ``cfcql_sign_plus``) reads log beta_i(pi_i(o_i) | s) at every
critic update: L = 20 latent draws for each of 1,024 states through a decoder with a 750 x 750
hidden layer, about 0.35 s of one core per update in float32: most of a World run's time. With
the decoder's two hidden layers in bfloat16 (float32 accumulation; the output layer, the
densities and the fit stay float32), this script measures in one run, on a VAE fitted to a real
dataset:

* seconds per estimate (batch 1,024, L = 20) in float32 and in bfloat16, and their ratio;
* the error bfloat16 adds: |log beta (bf16) - log beta (fp32)| with the same latent draws;
* the estimator's own noise: the standard deviation of log beta over independent sets of L draws
  in float32, which every run already carries;
* the same two for lambda = softmax_i(-tau * -log beta_i) at the suite's tau = 1.

On the data's own actions and on saturated ones (each component pushed to +-1, where CFCQL's
actors sit on MPE). bfloat16 is worth it where its error is far below the noise, and the ratio is
above 1: on a CPU without native bfloat16 products (AVX512-BF16 or AMX) it is below 1.

    python benchmarks/vae_precision.py [--dataset mpe-world-medium-replay-v0] [--fit-steps 5000]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from baselines.behaviour import VAEBehaviour
from baselines.cfcql import counterfactual_lambda
from marl_offline_bench import load
from marl_offline_bench.envs import task_info

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import seconds_per_call  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="mpe-world-medium-replay-v0")
    parser.add_argument("--fit-steps", type=int, default=5000,
                        help="VAE updates before measuring (the suite's full runs fit 100,000)")
    parser.add_argument("--batch", type=int, default=1024)
    parser.add_argument("--samples", type=int, default=20, help="L, latent draws per estimate")
    parser.add_argument("--draw-sets", type=int, default=8,
                        help="independent sets of L draws for the estimator's noise")
    parser.add_argument("--repeats", type=int, default=5, help="timed calls per precision")
    args = parser.parse_args()
    torch.manual_seed(0)

    dataset = load(args.dataset)
    info = task_info(dataset.task_id)
    vae = VAEBehaviour(info.state_dim, info.action_mask)
    print(f"fitting the VAE on {args.dataset} for {args.fit_steps:,} updates ...", flush=True)
    loss = vae.fit(dataset, args.fit_steps)
    print(f"ELBO loss {loss:.4f}")

    batch = next(dataset.sampler(args.batch, kind="transitions", seed=1))
    state, data_actions = batch.states, batch.actions
    saturated = torch.where(data_actions >= 0, 1.0, -1.0) * vae.action_mask

    def estimate(actions, dtype, draws_seed):
        torch.manual_seed(draws_seed)
        with torch.no_grad():
            return vae.log_prob(state, actions, args.samples, hidden_dtype=dtype)

    seconds = seconds_per_call({dtype: lambda dtype=dtype: estimate(data_actions, dtype, 0)
                                for dtype in (torch.float32, torch.bfloat16)}, args.repeats)
    fp32, bf16 = seconds[torch.float32], seconds[torch.bfloat16]
    print(f"\none estimate, batch {args.batch:,}, L = {args.samples}, "
          f"{torch.get_num_threads()} thread(s): float32 {fp32:.3f} s, bfloat16 {bf16:.3f} s, "
          f"ratio {fp32 / bf16:.2f}x")

    print(f"\n{'actions':<10} {'quantity':<8} {'bf16 error mean':>16} {'max':>10} "
          f"{'draw noise (std) mean':>22} {'noise / error':>14}")
    for name, actions in (("data", data_actions), ("saturated", saturated)):
        exact = estimate(actions, torch.float32, 0)                              # (B, n)
        rounded = estimate(actions, torch.bfloat16, 0)
        draws = torch.stack([estimate(actions, torch.float32, 1 + k)
                             for k in range(args.draw_sets)])                    # (K, B, n)
        for quantity, transform in (("log beta", lambda x: x),
                                    ("lambda", lambda x: counterfactual_lambda(-x, 1.0, -1))):
            error = (transform(rounded) - transform(exact)).abs()
            noise = torch.stack([transform(d) for d in draws]).std(0)
            print(f"{name:<10} {quantity:<8} {error.mean():>16.2e} {error.max():>10.2e} "
                  f"{noise.mean():>22.2e} {noise.mean() / error.mean():>13.1f}x")


if __name__ == "__main__":
    main()
