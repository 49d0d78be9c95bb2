"""NaLaFormer under torch.compile: one graph (no graph breaks), the Triton kernels as a custom-op node."""

from __future__ import annotations

import functools
import importlib.util

import pytest
import torch

import nalaformer.layers.kinds.nala as nala_core  # the NaLa kind makes the op call
from nalaformer import nala_attention
from tests.conftest import rel_err
from tests.models.helpers import tiny_model


@pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="triton is not installed")
def test_fullgraph_compile_with_the_triton_kernels(monkeypatch):
    """What a GPU run compiles (the kernels here in Triton's CPU interpreter): fullgraph, same outputs and grads."""
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    monkeypatch.setattr(nala_core, "nala_attention", functools.partial(nala_attention, backend="triton"))
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


_FRESH_PROCESS_TRAINING = """
import functools, torch
import nalaformer.layers.kinds.nala as nala_core  # the NaLa kind makes the op call
from nalaformer import nala_attention
from tests.models.helpers import tiny_model
nala_core.nala_attention = functools.partial(nala_attention, backend="triton")
torch.manual_seed(0)
model = tiny_model().train()
compiled = torch.compile(model, backend="aot_eager")
x = torch.randn(2, 3, 32, 40)
with torch._dynamo.config.patch(error_on_recompile=True):
    for _ in range(3):
        compiled(x).square().mean().backward()
print("no recompiles")
"""


@pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="triton is not installed")
def test_compiled_training_does_not_recompile_in_a_fresh_process():
    """Nothing the traced forward reads may change on its first call (e.g. a lazily set module flag): a guard
    on it fails on the second call and recompiles the model, on the GPU with dynamic shapes (which crashed
    inductor on torch 2.11). A fresh process, so no earlier test has set anything yet."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    env = dict(os.environ, TRITON_INTERPRET="1", PYTHONPATH=os.pathsep.join([str(root), str(root / "src")]))
    run = subprocess.run([sys.executable, "-c", _FRESH_PROCESS_TRAINING], cwd=root, env=env, capture_output=True,
                         text=True, timeout=600)
    assert run.returncode == 0 and "no recompiles" in run.stdout, run.stderr[-3000:]
