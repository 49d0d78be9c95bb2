"""Public NaLa attention entry points: validation once, then the chosen backend."""

from __future__ import annotations

import os
import warnings

import torch

from .params import NaLaParams
from .reference import nala_attention_reference
from .state import NaLaState
from .torch_impl import nala_attention_torch, nala_decode_step_torch
from .validation import as_state, check_cu_seqlens, validate_decode_inputs, validate_nala_inputs

__all__ = ["nala_attention", "nala_decode_step"]


_WARNED: set[str] = set()


def _warn_once(msg: str) -> None:
    if msg not in _WARNED:
        _WARNED.add(msg)
        warnings.warn(msg, RuntimeWarning, stacklevel=3)


def _resolve_backend(backend: str, q: torch.Tensor, v: torch.Tensor | None = None, rope=None) -> str:
    """'auto' -> 'triton' for CUDA tensors the fused kernels take (Triton importable, D and Dv in
    16/32/64/128, float16/bfloat16/float32), else 'torch'. Calls the kernels cannot take fall back to
    'torch' with a one-time warning (float64 under 'auto' silently)."""
    if backend in ("torch", "reference"):
        return backend
    if backend == "auto" and q.device.type != "cuda":
        return "torch"
    from . import triton as _tk  # our subpackage: importing it does not import Triton

    if not _tk.triton_available():
        if backend == "triton":
            raise ValueError("backend: 'triton' needs the triton package (pip install nalaformer[gpu])")
        return "torch"
    if backend == "triton" and q.device.type != "cuda" and not (
            q.device.type == "cpu" and os.environ.get("TRITON_INTERPRET", "0") == "1"):
        raise ValueError(f"backend: 'triton' runs on CUDA tensors (or on CPU with TRITON_INTERPRET=1), "
                         f"got device {q.device}")
    reason = _tk.unsupported_reason(q, q if v is None else v, rope)
    if reason is None:
        return "triton"
    if backend == "auto" and q.dtype == torch.float64:
        return "torch"
    _warn_once(f"nala_attention: the Triton kernels do not take {reason}; using the PyTorch path")
    return "torch"


_DEFAULTS = NaLaParams()


def _as_params(params, inhibit, lam, tau, alpha, eps, norm_eps) -> NaLaParams:
    """The call's :class:`NaLaParams`: ``params`` as given, or built (and so validated) from the keywords."""
    given = (inhibit, lam, tau, alpha, eps, norm_eps)
    if params is None:
        return NaLaParams(*given)
    if not isinstance(params, NaLaParams):
        raise TypeError(f"params: expected a NaLaParams, got {type(params).__name__}")
    if given != tuple(_DEFAULTS.kernel_kwargs().values()):
        raise ValueError("params: give either a NaLaParams or the keywords inhibit, lam, tau, alpha, eps, "
                         "norm_eps, not both")
    return params


def _triton_attention(*args, **kwargs):
    from .triton import nala_attention_triton

    return nala_attention_triton(*args, **kwargs)


