"""Shared pieces of the Triton kernel tests: tolerances, the relative error, and the per-test environment."""

from __future__ import annotations

import contextlib
import os
import warnings

import torch

HAS_CUDA = torch.cuda.is_available()
TOL = {torch.float32: 1e-5, torch.bfloat16: 1e-2, torch.float16: 1e-2}  # ||out - ref|| / ||ref||


def rel_error(a: torch.Tensor, b: torch.Tensor) -> float:
    """||a - b|| / ||b|| in float64; a must be finite (an unwritten, NaN-poisoned element fails here)."""
    a, b = a.detach().double().cpu(), b.detach().double().cpu()
    assert torch.isfinite(a).all(), "non-finite values (unwritten or NaN)"
    return ((a - b).norm() / b.norm().clamp_min(1e-300)).item()


@contextlib.contextmanager
def triton_test_env(monkeypatch, request, host_module):
    """NaN-poisoned outputs (``host_module.POISON``); compiled kernels with one config each for ``gpu`` tests,
    the Triton interpreter (TRITON_INTERPRET=1) for the others; the interpreter's numpy warnings silenced."""
    monkeypatch.setattr(host_module, "POISON", True)
    if request.node.get_closest_marker("gpu"):
        monkeypatch.delenv("TRITON_INTERPRET", raising=False)
        if "NALAFORMER_TRITON_AUTOTUNE" not in os.environ:
            monkeypatch.setenv("NALAFORMER_TRITON_AUTOTUNE", "0")  # one config per kernel: fewer compiles
    else:
        monkeypatch.setenv("TRITON_INTERPRET", "1")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # numpy noise from masked lanes in the interpreter
        yield
