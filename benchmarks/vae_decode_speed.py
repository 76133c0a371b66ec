"""What decoding a few states at a time buys in the behaviour VAE's estimate of log beta_i.

CFCQL's VAE lambda (``cfcql_vae``, ``cfcql_sign_plus``) estimates log beta_i(pi_i(o_i) | s) at
every critic update from L = 20 latent draws for each of 1,024 states: 20,480 rows through the
decoder's two 750-unit hidden layers, 61 MB per layer in float32, most of a World run's time.
``VAEBehaviour.log_prob`` sends the draws through the decoder ``states_per_chunk`` states at a
time, so that each layer's rows stay in the core's cache between the product that writes them
and the one that reads them. This script measures in one run, one thread, on the paper's VAE
for a registered task's shapes (the weights' values do not change the cost):

* seconds per estimate with the whole batch at once and with chunks of 256 down to 8 states,
  each timed in turns with the others, and each one's speed-up over the whole batch;
* the largest |log beta (chunked) - log beta (whole batch)| with the same latent draws, which
  is rounding only: the rows are the same products, in other blocks.

    python benchmarks/vae_decode_speed.py [--dataset mpe-world-expert-v0] [--repeats 7]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from baselines.behaviour import STATES_PER_CHUNK, VAEBehaviour
from marl_offline_bench.envs import task_info
from marl_offline_bench.registry import get_dataset

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import seconds_per_call  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="mpe-world-expert-v0",
                        help="a registered dataset whose task gives the shapes")
    parser.add_argument("--batch", type=int, default=1024)
    parser.add_argument("--samples", type=int, default=20, help="L, latent draws per state")
    parser.add_argument("--repeats", type=int, default=7, help="timed calls per chunk size")
    args = parser.parse_args()
    torch.set_num_threads(1)      # as every sweep worker runs
    torch.manual_seed(0)

    info = task_info(get_dataset(args.dataset).task_id)
    vae = VAEBehaviour(info.state_dim, info.action_mask)
    state = torch.randn(args.batch, info.state_dim)
    actions = (torch.rand(args.batch, *info.action_mask.shape) * 2 - 1) * vae.action_mask

    def estimate(states_per_chunk: int) -> torch.Tensor:
        torch.manual_seed(1)      # the same draws of z for every chunk size
        with torch.no_grad():
            return vae.log_prob(state, actions, args.samples, states_per_chunk=states_per_chunk)

    sizes = [args.batch] + [n for n in (256, 128, 64, 32, 16, 8) if n < args.batch]
    seconds = seconds_per_call({n: lambda n=n: estimate(n) for n in sizes}, args.repeats)
    whole = estimate(args.batch)
    print(f"{args.dataset}: state {info.state_dim}, {info.n_agents} agents x action "
          f"{info.action_dim}, VAE hidden 750, latent {vae.latent_dim}; batch {args.batch:,}, "
          f"L = {args.samples}; median of {args.repeats} calls, one thread\n")
    print(f"{'states per chunk':>16} {'s per estimate':>15} {'speed-up':>9} {'max |diff|':>11}")
    for n in sizes:
        label = f"{n} (whole)" if n == args.batch else str(n)
        label += " *" if n == STATES_PER_CHUNK else ""
        diff = (estimate(n) - whole).abs().max().item()
        print(f"{label:>16} {seconds[n]:>15.3f} {seconds[args.batch] / seconds[n]:>8.2f}x "
              f"{diff:>11.1e}")
    print(f"\n* the suite's setting (baselines.behaviour.STATES_PER_CHUNK = {STATES_PER_CHUNK})")


if __name__ == "__main__":
    main()
