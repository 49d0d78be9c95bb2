"""Block, FFN, stem, downsample, head; the residual branch uses timm's DropPath and LayerScale."""

from __future__ import annotations

import pytest
import torch

from nalaformer.layers import (
    ConvFFN,
    NaLaBlock,
    NaLaClassifierHead,
    NaLaStem,
    create_downsample,
)


def test_block_shape_and_residual_order():
    torch.manual_seed(0)
    block = NaLaBlock(32, 2, mlp_ratio=2, ls_init_value=1e-6).eval()
    x = torch.randn(2, 32, 5, 9)
    out = block(x)
    assert out.shape == x.shape
    # with LayerScale ~ 0 the block reduces to its two positional convolutions
    y = x + block.pos_conv1(x)
    y = y + block.pos_conv2(y)
    torch.testing.assert_close(out, y, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("attn_type", ["nala", "softmax"])
def test_block_without_layerscale(attn_type):
    block = NaLaBlock(32, 2, attn_type=attn_type, ls_init_value=None)
    assert isinstance(block.ls1, torch.nn.Identity) and isinstance(block.drop_path1, torch.nn.Identity)
    assert block(torch.randn(1, 32, 4, 4)).shape == (1, 32, 4, 4)


def test_conv_ffn_matches_its_definition():
    torch.manual_seed(1)
    ffn = ConvFFN(16, 48)
    x = torch.randn(2, 3, 5, 16)
    h = torch.nn.functional.gelu(ffn.fc1(x))
    h = h + ffn.dwconv(h.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
    torch.testing.assert_close(ffn(x), ffn.fc2(h))


def test_residual_branch_is_timms_drop_path_and_layerscale_under_the_released_names():
    from timm.layers import DropPath, LayerScale

    block = NaLaBlock(16, 2, drop_path=0.25, ls_init_value=0.5)
    assert isinstance(block.drop_path1, DropPath) and block.drop_path1.drop_prob == 0.25
    assert isinstance(block.ls2, LayerScale)
    names = {n for n, _ in block.named_parameters()}
    assert {"ls1.gamma", "ls2.gamma"} <= names  # checkpoint keys of the released models
    torch.testing.assert_close(block.ls1.gamma, torch.full((16,), 0.5))
    plain = NaLaBlock(16, 2, drop_path=0.0, ls_init_value=None)
    assert isinstance(plain.drop_path1, torch.nn.Identity) and isinstance(plain.ls1, torch.nn.Identity)


@pytest.mark.parametrize("size", [(64, 64), (65, 30), (33, 97)])
def test_stem_and_downsample_strides_round_up(size):
    stem = NaLaStem(3, 16)
    x = stem(torch.randn(1, 3, *size))
    assert x.shape == (1, 16, -(-size[0] // 4), -(-size[1] // 4))
    y = create_downsample(16, 32)(x)
    assert y.shape == (1, 32, -(-x.shape[2] // 2), -(-x.shape[3] // 2))


def test_head_pooling_pre_logits_and_reset():
    torch.manual_seed(3)
    head = NaLaClassifierHead(32, num_classes=5, hidden_size=64).eval()
    x = torch.randn(2, 32, 3, 4)
    pre = head(x, pre_logits=True)
    assert pre.shape == (2, 64)
    torch.testing.assert_close(head(x), head.fc(pre))
    # the released 1x1-conv classifier on the pooled map equals the Linear on pooled features
    manual = head.act(head.norm(head.proj(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2))).mean((2, 3))
    torch.testing.assert_close(pre, manual)

    head.reset(7, pool_type="")
    assert head(x).shape == (2, 7, 3, 4)
    head.reset(0, pool_type="avg", reset_other=True)
    assert head.proj is None and head.num_features == 32
    torch.testing.assert_close(head(x), x.mean((2, 3)))
    with pytest.raises(ValueError, match="global_pool"):
        head.reset(3, pool_type="max")
