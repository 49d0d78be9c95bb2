"""The non-causal Triton op as ``torch.library`` custom ops, the form ``torch.compile`` traces.

Eager calls go through the autograd.Function in :mod:`._ops` (cheaper on the host). Under
``torch.compile`` the op must be one opaque graph node with a fake (shape-only) implementation and a
registered backward, so that the model around it compiles into one graph (``fullgraph=True``, CUDA graphs
with ``mode="reduce-overhead"``). Both forms run the same launch code (``_nc_forward`` / ``_nc_backward``).

  nalaformer::nala_noncausal_fwd  (q, k, v, sin?, cos?, cu?, params, store_den) -> (o, den, workspace)
  nalaformer::nala_noncausal_bwd  (dO, q, k, v, o, den, sin?, cos?, cu?, workspace, params, need_q, need_kv)
                                  -> (dq, dk, dv)   (empty tensors for gradients not asked for)
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from ..autocast import outside_autocast
from ._ops import _last_contig, _make_plan, _nc_backward, _nc_forward, _workspace_size

__all__ = ["nala_noncausal_compiled"]


def _nseq(q: Tensor, cu: Optional[Tensor]) -> int:
    return q.shape[0] if cu is None else cu.shape[0] - 1


@torch.library.custom_op("nalaformer::nala_noncausal_fwd", mutates_args=())
def _fwd(q: Tensor, k: Tensor, v: Tensor, sin: Optional[Tensor], cos: Optional[Tensor], cu: Optional[Tensor],
         inhibit: str, lam: float, tau: float, alpha: float, eps: float, norm_eps: float,
         store_den: bool) -> tuple[Tensor, Tensor, Tensor]:
    plan = _make_plan(q, inhibit, lam, tau, alpha, eps, norm_eps, cu)
    o, z, flat = _nc_forward(q, k, v, sin, cos, cu, plan, store_den)
    return o, (z if z is not None else q.new_empty(0, dtype=torch.float32)), flat


@_fwd.register_fake
def _fwd_fake(q, k, v, sin, cos, cu, inhibit, lam, tau, alpha, eps, norm_eps, store_den):
    b, n, h, d = q.shape
    dv = v.shape[-1]
    o = q.new_empty((b, n, h, dv))
    z = q.new_empty((b, h, n) if store_den else (0,), dtype=torch.float32)
    w = q.new_empty((_workspace_size(_nseq(q, cu), h, d, dv),), dtype=torch.float32)
    return o, z, w


@torch.library.custom_op("nalaformer::nala_noncausal_bwd", mutates_args=())
def _bwd(do: Tensor, q: Tensor, k: Tensor, v: Tensor, o: Tensor, z: Tensor, sin: Optional[Tensor],
         cos: Optional[Tensor], cu: Optional[Tensor], w: Tensor, inhibit: str, lam: float, tau: float, alpha: float,
         eps: float, norm_eps: float, need_q: bool, need_kv: bool) -> tuple[Tensor, Tensor, Tensor]:
    plan = _make_plan(q, inhibit, lam, tau, alpha, eps, norm_eps, cu)
    dq, dk, dv = _nc_backward(do, q, k, v, o, z, sin, cos, cu, w, plan, need_q, need_kv)
    empty = q.new_empty(0)
    return (dq if need_q else empty), (dk if need_kv else empty.clone()), (dv if need_kv else empty.clone())


@_bwd.register_fake
def _bwd_fake(do, q, k, v, o, z, sin, cos, cu, w, inhibit, lam, tau, alpha, eps, norm_eps, need_q, need_kv):
    return (torch.empty_like(q) if need_q else q.new_empty(0), torch.empty_like(k) if need_kv else k.new_empty(0),
            torch.empty_like(v) if need_kv else v.new_empty(0))


def _setup_context(ctx, inputs, output):
    q, k, v, sin, cos, cu, *params, _store_den = inputs
    o, z, w = output
    ctx.save_for_backward(q, k, v, o, z, sin, cos, cu, w)
    ctx.params = tuple(params)
    ctx.mark_non_differentiable(z, w)
    ctx.set_materialize_grads(False)


def _backward(ctx, do, _dz, _dw):
    q, k, v, o, z, sin, cos, cu, w = ctx.saved_tensors
    nq, nk, nv = ctx.needs_input_grad[:3]
    if do is None or not (nq or nk or nv):
        return (None,) * 13
    dq, dk, dv = _bwd(do, q, k, v, o, z, sin, cos, cu, w, *ctx.params, nq, nk or nv)
    return (dq if nq else None, dk if nk else None, dv if nv else None) + (None,) * 10


_fwd.register_autograd(_backward, setup_context=_setup_context)


@outside_autocast
def nala_noncausal_compiled(q, k, v, *, rope=None, inhibit="relu", lam=3.0, tau=0.5, alpha=20.0, eps=1e-6,
                            norm_eps=1e-6, cu_seqlens=None, **_unused) -> Tensor:
    """Non-causal ``nala_attention`` (validated inputs) through the custom ops: o (B, N, H, Dv)."""
    q, k, v = _last_contig(q), _last_contig(k), _last_contig(v)
    sin, cos = (None, None) if rope is None else (_last_contig(rope[0]), _last_contig(rope[1]))
    cu = None if cu_seqlens is None else cu_seqlens.contiguous()
    train = torch.is_grad_enabled() and (q.requires_grad or k.requires_grad or v.requires_grad)
    o, _z, _w = _fwd(q, k, v, sin, cos, cu, inhibit, float(lam), float(tau), float(alpha), float(eps),
                     float(norm_eps), train)
    return o
