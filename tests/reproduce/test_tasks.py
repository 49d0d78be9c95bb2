"""Each task's cell trains a tiny model and returns valid result rows."""

from __future__ import annotations

import json
import math

import pytest

from nalaformer.reproduce.tasks import TASKS

REQUIRED = ("task", "attention", "seed", "metric", "value", "size", "device", "params", "steps", "wall_s")


def _check_rows(rows, task, attention):
    assert rows
    for row in rows:
        assert all(k in row for k in REQUIRED if not (k == "steps" and task == "scenes_speed")), row
        assert row["task"] == task and row["attention"] == attention
        assert math.isfinite(row["value"])
        json.dumps(row)


@pytest.mark.parametrize("attention", ["nala", "softmax"])
def test_mqar_cell_grid(make_cell, one_thread, attention):
    rows = TASKS["mqar"](make_cell("mqar", attention))
    _check_rows(rows, "mqar", attention)
    # eval grid 32/64 x 2/16, minus the impossible (L=32, kv=16): 3 settings, accuracies in [0, 1]
    assert sorted((r["seq_len"], r["num_kv_pairs"]) for r in rows) == [(32, 2), (64, 2), (64, 16)]
    assert all(0 <= r["value"] <= 1 for r in rows)


def test_mqar_backbone_is_the_same_for_every_kind():
    """Every kind gets the settings' short conv (on q, k and v here); only attn_type differs."""
    from nalaformer.layers import KINDS
    from nalaformer.reproduce.tasks import _mqar_model

    from .conftest import TINY

    configs = {}
    for kind in KINDS:
        model = _mqar_model(TINY["mqar"], kind)
        for layer in model.model.layers:
            assert layer.self_attn.kind == kind and layer.self_attn.short_conv_on == "qkv"
            assert tuple(layer.self_attn.short_conv.weight.shape) == (3 * 16, 2)
        configs[kind] = {k: v for k, v in model.config.to_dict().items() if k not in ("attn_type", "layer_types")}
    assert all(c == configs["softmax"] for c in configs.values())


def test_fashion_mnist_cell_with_entropy(make_cell, one_thread):
    rows = TASKS["fashion_mnist"](make_cell("fashion_mnist", "relu_linear"))
    _check_rows([r for r in rows], "fashion_mnist", "relu_linear")
    metrics = {r["metric"] for r in rows}
    assert {"top1", "entropy_slope_vs_log_qnorm", "entropy_gap_to_softmax"} <= metrics
    top1 = next(r for r in rows if r["metric"] == "top1")
    assert 0 <= top1["value"] <= 1 and top1["eval_images"] == 64


def test_python_docs_bytes_cell(make_cell, one_thread):
    rows = TASKS["python_docs_bytes"](make_cell("python_docs_bytes", "nala"))
    _check_rows(rows, "python_docs_bytes", "nala")
    bpb = next(r for r in rows if r["metric"] == "bits_per_byte")
    assert 0 < bpb["value"] < 9  # an untrained byte model is ~8 bits per byte
    assert bpb["train_tokens"] == 2 * 2 * 32
    assert any(r["metric"] == "entropy_gap_to_softmax" for r in rows)


def test_fashion_scenes_cell_miou(make_cell, one_thread):
    rows = TASKS["fashion_scenes"](make_cell("fashion_scenes", "polarity"))
    _check_rows(rows, "fashion_scenes", "polarity")
    assert [r["metric"] for r in rows] == ["miou"] and 0 <= rows[0]["value"] <= 1


def test_scenes_speed_cell_times_every_size(make_cell, one_thread):
    rows = TASKS["scenes_speed"](make_cell("scenes_speed", "polarity"))
    _check_rows(rows, "scenes_speed", "polarity")
    speeds = {r["img_size"]: r["value"] for r in rows if r["metric"] == "forward_img_per_s"}
    assert set(speeds) == {32, 64} and all(v > 0 for v in speeds.values())
    assert all(r["repeats"] == 2 for r in rows)
    assert not any(r["metric"] == "forward_peak_mib" for r in rows)  # CPU: no peak memory to report
