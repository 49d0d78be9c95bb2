"""The timm model contract of the NaLaFormer family."""

from __future__ import annotations

import pytest
import timm
import timm.optim
import torch
from timm.layers import DropPath

from nalaformer.layers import NaLaAttention2d, SoftmaxAttention2d
from tests.models.helpers import GOLDEN_CONFIG, tiny_model

VARIANT_PARAMS = {
    "nalaformer_xt": 6_142_248,
    "nalaformer_t": 15_907_752,
    "nalaformer_s": 25_654_184,
    "nalaformer_b": 52_002_952,
    "nalaformer_l": 95_426_760,
    "nalaformer_t_paper": 14_933_096,
}


@pytest.mark.parametrize("name, expected", VARIANT_PARAMS.items())
def test_released_parameter_counts(name, expected):
    with torch.device("meta"):
        model = timm.create_model(name)
    assert sum(p.numel() for p in model.parameters()) == expected


def test_all_variants_registered():
    assert set(timm.list_models("nalaformer_*")) >= set(VARIANT_PARAMS)


def test_released_defaults():
    with torch.device("meta"):
        b = timm.create_model("nalaformer_b")
    stages = b.stages
    assert [type(s.blocks[0].attn) for s in stages] == [NaLaAttention2d] * 2 + [SoftmaxAttention2d] * 2
    assert [s.blocks[0].ls1.init_values for s in stages] == [1.0, 1.0, 1e-6, 1e-6]
    assert stages[-1].blocks[-1].drop_path1.drop_prob == pytest.approx(0.4)
    assert b.head_hidden_size == 1024 and b.num_features == 512


def test_constructor_keywords_build_any_config():
    model = tiny_model(attn_types=("softmax", "nala", "nala", "softmax"), inhibit="cosine",
                       layer_scale_init_values=False, mlp_ratios=(2, 3, 2, 1.5), in_chans=1, num_classes=3,
                       head_hidden_size=0)
    kinds = [type(s.blocks[0].attn) for s in model.stages]
    assert kinds == [SoftmaxAttention2d, NaLaAttention2d, NaLaAttention2d, SoftmaxAttention2d]
    assert model.stages[1].blocks[0].attn.inhibit == "cosine"
    assert isinstance(model.stages[0].blocks[0].ls1, torch.nn.Identity)
    assert model.stages[3].blocks[0].mlp.fc1.out_features == 192
    assert model.head.proj is None and model.head_hidden_size == 128
    mixed = tiny_model(layer_scale_init_values=(None, 1e-6, None, 0.5))
    assert [type(s.blocks[0].ls1).__name__ for s in mixed.stages] == ["Identity", "LayerScale"] * 2
    assert model(torch.randn(1, 1, 64, 64)).shape == (1, 3)


@pytest.mark.parametrize("bad, match", [
    (dict(attn_types=("nala", "nala", "flash", "softmax")), "attn_types"),
    (dict(depths=(1, 1, 1)), "depths"),
    (dict(num_heads=(1, 2, 3, 4)), "num_heads"),
])
def test_bad_config_raises(bad, match):
    with pytest.raises(ValueError, match=match):
        tiny_model(**bad)


def test_unknown_keyword_is_a_type_error():
    with pytest.raises(TypeError):
        tiny_model(not_a_model_arg=1)


