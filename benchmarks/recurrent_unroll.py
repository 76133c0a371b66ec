"""Can the recurrent learners' GRU unroll run faster on this CPU? Three ways, timed in one run.

The discrete learners (CFCQL, MACQL, MAICQ, MADTKD, BC on PyMARL's agent) spend most of an
update unrolling a GRU cell over each episode, forward and backward: per step a few small
matrix products and a dozen element-wise kernels, so per-operator overhead rules
(``train_speed.py --profile``). The agent's two linear layers already run on all steps at once
(``RNNAgent.unroll``); only the recurrence needs a time loop. Timed here, forward + backward of
that recurrence at the ``full`` batch (128 episodes) and SMAC/Equal_Line sizes:

* ``loop``: the shipped Python loop of ``nn.GRUCell`` (one autograd node per operator and step);
* ``aten::gru``: the whole sequence as one ``torch.gru`` call (the same weights and gates: it
  gives identical values), which loops in C++;
* ``3 seeds``: three seeds' cells stacked into one batched recurrence (weights (S, H, 3H),
  ``baddbmm`` per step), as an ensemble of runs trained in one process would be; its time is
  divided by 3, i.e. per seed;
* ``compiled``: the loop under ``torch.compile`` (inductor's C++ kernels), with ``--compile``;
  its compilation time is printed apart.

Each variant is timed after a warm-up, several times, and the median kept; ``speed-up`` is the
loop's time over the variant's, measured in the same run, so a loaded machine affects all alike.

Run: ``python benchmarks/recurrent_unroll.py [--threads 1] [--repeats 5] [--compile]``.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch import nn


def loop_unroll(cell: nn.GRUCell, x: torch.Tensor) -> torch.Tensor:
    """x (T, R, H) -> hidden states (T, R, H), as ``RNNAgent.unroll`` runs them."""
    h = x.new_zeros(x.shape[1], cell.hidden_size)
    hiddens = []
    for x_t in x.unbind(0):
        h = cell(x_t, h)
        hiddens.append(h)
    return torch.stack(hiddens)


def aten_unroll(cell: nn.GRUCell, x: torch.Tensor) -> torch.Tensor:
    """The same recurrence as one ``aten::gru`` call on the cell's own weights."""
    h0 = x.new_zeros(1, x.shape[1], cell.hidden_size)
    params = [cell.weight_ih, cell.weight_hh, cell.bias_ih, cell.bias_hh]
    out, _ = torch.gru(x, h0, params, True, 1, 0.0, True, False, False)
    return out


def stacked_unroll(cells: list[nn.GRUCell], x: torch.Tensor) -> torch.Tensor:
    """S seeds' GRU cells as one batched recurrence: x (S, T, R, H) -> (S, T, R, H)."""
    w_ih = torch.stack([c.weight_ih.t() for c in cells])            # (S, H, 3H)
    w_hh = torch.stack([c.weight_hh.t() for c in cells])
    b_ih = torch.stack([c.bias_ih for c in cells]).unsqueeze(1)     # (S, 1, 3H)
    b_hh = torch.stack([c.bias_hh for c in cells]).unsqueeze(1)
    seeds, steps, rows, width = x.shape
    gates_x = torch.baddbmm(b_ih, x.reshape(seeds, steps * rows, width), w_ih)
    h = x.new_zeros(seeds, rows, w_hh.shape[1])
    hiddens = []
    for g_x in gates_x.reshape(seeds, steps, rows, -1).unbind(1):
        g_h = torch.baddbmm(b_hh, h, w_hh)
        x_r, x_z, x_n = g_x.chunk(3, -1)
        h_r, h_z, h_n = g_h.chunk(3, -1)
        r, z = torch.sigmoid(x_r + h_r), torch.sigmoid(x_z + h_z)
        n = torch.tanh(x_n + r * h_n)
        h = n + z * (h - n)                                         # nn.GRUCell's update
        hiddens.append(h)
    return torch.stack(hiddens, 1)


def seconds_per_update(unroll, cell: nn.GRUCell, x: torch.Tensor, repeats: int) -> float:
    """Median seconds of one forward + backward through ``unroll``."""
    def once() -> float:
        start = time.perf_counter()
        unroll(cell, x).square().mean().backward()
        return time.perf_counter() - start

    once()
    return statistics.median(once() for _ in range(repeats))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--compile", action="store_true",
                        help="also time the loop under torch.compile (minutes to compile)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    # (name, episodes, steps, agents, hidden): the full batch of 128 episodes
    shapes = [("equal_line-n4 (50 steps)", 128, 50, 4, 64),
              ("smac-2s3z (60 steps)", 128, 60, 5, 64)]
    print(f"GRU unroll, forward + backward, {args.threads} thread(s), median of {args.repeats}")
    for name, episodes, steps, agents, hidden in shapes:
        cell = nn.GRUCell(hidden, hidden)
        x = torch.randn(steps, episodes * agents, hidden, requires_grad=True)
        assert torch.allclose(loop_unroll(cell, x), aten_unroll(cell, x), atol=1e-5)
        variants = {"loop": loop_unroll, "aten::gru": aten_unroll}
        if args.compile:
            compiled = torch.compile(loop_unroll)
            start = time.perf_counter()
            compiled(cell, x).square().mean().backward()
            print(f"  {name}: torch.compile took {time.perf_counter() - start:.0f} s")
            variants["compiled"] = compiled
        timed = {k: seconds_per_update(f, cell, x, args.repeats) for k, f in variants.items()}
        cells = [cell] + [nn.GRUCell(hidden, hidden) for _ in range(2)]
        xs = torch.randn(3, steps, episodes * agents, hidden, requires_grad=True)
        assert torch.allclose(stacked_unroll(cells, xs)[0], loop_unroll(cell, xs[0]), atol=1e-5)
        timed["3 seeds"] = seconds_per_update(stacked_unroll, cells, xs, args.repeats) / 3
        for variant, seconds in timed.items():
            print(f"  {name:26s} {variant:10s} {seconds * 1e3:8.1f} ms   "
                  f"speed-up {timed['loop'] / seconds:4.2f}x")


if __name__ == "__main__":
    main()
