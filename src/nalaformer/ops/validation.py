"""Input validation shared by every NaLa backend: one place, one set of messages."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .params import NaLaParams
from .state import NaLaState

__all__ = ["NaLaProblem", "validate_nala_inputs", "validate_decode_inputs", "check_cu_seqlens", "BACKENDS"]

BACKENDS = ("auto", "torch", "reference", "triton")


@dataclass(frozen=True)
class NaLaProblem:
    """Sizes of a validated call. ``num_seqs`` is B, or the number of segments with cu_seqlens."""

    batch: int
    length: int
    heads: int
    head_dim: int
    value_dim: int
    num_seqs: int


def _check_tensor(name: str, x, ndim: int, layout: str) -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor {layout}, got {type(x).__name__}")
    if x.dim() != ndim:
        raise ValueError(f"{name}: expected a {ndim}-D tensor {layout}, got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise TypeError(f"{name}: expected a floating-point dtype, got {x.dtype}")


def _check_same(name: str, x: torch.Tensor, ref: torch.Tensor) -> None:
    if x.dtype != ref.dtype:
        raise TypeError(f"{name}: expected dtype {ref.dtype} like q, got {x.dtype}")
    if x.device != ref.device:
        raise ValueError(f"{name}: expected device {ref.device} like q, got {x.device}")


def _check_hyper(inhibit: str, lam: float, tau: float, alpha: float, eps: float, norm_eps: float) -> None:
    NaLaParams(inhibit, lam, tau, alpha, eps, norm_eps)  # the checks live with the parameters object


def _check_rope(rope, rows: tuple[int, ...], head_dim: int, q: torch.Tensor, what: str) -> None:
    if not (isinstance(rope, (tuple, list)) and len(rope) == 2):
        raise TypeError(f"rope: expected a pair (sin, cos) of tensors, got {type(rope).__name__}")
    if head_dim % 2:
        raise ValueError(f"rope: rotary features need an even head dim D, got D={head_dim}")
    for name, t in zip(("sin", "cos"), rope):
        if not isinstance(t, torch.Tensor) or not t.is_floating_point():
            raise TypeError(f"rope: expected floating-point tensors (sin, cos), got {name} of type {type(t).__name__}")
        if t.device != q.device:
            raise ValueError(f"rope: expected {name} on device {q.device} like q, got {t.device}")
        shapes = [r + (width,) for width in (head_dim, head_dim // 2) for r in rows]
        if tuple(t.shape) not in shapes:
            raise ValueError(f"rope: expected {name} of shape {' or '.join(map(str, shapes))} ({what}), "
                             f"got {tuple(t.shape)}")


def _check_state(state, num_seqs: int, heads: int, head_dim: int, value_dim: int, q: torch.Tensor,
                 arg: str = "initial_state") -> None:
    if not (isinstance(state, (tuple, list)) and len(state) == 3):
        raise TypeError(f"{arg}: expected a NaLaState (kv, k_sum, count)")
    kv, k_sum, count = state
    expected = {
        "kv": (num_seqs, heads, 2 * head_dim, value_dim),
        "k_sum": (num_seqs, heads, 2 * head_dim),
        "count": (num_seqs,),
    }
    for name, t in zip(expected, (kv, k_sum, count)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{arg}.{name}: expected a tensor, got {type(t).__name__}")
        if tuple(t.shape) != expected[name]:
            raise ValueError(f"{arg}.{name}: expected shape {expected[name]}, got {tuple(t.shape)}")
        if t.device != q.device:
            raise ValueError(f"{arg}.{name}: expected device {q.device} like q, got {t.device}")
    if not (kv.is_floating_point() and k_sum.is_floating_point()):
        raise TypeError(f"{arg}: expected floating-point kv and k_sum")
    if count.is_floating_point() or count.is_complex():
        raise TypeError(f"{arg}.count: expected an integer tensor, got {count.dtype}")
    # a data check: on CPU tensors only (elsewhere it would cost a device sync per call), not while tracing
    if count.device.type == "cpu" and not torch.compiler.is_compiling() and bool((count < 0).any()):
        raise ValueError(f"{arg}.count: expected token counts >= 0, got {count.min().item()}")


def check_cu_seqlens(cu_seqlens, batch: int, length: int, q: torch.Tensor, max_seqlen: int | None = None,
                     read_device_values: bool = False) -> int:
    """Packed-sequence offsets: type, shape, device, batch 1, values from 0 to N, non-decreasing, and with
    ``max_seqlen`` no sequence longer than it. The values are data: they are read and checked when they sit on
    the host (no device sync), or when no ``max_seqlen`` is given, or with ``read_device_values`` (a backend
    that reads them anyway). With ``max_seqlen`` and offsets on a device they are not read back (no sync per
    call); the Triton kernels then clamp every sequence to [0, N], so bad offsets cannot reach memory out of
    range. While torch.compile traces, the values are checked when the op runs instead."""
    if not isinstance(cu_seqlens, torch.Tensor):
        raise TypeError(f"cu_seqlens: expected an int32/int64 tensor, got {type(cu_seqlens).__name__}")
    if cu_seqlens.dtype not in (torch.int32, torch.int64):
        raise TypeError(f"cu_seqlens: expected dtype int32 or int64, got {cu_seqlens.dtype}")
    if cu_seqlens.dim() != 1 or cu_seqlens.numel() < 2:
        raise ValueError(f"cu_seqlens: expected a 1-D tensor of >= 2 offsets, got shape {tuple(cu_seqlens.shape)}")
    if cu_seqlens.device != q.device:
        raise ValueError(f"cu_seqlens: expected device {q.device} like q, got {cu_seqlens.device}")
    if batch != 1:
        raise ValueError(f"cu_seqlens: packed sequences need batch size B = 1, got B = {batch}")
    if max_seqlen is not None:
        if isinstance(max_seqlen, bool) or not isinstance(max_seqlen, int) or not 0 <= max_seqlen <= length:
            raise ValueError(f"max_seqlen: expected an int in [0, N = {length}] (the longest packed sequence), "
                             f"got {max_seqlen!r}")
    if torch.compiler.is_compiling():  # the values are data: checked in eager calls, not while tracing
        return cu_seqlens.numel() - 1
    if cu_seqlens.device.type == "cpu":
        offsets = cu_seqlens.numpy().tolist()  # a host tensor: no sync, no copy
    elif max_seqlen is None or read_device_values:
        offsets = cu_seqlens.tolist()
    else:
        return cu_seqlens.numel() - 1
    if offsets[0] != 0 or offsets[-1] != length:
        raise ValueError(f"cu_seqlens: expected offsets from 0 to N = {length}, got {offsets[0]} .. {offsets[-1]}")
    lengths = [b - a for a, b in zip(offsets, offsets[1:])]
    if min(lengths) < 0:
        raise ValueError("cu_seqlens: expected non-decreasing offsets")
    if max_seqlen is not None and max(lengths) > max_seqlen:
        raise ValueError(f"max_seqlen: {max_seqlen} is shorter than the longest sequence in cu_seqlens "
                         f"({max(lengths)} tokens)")
    return len(offsets) - 1


def validate_nala_inputs(
    q, k, v, *, causal: bool, rope, inhibit: str, lam: float, tau: float, alpha: float, eps: float,
    norm_eps: float, initial_state, output_final_state: bool, cu_seqlens, backend: str, max_seqlen: int | None = None,
) -> NaLaProblem:
    """Check a ``nala_attention`` call; raise TypeError/ValueError naming the bad argument."""
    _check_tensor("q", q, 4, "(B, N, H, D)")
    _check_tensor("k", k, 4, "(B, N, H, D)")
    _check_tensor("v", v, 4, "(B, N, H, Dv)")
    batch, length, heads, head_dim = q.shape
    if k.shape != q.shape:
        raise ValueError(f"k: expected shape {tuple(q.shape)} (B, N, H, D) like q, got {tuple(k.shape)}")
    if v.shape[:3] != q.shape[:3]:
        raise ValueError(f"v: expected shape ({batch}, {length}, {heads}, Dv) matching q's (B, N, H), "
                         f"got {tuple(v.shape)}")
    _check_same("k", k, q)
    _check_same("v", v, q)
    if length < 1 or head_dim < 1 or v.shape[3] < 1 or heads < 1 or batch < 1:
        raise ValueError(f"q, v: expected non-empty B, N, H, D, Dv, got q {tuple(q.shape)}, v {tuple(v.shape)}")
    _check_hyper(inhibit, lam, tau, alpha, eps, norm_eps)
    if backend not in BACKENDS:
        raise ValueError(f"backend: expected one of {BACKENDS}, got {backend!r}")
    if not isinstance(causal, bool):
        raise TypeError(f"causal: expected a bool, got {type(causal).__name__}")
    if max_seqlen is not None and cu_seqlens is None:
        raise ValueError("max_seqlen: a hint for packed sequences, given without cu_seqlens")
    num_seqs = batch if cu_seqlens is None else check_cu_seqlens(cu_seqlens, batch, length, q, max_seqlen)
    if rope is not None:
        _check_rope(rope, ((length,),), head_dim, q, "one row per token")
    if not causal and (initial_state is not None or output_final_state):
        raise ValueError("initial_state/output_final_state: a recurrent state exists only with causal=True")
    if initial_state is not None:
        _check_state(initial_state, num_seqs, heads, head_dim, v.shape[3], q)
    return NaLaProblem(batch, length, heads, head_dim, v.shape[3], num_seqs)


def validate_decode_inputs(q, k, v, state, *, rope, inhibit, lam, tau, alpha, eps, norm_eps) -> NaLaProblem:
    """Check a ``nala_decode_step`` call: q, k (B, H, D), v (B, H, Dv), one token each."""
    _check_tensor("q", q, 3, "(B, H, D)")
    _check_tensor("k", k, 3, "(B, H, D)")
    _check_tensor("v", v, 3, "(B, H, Dv)")
    batch, heads, head_dim = q.shape
    if k.shape != q.shape:
        raise ValueError(f"k: expected shape {tuple(q.shape)} (B, H, D) like q, got {tuple(k.shape)}")
    if v.shape[:2] != q.shape[:2]:
        raise ValueError(f"v: expected shape ({batch}, {heads}, Dv) matching q's (B, H), got {tuple(v.shape)}")
    _check_same("k", k, q)
    _check_same("v", v, q)
    _check_hyper(inhibit, lam, tau, alpha, eps, norm_eps)
    if rope is not None:
        _check_rope(rope, ((), (batch,)), head_dim, q, "this token's position, shared or per sequence")
    if state is not None:
        _check_state(state, batch, heads, head_dim, v.shape[2], q, arg="state")
    return NaLaProblem(batch, 1, heads, head_dim, v.shape[2], batch)


def as_state(state) -> NaLaState | None:
    """Accept a plain (kv, k_sum, count) tuple as a NaLaState."""
    return None if state is None else NaLaState(*state)
