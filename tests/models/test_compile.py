"""NaLaFormer under torch.compile: one graph (no graph breaks), the Triton kernels as a custom-op node."""

from __future__ import annotations

import functools
import importlib.util

import pytest
import torch

import nalaformer.layers.attention2d as attention2d
from nalaformer import nala_attention
from tests.conftest import rel_err
from tests.models.helpers import tiny_model


@pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="triton is not installed")
def test_fullgraph_compile_with_the_triton_kernels(monkeypatch):
    """What a GPU run compiles (the kernels here in Triton's CPU interpreter): fullgraph, same outputs and grads."""
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    monkeypatch.setattr(attention2d, "nala_attention", functools.partial(nala_attention, backend="triton"))
    torch.manual_seed(0)
    model = tiny_model().eval()
    x = torch.randn(2, 3, 32, 40, requires_grad=True)
    torch._dynamo.reset()
    out = torch.compile(model, fullgraph=True)(x)
    out.square().sum().backward()
    grads = [x.grad.clone()] + [p.grad.clone() for p in model.parameters() if p.grad is not None]
    model.zero_grad()
    x.grad = None
    ref = model(x)
    ref.square().sum().backward()
    ref_grads = [x.grad] + [p.grad for p in model.parameters() if p.grad is not None]
    assert rel_err(out, ref) < 1e-5
    assert len(grads) == len(ref_grads) and all(rel_err(a, b) < 1e-4 for a, b in zip(grads, ref_grads))
