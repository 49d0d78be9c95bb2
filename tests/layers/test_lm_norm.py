"""RMSNorm (language-model blocks, per-head output norm) against the float64 formula."""

from __future__ import annotations

import warnings

import pytest
import torch

from nalaformer.layers import RMSNorm
from tests.conftest import rel_err


def _reference(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    xd = x.double()
    return xd * torch.rsqrt(xd.pow(2).mean(-1, keepdim=True) + eps) * weight.double()


@pytest.mark.parametrize(("dtype", "tol"), [(torch.float32, 1e-6), (torch.bfloat16, 1e-2), (torch.float16, 2e-3)])
def test_matches_float64_and_keeps_dtype(dtype, tol):
    torch.manual_seed(0)
    norm = RMSNorm(48, eps=1e-5)
    norm.weight.data.normal_()
    x = (torch.randn(3, 17, 48) * 30).to(dtype)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a dtype mismatch would warn and fall back to the unfused path
        y = norm(x)
    assert y.dtype == dtype
    assert rel_err(y, _reference(x, norm.weight, 1e-5)) < tol


def test_autocast_leaves_the_input_dtype_and_zero_rows_finite():
    norm = RMSNorm(16)
    x = torch.randn(4, 16)
    x[1] = 0
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = norm(x)
    assert y.dtype == torch.float32 and torch.isfinite(y).all() and (y[1] == 0).all()


def test_gradients_float64():
    norm = RMSNorm(8).double()
    norm.weight.data.uniform_(0.5, 1.5)
    x = torch.randn(5, 8, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t, w: torch.nn.functional.rms_norm(t, (8,), w, norm.eps),
                                    (x, norm.weight))
    norm(x).pow(2).sum().backward()
    xr = x.detach().requires_grad_()
    wr = norm.weight.detach().clone().requires_grad_()
    (xr * torch.rsqrt(xr.pow(2).mean(-1, keepdim=True) + norm.eps) * wr).pow(2).sum().backward()
    assert rel_err(x.grad, xr.grad) < 1e-10 and rel_err(norm.weight.grad, wr.grad) < 1e-10
