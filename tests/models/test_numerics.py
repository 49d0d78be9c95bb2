"""Finite forward and backward under CPU autocast (bf16, fp16), at init and with large activations."""

from __future__ import annotations

import pytest
import torch

from tests.models.helpers import tiny_model


def _fp16_autocast_supported() -> bool:
    try:
        with torch.autocast("cpu", dtype=torch.float16):
            return torch.nn.functional.linear(torch.ones(1, 2), torch.ones(2, 2)).dtype == torch.float16
    except RuntimeError:
        return False


DTYPES = [torch.bfloat16] + ([torch.float16] if _fp16_autocast_supported() else [])


def scale_token_norms(model, factor: float) -> None:
    """Multiply every LayerNorm gain: attention and FFN inputs (and so q, k, v) grow by ``factor``."""
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.LayerNorm):
                module.weight.mul_(factor)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("scale", ["init", "input_x100", "tokens_x100"])
@pytest.mark.parametrize("attn_types", [("nala", "nala", "softmax", "softmax"), "nala", "softmax"])
def test_autocast_forward_backward_finite(dtype, scale, attn_types):
    torch.manual_seed(0)
    model = tiny_model(attn_types=attn_types).train()
    x = torch.randn(2, 3, 64, 80)
    if scale == "input_x100":
        x = x * 100
    elif scale == "tokens_x100":
        scale_token_norms(model, 100.0)
    x.requires_grad_(True)
    with torch.autocast("cpu", dtype=dtype):
        out = model(x)
    assert out.dtype == dtype
    assert torch.isfinite(out).all()
    out.float().square().mean().backward()
    assert torch.isfinite(x.grad).all()
    bad = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not bad, f"non-finite or missing gradients: {bad[:5]}"


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_autocast_close_to_float32(dtype):
    torch.manual_seed(1)
    model = tiny_model().eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        reference = model.forward_features(x)
        with torch.autocast("cpu", dtype=dtype):
            low = model.forward_features(x)
    error = ((low.float() - reference).norm() / reference.norm()).item()
    assert error < 5e-2


def test_zero_input_is_finite():
    """An all-zero image gives constant tokens; the NaLa query-norm floor keeps everything finite."""
    model = tiny_model().eval()
    with torch.no_grad():
        assert torch.isfinite(model(torch.zeros(1, 3, 64, 64))).all()
