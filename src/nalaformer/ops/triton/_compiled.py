"""The Triton op as ``torch.library`` custom ops, the form ``torch.compile`` traces.

Eager calls go through the autograd.Function in :mod:`._ops` (cheaper on the host). Under
``torch.compile`` the op must be one opaque graph node with a fake (shape-only) implementation and a
registered backward, so that the model around it compiles into one graph (``fullgraph=True``, CUDA graphs
with ``mode="reduce-overhead"``). Both forms run the same launch code (``_nc_forward`` / ``_nc_backward``).

  nalaformer::nala_noncausal_fwd  (q, k, v, sin?, cos?, cu?, max_seqlen?, params, store_den)
                                  -> (o, den, workspace, max|k|)
  nalaformer::nala_noncausal_bwd  (dO, q, k, v, o, den, sin?, cos?, cu?, max_seqlen?, workspace, max|k|, params, need_q,
                                   need_kv)
                                  -> (dq, dk, dv)   (empty tensors for gradients not asked for)
  nalaformer::nala_causal_fwd     (q, k, v, sin?, cos?, params) -> (o, z, segment entry states S0, m0, max|k|)
  nalaformer::nala_causal_bwd     (dO, q, k, v, o, z, sin?, cos?, S0, m0, max|k|, params) -> (dq, dk, dv)
The causal ops cover the training form (no cu_seqlens, no carried state): their segment count follows
from the shapes and the device, so the fake implementation knows every output shape. Other causal calls
run eagerly behind a graph break.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from ..autocast import outside_autocast
from ..validation import check_cu_seqlens
from ._ops import _c_backward, _c_forward, _c_segments, _make_plan, _nc_backward, _nc_forward, _workspace_size, \
    key_max, prepare_inputs

__all__ = ["nala_noncausal_compiled", "nala_causal_compiled", "causal_compilable"]


def _nseq(q: Tensor, cu: Optional[Tensor]) -> int:
    return q.shape[0] if cu is None else cu.shape[0] - 1


@torch.library.custom_op("nalaformer::nala_noncausal_fwd", mutates_args=())
def _fwd(q: Tensor, k: Tensor, v: Tensor, sin: Optional[Tensor], cos: Optional[Tensor], cu: Optional[Tensor],
         max_seqlen: Optional[int], inhibit: str, lam: float, tau: float, alpha: float, eps: float, norm_eps: float,
         store_den: bool) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    if cu is not None and max_seqlen is None:  # tracing skipped the offsets' values (data): checked here
        check_cu_seqlens(cu, q.shape[0], q.shape[1], q)
    plan = _make_plan(q, inhibit, lam, tau, alpha, eps, norm_eps, cu, max_seqlen)
    kmax = key_max(k)
    o, z, flat = _nc_forward(q, k, v, sin, cos, cu, kmax, plan, store_den)
    return o, (z if z is not None else q.new_empty(0, dtype=torch.float32)), flat, kmax


@_fwd.register_fake
def _fwd_fake(q, k, v, sin, cos, cu, max_seqlen, inhibit, lam, tau, alpha, eps, norm_eps, store_den):
    b, n, h, d = q.shape
    dv = v.shape[-1]
    o = q.new_empty((b, n, h, dv))
    z = q.new_empty((b, h, n) if store_den else (0,), dtype=torch.float32)
    w = q.new_empty((_workspace_size(_nseq(q, cu), h, d, dv),), dtype=torch.float32)
    return o, z, w, q.new_empty((1,), dtype=torch.float32)


@torch.library.custom_op("nalaformer::nala_noncausal_bwd", mutates_args=())
def _bwd(do: Tensor, q: Tensor, k: Tensor, v: Tensor, o: Tensor, z: Tensor, sin: Optional[Tensor],
         cos: Optional[Tensor], cu: Optional[Tensor], max_seqlen: Optional[int], w: Tensor, kmax: Tensor,
         inhibit: str, lam: float, tau: float, alpha: float, eps: float, norm_eps: float, need_q: bool,
         need_kv: bool) -> tuple[Tensor, Tensor, Tensor]:
    plan = _make_plan(q, inhibit, lam, tau, alpha, eps, norm_eps, cu, max_seqlen)
    dq, dk, dv = _nc_backward(do, q, k, v, o, z, sin, cos, cu, w, kmax, plan, need_q, need_kv)
    empty = q.new_empty(0)
    return (dq if need_q else empty), (dk if need_kv else empty.clone()), (dv if need_kv else empty.clone())


@_bwd.register_fake
def _bwd_fake(do, q, k, v, o, z, sin, cos, cu, max_seqlen, w, kmax, inhibit, lam, tau, alpha, eps, norm_eps,
              need_q, need_kv):
    return (torch.empty_like(q) if need_q else q.new_empty(0), torch.empty_like(k) if need_kv else k.new_empty(0),
            torch.empty_like(v) if need_kv else v.new_empty(0))


def _setup_context(ctx, inputs, output):
    q, k, v, sin, cos, cu, max_seqlen, *params, _store_den = inputs
    o, z, w, kmax = output
    ctx.save_for_backward(q, k, v, o, z, sin, cos, cu, w, kmax)
    ctx.max_seqlen = max_seqlen
    ctx.params = tuple(params)
    ctx.mark_non_differentiable(z, w, kmax)
    ctx.set_materialize_grads(False)


def _backward(ctx, do, _dz, _dw, _dkmax):
    q, k, v, o, z, sin, cos, cu, w, kmax = ctx.saved_tensors
    nq, nk, nv = ctx.needs_input_grad[:3]
    if do is None or not (nq or nk or nv):
        return (None,) * 14
    dq, dk, dv = _bwd(do, q, k, v, o, z, sin, cos, cu, ctx.max_seqlen, w, kmax, *ctx.params, nq, nk or nv)
    return (dq if nq else None, dk if nk else None, dv if nv else None) + (None,) * 11


_fwd.register_autograd(_backward, setup_context=_setup_context)


@outside_autocast
def nala_noncausal_compiled(q, k, v, *, rope=None, inhibit="relu", lam=3.0, tau=0.5, alpha=20.0, eps=1e-6,
                            norm_eps=1e-6, cu_seqlens=None, max_seqlen=None, **_unused) -> Tensor:
    """Non-causal ``nala_attention`` (validated inputs) through the custom ops: o (B, N, H, Dv)."""
    q, k, v, sin, cos, cu = prepare_inputs(q, k, v, rope, cu_seqlens)
    train = torch.is_grad_enabled() and (q.requires_grad or k.requires_grad or v.requires_grad)
    o, _z, _w, _kmax = _fwd(q, k, v, sin, cos, cu, max_seqlen, inhibit, float(lam), float(tau), float(alpha),
                            float(eps), float(norm_eps), train)
    return o


# -- causal (training form) -------------------------------------------------------------------------------------
@torch.library.custom_op("nalaformer::nala_causal_fwd", mutates_args=())
def _cfwd(q: Tensor, k: Tensor, v: Tensor, sin: Optional[Tensor], cos: Optional[Tensor], inhibit: str, lam: float,
          tau: float, alpha: float, eps: float, norm_eps: float) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    plan = _make_plan(q, inhibit, lam, tau, alpha, eps, norm_eps, None)
    kmax = key_max(k)
    o, z, _sf, _mf, (s0, m0, _nseg, _seg_len) = _c_forward(q, k, v, sin, cos, None, None, None, None, kmax, plan,
                                                            False)
    empty = q.new_empty(0, dtype=torch.float32)
    return o, z, (s0 if s0 is not None else empty), (m0 if m0 is not None else empty.clone()), kmax


@_cfwd.register_fake
def _cfwd_fake(q, k, v, sin, cos, inhibit, lam, tau, alpha, eps, norm_eps):
    b, n, h, d = q.shape
    dv = v.shape[-1]
    nseg, _ = _c_segments(_make_plan(q, inhibit, lam, tau, alpha, eps, norm_eps, None), h)
    f32 = torch.float32
    if nseg > 1:
        s0, m0 = q.new_empty((b, h, nseg, 2 * d, dv), dtype=f32), q.new_empty((b, h, nseg, 2 * d), dtype=f32)
    else:
        s0, m0 = q.new_empty(0, dtype=f32), q.new_empty(0, dtype=f32)
    return q.new_empty((b, n, h, dv)), q.new_empty((b, h, n), dtype=f32), s0, m0, q.new_empty((1,), dtype=f32)


@torch.library.custom_op("nalaformer::nala_causal_bwd", mutates_args=())
def _cbwd(do: Tensor, q: Tensor, k: Tensor, v: Tensor, o: Tensor, z: Tensor, sin: Optional[Tensor],
          cos: Optional[Tensor], s0: Tensor, m0: Tensor, kmax: Tensor, inhibit: str, lam: float, tau: float,
          alpha: float, eps: float, norm_eps: float) -> tuple[Tensor, Tensor, Tensor]:
    plan = _make_plan(q, inhibit, lam, tau, alpha, eps, norm_eps, None)
    nseg, seg_len = _c_segments(plan, q.shape[2])
    has = s0.numel() > 0
    dq, dk, dv, _ds0, _dm0 = _c_backward(do, None, None, q, k, v, o, z, sin, cos, s0 if has else None,
                                         m0 if has else None, nseg, seg_len, None, kmax, plan, False)
    return dq, dk, dv


@_cbwd.register_fake
def _cbwd_fake(do, q, k, v, o, z, sin, cos, s0, m0, kmax, inhibit, lam, tau, alpha, eps, norm_eps):
    return torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)


def _c_setup_context(ctx, inputs, output):
    q, k, v, sin, cos, *params = inputs
    o, z, s0, m0, kmax = output
    ctx.save_for_backward(q, k, v, o, z, sin, cos, s0, m0, kmax)
    ctx.params = tuple(params)
    ctx.mark_non_differentiable(z, s0, m0, kmax)
    ctx.set_materialize_grads(False)


def _c_backward_rule(ctx, do, _dz, _ds0, _dm0, _dkmax):
    q, k, v, o, z, sin, cos, s0, m0, kmax = ctx.saved_tensors
    if do is None or not any(ctx.needs_input_grad[:3]):
        return (None,) * 11
    dq, dk, dv = _cbwd(do, q, k, v, o, z, sin, cos, s0, m0, kmax, *ctx.params)
    nq, nk, nv = ctx.needs_input_grad[:3]
    return (dq if nq else None, dk if nk else None, dv if nv else None) + (None,) * 8


_cfwd.register_autograd(_c_backward_rule, setup_context=_c_setup_context)


def causal_compilable(kwargs: dict) -> bool:
    """Whether a causal call has the training form the custom ops cover."""
    return (kwargs.get("cu_seqlens") is None and kwargs.get("initial_state") is None
            and not kwargs.get("output_final_state", False))


@outside_autocast
def nala_causal_compiled(q, k, v, *, rope=None, inhibit="relu", lam=3.0, tau=0.5, alpha=20.0, eps=1e-6,
                         norm_eps=1e-6, **_unused) -> Tensor:
    """Causal ``nala_attention`` in its training form (validated inputs) through the custom ops."""
    q, k, v, sin, cos, _ = prepare_inputs(q, k, v, rope, None)
    o, _z, _s0, _m0, _kmax = _cfwd(q, k, v, sin, cos, inhibit, float(lam), float(tau), float(alpha), float(eps),
                            float(norm_eps))
    return o
