"""The CPU benchmark on a tiny batch: every depthwise conv shape of the default model, both forms equal."""

from __future__ import annotations

import time

import torch

from nalaformer.bench import cpu as bench_cpu
from nalaformer.layers import DepthwiseConv2d


def test_conv_rows_modes_and_training_rates():
    model, x, y = bench_cpu.build_model(batch=2, img_size=32)
    shapes = bench_cpu.conv_shapes(model, x)
    assert (256, 1, 1, 5) in shapes and (128, 2, 2, 3) in shapes and (32, 8, 8, 3) in shapes
    rows = bench_cpu.bench_convs(model, x[:1], time.perf_counter, repeats=1)
    assert len(rows) == len(shapes) and all(r["rel_diff"] < 1e-5 for r in rows)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    bench_cpu.set_mode(model, "blocks")
    kinds = {name: type(m) for name, m in bench_cpu.depthwise_modules(model)}
    assert all((t is torch.nn.Conv2d) == ("lepe" in n) for n, t in kinds.items())
    bench_cpu.set_mode(model, "all")
    assert all(type(m) is DepthwiseConv2d for _, m in bench_cpu.depthwise_modules(model))
    assert model.state_dict().keys() == before.keys()
    rates = bench_cpu.bench_training(model, x, y, time.perf_counter, rounds=1, steps=1)
    assert set(rates) == set(bench_cpu.MODES) and min(rates.values()) > 0