@pytest.mark.parametrize("size", [(64, 64), (96, 160), (100, 75), (33, 47)])
def test_any_input_size_and_features_only(size):
    model = tiny_model(features_only=True).eval()
    assert model.feature_info.reduction() == [4, 8, 16, 32]
    assert model.feature_info.channels() == [16, 32, 64, 128]
    with torch.no_grad():
        features = model(torch.randn(2, 3, *size))
    for feature, stride, channels in zip(features, [4, 8, 16, 32], [16, 32, 64, 128], strict=True):
        assert feature.shape == (2, channels, -(-size[0] // stride), -(-size[1] // stride))


def test_features_only_out_indices():
    model = tiny_model(features_only=True, out_indices=(1, 3)).eval()
    assert model.feature_info.reduction() == [8, 32]
    with torch.no_grad():
        features = model(torch.randn(1, 3, 64, 96))
    assert [f.shape[1] for f in features] == [32, 128]


def test_forward_intermediates():
    model = tiny_model().eval()
    x = torch.randn(2, 3, 72, 104)
    with torch.no_grad():
        final, everything = model.forward_intermediates(x)
        torch.testing.assert_close(final, model.forward_features(x))
        assert [t.shape[1] for t in everything] == [16, 32, 64, 128]
        last_two = model.forward_intermediates(x, indices=2, intermediates_only=True)
        torch.testing.assert_close(last_two, everything[2:])
        early = model.forward_intermediates(x, indices=[1], stop_early=True, output_fmt="NHWC",
                                            intermediates_only=True)
        torch.testing.assert_close(early[0], everything[1].permute(0, 2, 3, 1))
    with pytest.raises(ValueError, match="output_fmt"):
        model.forward_intermediates(x, output_fmt="NLC")


def test_prune_intermediate_layers():
    model = tiny_model().eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        taps = model.forward_intermediates(x, intermediates_only=True)
        assert model.prune_intermediate_layers([1]) == [1]
        assert len(model.stages) == 2 and model.num_features == 32 and model.num_classes == 0
        torch.testing.assert_close(model.forward_features(x), taps[1])
        torch.testing.assert_close(model(x), taps[1])  # head pruned: no pooling, no classifier
        # a pruned backbone accepts images down to its own total stride
        assert model.forward_features(torch.randn(1, 3, 8, 8)).shape == (1, 32, 1, 1)


def test_head_api():
    model = tiny_model().eval()
    x = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        features = model.forward_features(x)
        assert features.shape == (2, 128, 2, 3)
        pre = model.forward_head(features, pre_logits=True)
        assert pre.shape == (2, model.head_hidden_size) == (2, 64)
        torch.testing.assert_close(model.forward_head(features), model.get_classifier()(pre))
        model.reset_classifier(0)
        torch.testing.assert_close(model(x), pre)
        model.reset_classifier(4, global_pool="")
        assert model(x).shape == (2, 4, 2, 3)
        model.reset_classifier(6, global_pool="avg")
        assert model(x).shape == (2, 6)
    with pytest.raises(ValueError, match="global_pool"):
        model.reset_classifier(6, global_pool="max")


def test_optimizer_helpers():
    model = tiny_model()
    names = [n for n, _ in model.named_parameters()]
    assert model.no_weight_decay() == set()
    groups = timm.models.group_parameters(model, model.group_matcher(coarse=False))
    assert len(groups) > 4
    assert sum(len(v) for v in groups.values()) == len(names)
    optimizer = timm.optim.create_optimizer_v2(model, "adamw", lr=1e-3, weight_decay=0.05)
    decayed = {id(p) for g in optimizer.param_groups if g["weight_decay"] > 0 for p in g["params"]}
    gammas = [p for n, p in model.named_parameters() if n.endswith(".gamma")]
    assert gammas and not any(id(p) in decayed for p in gammas)


@pytest.mark.parametrize("x, match", [
    (torch.randn(2, 1, 64, 64), r"x: expected 3 input channels"),
    (torch.randn(3, 64, 64), r"x: expected a 4-D image batch \(B, 3, H, W\)"),
    (torch.randn(1, 3, 16, 64), r"x: expected an image of at least 32x32 pixels"),
    (torch.randn(1, 3, 64, 31), r"got 64x31"),
])
def test_bad_inputs_raise_value_error(x, match):
    model = tiny_model().eval()
    with pytest.raises(ValueError, match=match):
        model(x)
    with pytest.raises(ValueError, match=match):
        model.forward_intermediates(x)


def test_bad_input_through_features_only():
    model = tiny_model(features_only=True)
    with pytest.raises(ValueError, match="input channels"):
        model(torch.randn(1, 4, 64, 64))


def test_drop_path_rates_increase_linearly_and_act_in_training():
    model = tiny_model(depths=(1, 2, 1, 1), drop_path_rate=0.4)
    rates = [b.drop_path1.drop_prob if isinstance(b.drop_path1, DropPath) else 0.0
             for s in model.stages for b in s.blocks]
    assert rates == pytest.approx([0.0, 0.1, 0.2, 0.3, 0.4])
    assert all(b.drop_path1 is not b.drop_path2 for s in model.stages for b in s.blocks)
    x = torch.randn(8, 3, 32, 32)
    model.train()
    with torch.no_grad():
        torch.manual_seed(0)
        first = model.forward_features(x)
        torch.manual_seed(1)
        second = model.forward_features(x)
        assert not torch.allclose(first, second)
        model.eval()
        torch.testing.assert_close(model.forward_features(x), model.forward_features(x))


def test_no_drop_path_means_identity():
    model = tiny_model(drop_path_rate=0.0)
    assert not any(isinstance(m, DropPath) for m in model.modules())


def test_grad_checkpointing_gives_equal_outputs_and_grads():
    torch.manual_seed(0)
    model = tiny_model().train()
    x = torch.randn(2, 3, 64, 64)
    results = []
    for enable in (False, True):
        model.set_grad_checkpointing(enable)
        model.zero_grad()
        torch.manual_seed(1)
        out = model(x)
        out.square().mean().backward()
        results.append((out.detach(), [p.grad.clone() for p in model.parameters()]))
    torch.testing.assert_close(results[0][0], results[1][0])
    for g0, g1 in zip(results[0][1], results[1][1], strict=True):
        torch.testing.assert_close(g0, g1)


def test_init_weights_after_to_empty_and_dtype_change():
    model = timm.create_model("nalaformer_t", device="meta", **GOLDEN_CONFIG)
    model = model.to_empty(device="cpu")
    with torch.no_grad():
        for t in list(model.parameters()) + list(model.buffers()):
            if t.is_floating_point():
                t.fill_(float("nan"))
    model.init_weights()
    assert all(torch.isfinite(t).all() for t in list(model.parameters()) + list(model.buffers())
               if t.is_floating_point())
    model.eval()
    x = torch.randn(1, 3, 64, 64)
    assert torch.isfinite(model(x)).all()
    model.to(torch.bfloat16)
    assert model(x.bfloat16()).dtype == torch.bfloat16  # rotary tables are cached per dtype


def test_torch_fx_feature_extraction_traces_the_model():
    """timm's fx feature extraction (what its own test_models.py runs): the convolutions that pick a CPU form by
    the image size are fx leaves, so tracing does not branch on proxies."""
    from timm.models import create_feature_extractor

    model = tiny_model().eval()
    nodes = {"stages.3": "last"}
    extractor = create_feature_extractor(model, return_nodes=nodes)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(extractor(x)["last"], model.forward_features(x), atol=1e-5)
