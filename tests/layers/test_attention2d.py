"""The 2-D NaLa attention and its softmax twin against float64 re-statements of spec §4-§5."""

from __future__ import annotations

import pytest
import torch

from nalaformer.layers import (
    NaLaAttention2d,
    SoftmaxAttention2d,
    clear_rotary_cache,
    create_attention2d,
    rotary_tables_2d,
)
from nalaformer.ops import rope_2d
from tests.conftest import rel_err
from tests.layers.reference_math import gated_lepe_attention, nala_core, rope_tables, softmax_core

CASES = [(NaLaAttention2d, nala_core), (SoftmaxAttention2d, softmax_core)]


def channels_last_call(module, x_nchw):
    return module(x_nchw.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


@pytest.mark.parametrize("cls, core", CASES)
@pytest.mark.parametrize("grid", [(6, 8), (5, 7), (1, 9)])
def test_matches_spec_math_float64(cls, core, grid):
    torch.manual_seed(0)
    module = cls(32, 2).double()
    x = torch.randn(2, 32, *grid, dtype=torch.float64)
    expected = gated_lepe_attention(module, x, core)
    assert rel_err(channels_last_call(module, x), expected) < 1e-10


@pytest.mark.parametrize("cls", [NaLaAttention2d, SoftmaxAttention2d])
def test_float32_close_to_float64_and_shapes(cls):
    torch.manual_seed(1)
    module = cls(64, 4)
    x = torch.randn(2, 7, 5, 64)
    out = module(x)
    assert out.shape == x.shape and out.dtype == torch.float32
    assert rel_err(out, module.double()(x.double())) < 1e-5


@pytest.mark.parametrize("cls", [NaLaAttention2d, SoftmaxAttention2d])
def test_channels_last_storage_gives_same_result(cls):
    torch.manual_seed(2)
    module = cls(32, 2)
    x = torch.randn(2, 32, 6, 10)
    dense = channels_last_call(module, x)
    strided = channels_last_call(module, x.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(dense, strided)


def test_cosine_inhibit_runs_and_differs_from_relu():
    torch.manual_seed(3)
    relu = NaLaAttention2d(32, 2)
    cosine = NaLaAttention2d(32, 2, inhibit="cosine")
    cosine.load_state_dict(relu.state_dict())
    x = torch.randn(1, 4, 6, 32)
    out = cosine(x)
    assert torch.isfinite(out).all()
    assert not torch.allclose(out, relu(x))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_nala_under_autocast_keeps_float32_sums(dtype):
    """Autocast must not push the op's sums of k^3 * v to 16 bits (they overflow fp16 for large keys)."""
    torch.manual_seed(4)
    module = NaLaAttention2d(32, 2)
    with torch.no_grad():
        module.qkvg.weight.mul_(40)
    x = torch.randn(2, 8, 8, 32)
    with torch.autocast("cpu", dtype=dtype):
        out = module(x)
    assert out.dtype == dtype and torch.isfinite(out).all()
    assert rel_err(out, module(x)) < 5e-2


def test_constructor_validation():
    with pytest.raises(ValueError, match="num_heads"):
        NaLaAttention2d(30, 4)
    with pytest.raises(ValueError, match="divisible by 4"):
        SoftmaxAttention2d(24, 4)
    with pytest.raises(ValueError, match="inhibit"):
        NaLaAttention2d(32, 2, inhibit="tanh")
    with pytest.raises(ValueError, match="attn_type"):
        create_attention2d("linear", 32, 2)
    assert isinstance(create_attention2d("softmax", 32, 2), SoftmaxAttention2d)


def test_rotary_tables_cached_and_exact():
    clear_rotary_cache()
    first = rotary_tables_2d(5, 7, 16, device=torch.device("cpu"), dtype=torch.float32)
    assert rotary_tables_2d(5, 7, 16, device=torch.device("cpu"), dtype=torch.float32) is first
    other = rotary_tables_2d(5, 7, 16, device=torch.device("cpu"), dtype=torch.bfloat16)
    assert other[0].dtype == torch.bfloat16 and other is not first
    assert first[0].shape == (35, 8)  # one value per pair
    for got, ref, spec in zip(first, rope_2d(5, 7, 16, per_pair=True), rope_tables(5, 7, 16), strict=True):
        assert torch.equal(got, ref)
        assert rel_err(got, spec[:, 0::2]) < 1e-6 and torch.equal(spec[:, 0::2], spec[:, 1::2])


def test_tables_built_in_inference_mode_still_train():
    clear_rotary_cache()
    module = SoftmaxAttention2d(32, 2)
    x = torch.randn(1, 4, 4, 32)
    with torch.inference_mode():
        module(x)
    module(x.requires_grad_(True)).sum().backward()  # cached tables must not be inference tensors
    assert x.grad is not None
