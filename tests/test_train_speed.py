"""The FLOP and shape accounting of benchmarks/train_speed.py (its timings are not tested)."""
import importlib.util
import sys
from pathlib import Path

import pytest
import torch

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture(scope="module")
def train_speed():
    sys.path.insert(0, str(BENCHMARKS))
    try:
        spec = importlib.util.spec_from_file_location("train_speed", BENCHMARKS / "train_speed.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.path.remove(str(BENCHMARKS))


def test_products_are_recorded_by_shape_with_their_flops(train_speed):
    layer = torch.nn.Linear(8, 4)
    x = torch.randn(16, 8, requires_grad=True)
    with train_speed.MatmulShapes() as shapes:
        layer(x).sum().backward()                       # addmm forward; two mm backward
        torch.bmm(torch.randn(3, 5, 6), torch.randn(3, 6, 7))
    mm = train_speed.MatmulShape
    assert shapes.flops[mm("mm", 1, 16, 8, 4)] == 2 * 16 * 8 * 4
    assert shapes.flops[mm("bmm", 3, 5, 6, 7)] == 2 * 3 * 5 * 6 * 7
    # the backward products carry the forward's FLOPs twice over, as FlopCounterMode counts
    backward = sum(v for k, v in shapes.flops.items() if k.op == "mm") - 2 * 16 * 8 * 4
    assert backward == 2 * (2 * 16 * 8 * 4)


def test_the_matmul_bound_rate_weights_shapes_by_their_flops(train_speed, monkeypatch):
    mm = train_speed.MatmulShape
    fast, slow = mm("mm", 1, 64, 64, 64), mm("mm", 1, 8, 8, 8)
    monkeypatch.setattr(train_speed, "matmul_gflops", {fast: 100.0, slow: 10.0}.__getitem__)
    # 3 GFLOP at 100 and 1 GFLOP at 10: 0.13 s for 4 GFLOP, about 30.8 GFLOP/s
    rate, dominant, share = train_speed.matmul_bound_rate(
        train_speed.Counter({fast: 3e9, slow: 1e9}), coverage=1.0)
    assert rate == pytest.approx(4 / 0.13) and dominant == fast and share == 0.75