def nala_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    causal: bool = False,
    rope: tuple[torch.Tensor, torch.Tensor] | None = None,
    inhibit: str = "relu",
    lam: float = 3.0,
    tau: float = 0.5,
    alpha: float = 20.0,
    eps: float = 1e-6,
    norm_eps: float = 1e-6,
    initial_state: NaLaState | tuple | None = None,
    output_final_state: bool = False,
    cu_seqlens: torch.Tensor | None = None,
    max_seqlen: int | None = None,
    backend: str = "auto",
    params: NaLaParams | None = None,
):
    """Norm-aware linear attention (NaLa), non-causal or causal.

    Args:
        q, k: (B, N, H, D) queries and keys; v: (B, N, H, Dv) values (same dtype and device).
        causal: prefix-mean causal attention (language) instead of the global mean (vision).
        rope: optional rotary tables ``(sin, cos)``, each (N, D) or (N, D/2) (one value per pair, faster),
            applied to the numerator's features
            (see :func:`rope_1d`, :func:`rope_2d`). With ``cu_seqlens`` there is one row per packed token.
        inhibit: ``"relu"`` (released code) or ``"cosine"`` (the paper's smooth map).
        lam, tau, alpha: key power / query power ``lam*(tau + tanh|q|)``, cosine sharpness.
        eps: denominator epsilon; norm_eps: floor of the query/key norm.
        initial_state, output_final_state: carry the causal state across calls (decoding, chunking).
        cu_seqlens: (S+1,) int32/int64 offsets of packed sequences (B must be 1); segments are independent.
        max_seqlen: with ``cu_seqlens``, the length of the longest sequence (as flash-attn takes it), exact
            or larger. Offsets on the host are always checked (no sync). Offsets on a GPU are read back and
            checked without it; with it the fused kernels use them as they are (no device sync per call:
            compute it once per batch and pass it to every layer), clamping each sequence to [0, N] so that
            bad offsets give wrong rows, never an access out of range. The PyTorch paths read them anyway
            and check them.
        backend: ``"auto"`` (fused Triton kernels for CUDA tensors they take, else PyTorch), ``"triton"``,
            ``"torch"`` (memory-lean PyTorch), ``"reference"`` (readable, small inputs).
        params: a :class:`NaLaParams` in place of the six keywords inhibit .. norm_eps (what the library's
            layers pass; give one or the other).

    Returns:
        o (B, N, H, Dv) in the input dtype, or ``(o, NaLaState)`` with ``output_final_state=True``.
        The maps and sums run in float32 (float64 for float64 input).
    """
    params = _as_params(params, inhibit, lam, tau, alpha, eps, norm_eps)
    validate_nala_inputs(q, k, v, causal=causal, rope=rope, **params.kernel_kwargs(), initial_state=initial_state,
                         output_final_state=output_final_state, cu_seqlens=cu_seqlens, backend=backend,
                         max_seqlen=max_seqlen)
    chosen = _resolve_backend(backend, q, v, rope)
    if max_seqlen is not None and chosen != "triton" and cu_seqlens.device.type != "cpu":
        # offsets on a device were not read back; these paths read them anyway, so check them all
        check_cu_seqlens(cu_seqlens, q.shape[0], q.shape[1], q, max_seqlen, read_device_values=True)
    impl = {"torch": nala_attention_torch, "reference": nala_attention_reference, "triton": _triton_attention}[chosen]
    hint = {"max_seqlen": max_seqlen} if chosen == "triton" else {}  # the PyTorch paths read the offsets anyway
    return impl(q, k, v, causal=causal, rope=rope, **params.kernel_kwargs(), initial_state=as_state(initial_state),
                output_final_state=output_final_state, cu_seqlens=cu_seqlens, **hint)


def nala_decode_step(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    state: NaLaState | tuple | None = None,
    *,
    rope: tuple[torch.Tensor, torch.Tensor] | None = None,
    inhibit: str = "relu",
    lam: float = 3.0,
    tau: float = 0.5,
    alpha: float = 20.0,
    eps: float = 1e-6,
    norm_eps: float = 1e-6,
    params: NaLaParams | None = None,
) -> tuple[torch.Tensor, NaLaState]:
    """Advance causal NaLa by one token per sequence in O(D*Dv).

    q, k: (B, H, D); v: (B, H, Dv); state from a previous call or ``nala_attention(...,
    output_final_state=True)`` (None = empty); rope: this position's ``(sin, cos)``, each (D,) or (B, D).
    params: a :class:`NaLaParams` in place of the six keywords.
    Returns ``(o (B, H, Dv), new_state)``; equal to ``nala_attention(causal=True)`` on the whole prefix.
    """
    params = _as_params(params, inhibit, lam, tau, alpha, eps, norm_eps)
    validate_decode_inputs(q, k, v, state, rope=rope, **params.kernel_kwargs())
    impl = nala_decode_step_torch
    needs_grad = torch.is_grad_enabled() and any(
        t.requires_grad for t in (q, k, v, *(() if state is None else state[:2])))
    if q.device.type == "cuda" and not needs_grad and _resolve_backend("auto", q, v, rope) == "triton":
        from .triton import nala_decode_step_triton as impl  # one launch instead of ~25 small kernels
    return impl(q, k, v, as_state(state), rope=rope, **params.kernel_kwargs())
