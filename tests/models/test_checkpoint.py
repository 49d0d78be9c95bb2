"""The authors' checkpoints: golden reproduction through timm's pretrained path, and the filter's errors."""

from __future__ import annotations

import logging

import pytest
import timm
import torch

from nalaformer.models.vision.nalaformer import checkpoint_filter_fn
from tests.conftest import rel_err
from tests.models.helpers import tiny_model

TOL = 1e-4


def load_official(path, **overrides):
    return timm.create_model("nalaformer_t", pretrained=True, pretrained_cfg_overlay=dict(file=str(path)),
                             **overrides).eval()


def assert_reproduces_golden(model, tensors):
    x = tensors["input"]
    with torch.no_grad():
        logits = model(x)
        final, stages = model.forward_intermediates(x)
        stem = model.stem(x)
    assert rel_err(logits, tensors["logits"]) < TOL
    assert rel_err(stem, tensors["out.patch_embed"]) < TOL
    for i, stage in enumerate(stages):
        assert rel_err(stage, tensors[f"out.stage{i}"]) < TOL, f"stage {i}"
    torch.testing.assert_close(final, stages[-1])


def test_released_file_reproduces_golden(golden, official_state_dict_path):
    model = load_official(official_state_dict_path, **golden["config"])
    assert_reproduces_golden(model, golden["tensors"])


def test_wrapped_checkpoint_reproduces_golden(golden, official_state_dict_path, tmp_path):
    state = torch.load(official_state_dict_path, weights_only=True)
    path = tmp_path / "wrapped.pth"
    torch.save({"model": state, "epoch": 299}, path)
    assert_reproduces_golden(load_official(path, **golden["config"]), golden["tensors"])


def test_golden_state_tensors_equal_the_released_file(golden, official_state_dict_path):
    state = torch.load(official_state_dict_path, weights_only=True)
    for key, value in state.items():
        assert torch.equal(golden["tensors"][f"state.{key}"], value), key


def test_our_own_state_dict_round_trips(golden, official_state_dict_path, tmp_path):
    model = load_official(official_state_dict_path, **golden["config"])
    path = tmp_path / "ours.pth"
    torch.save(model.state_dict(), path)
    assert_reproduces_golden(load_official(path, **golden["config"]), golden["tensors"])


def test_missing_and_unexpected_keys_are_listed(golden, official_state_dict_path, tmp_path):
    state = torch.load(official_state_dict_path, weights_only=True)
    del state["layers.1.blocks.0.attn.qkvg.weight"]
    state["layers.1.blocks.0.attn.extra.weight"] = torch.zeros(1)
    path = tmp_path / "broken.pth"
    torch.save(state, path)
    with pytest.raises(RuntimeError) as info:
        load_official(path, **golden["config"])
    message = str(info.value)
    assert "stages.1.blocks.0.attn.qkvg.weight" in message and "missing" in message
    assert "stages.1.blocks.0.attn.extra.weight" in message and "unexpected" in message


def test_checkpoint_for_a_deeper_model_is_refused(golden, official_state_dict_path):
    state = torch.load(official_state_dict_path, weights_only=True)
    model = tiny_model(depths=(1, 1, 2, 1))
    with pytest.raises(RuntimeError, match=r"missing keys \['stages\.2\.blocks\.1\."):
        checkpoint_filter_fn(state, model)


def test_head_count_mismatch_is_caught_by_the_rope_buffer(official_state_dict_path):
    state = torch.load(official_state_dict_path, weights_only=True)
    model = tiny_model(num_heads=(1, 1, 2, 4))  # same weight shapes, different heads in stage 1
    with pytest.raises(RuntimeError, match="head dim"):
        checkpoint_filter_fn(state, model)


def test_other_class_count_keeps_new_classifier(golden, official_state_dict_path, caplog):
    config = dict(golden["config"], num_classes=5)
    with caplog.at_level(logging.WARNING):
        model = load_official(official_state_dict_path, **config)
    assert model.head.fc.weight.shape == (5, 64)
    reference = load_official(official_state_dict_path, **golden["config"])
    x = golden["tensors"]["input"]
    with torch.no_grad():
        torch.testing.assert_close(model.forward_head(model.forward_features(x), pre_logits=True),
                                   reference.forward_head(reference.forward_features(x), pre_logits=True))


def test_features_only_loads_the_backbone(golden, official_state_dict_path):
    model = timm.create_model("nalaformer_t", pretrained=True, features_only=True,
                              pretrained_cfg_overlay=dict(file=str(official_state_dict_path)),
                              **golden["config"]).eval()
    with torch.no_grad():
        features = model(golden["tensors"]["input"])
    for i, feature in enumerate(features):
        assert rel_err(feature, golden["tensors"][f"out.stage{i}"]) < TOL
