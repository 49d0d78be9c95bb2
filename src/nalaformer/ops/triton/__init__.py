"""Fused Triton kernels for NaLa attention (``backend="triton"``).

Importing this package does not import Triton; the kernels are loaded on the first call
(:mod:`._loader`). On CUDA tensors they are compiled; on CPU tensors they run in the Triton
interpreter, which the caller must opt into with ``TRITON_INTERPRET=1`` (tests only: it is slow).
"""

from __future__ import annotations

import importlib.util

import torch

__all__ = ["SUPPORTED_HEAD_DIMS", "nala_attention_triton", "nala_decode_step_triton", "triton_available",
           "unsupported_reason"]

SUPPORTED_HEAD_DIMS = (16, 32, 64, 128)
SUPPORTED_DTYPES = (torch.float16, torch.bfloat16, torch.float32)


def _find_triton() -> bool:
    try:
        return importlib.util.find_spec("triton") is not None
    except (ImportError, ValueError):
        return False


# Settled at import (find_spec does not import Triton): a flag first set inside a torch.compile trace would
# fail that graph's guard on the next call and recompile the whole model.
_TRITON_AVAILABLE: bool = _find_triton()


def triton_available() -> bool:
    """Whether the ``triton`` package can be imported (checked once, at import, without importing it)."""
    return _TRITON_AVAILABLE


def unsupported_reason(q: torch.Tensor, v: torch.Tensor, rope=None, state=None) -> str | None:
    """Why the kernels cannot take this call (None when they can). Shapes are (..., D) / (..., Dv)."""
    if q.dtype not in SUPPORTED_DTYPES:
        return f"dtype {q.dtype} (the kernels take float16, bfloat16, float32)"
    d, dv = q.shape[-1], v.shape[-1]
    if d not in SUPPORTED_HEAD_DIMS or dv not in SUPPORTED_HEAD_DIMS:
        return f"head dims D={d}, Dv={dv} (the kernels take D, Dv in {SUPPORTED_HEAD_DIMS})"
    if rope is not None and any(t.requires_grad for t in rope):
        return "rotary tables that require grad"
    return None


def nala_attention_triton(q, k, v, **kwargs):
    """Eager: the autograd.Function path. Under torch.compile: custom ops (one opaque graph node each, so the
    model compiles as one graph) for the non-causal op and the causal training form; other causal calls
    (packed sequences, carried state) run eagerly behind a graph break."""
    if not torch.compiler.is_compiling():
        from ._ops import nala_attention_triton as impl
    elif not kwargs.get("causal", False):
        from ._compiled import nala_noncausal_compiled as impl
    else:
        from ._compiled import causal_compilable

        if causal_compilable(kwargs):
            from ._compiled import nala_causal_compiled as impl
        else:
            from ._ops import nala_attention_triton_eager as impl
    return impl(q, k, v, **kwargs)


def nala_decode_step_triton(q, k, v, state, **kwargs):
    if torch.compiler.is_compiling():
        from ._ops import nala_decode_step_triton_eager as impl
    else:
        from ._ops import nala_decode_step_triton as impl
    return impl(q, k, v, state, **kwargs)
