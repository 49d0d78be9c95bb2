"""Readable NaLa attention: the spec's formulas written out, one sequence at a time.

This is the float64 oracle every faster path is tested against. The causal form keeps a
running (N, H, 2D, Dv) prefix sum, so use it on small inputs only; the memory-lean path is
:mod:`nalaformer.ops.torch_impl`.
"""

from __future__ import annotations

import torch

from .autocast import outside_autocast
from .feature_maps import compute_dtype, nala_feature_maps
from .rope import rotate_halves, rotate_pairs_by_columns
from .state import NaLaState

__all__ = ["nala_attention_reference", "rotate_features", "segments", "over_segments"]


def rotate_features(phi: torch.Tensor, rope) -> torch.Tensor:
    """Rotate each D-half of the 2D features phi (L, H, 2D) by tables (L, D) or (L, D/2); identity if rope is
    None. Always the column form (the textbook rotation to the bit), whatever the device."""
    return rotate_halves(phi, rope, rotate=rotate_pairs_by_columns)


def segments(batch: int, length: int, cu_seqlens) -> list[tuple[int, int, int]]:
    """(batch index, start, end) of every independent sequence."""
    if cu_seqlens is None:
        return [(b, 0, length) for b in range(batch)]
    offsets = cu_seqlens.tolist()
    return [(0, s, e) for s, e in zip(offsets, offsets[1:])]


def over_segments(run, batch: int, length: int, cu_seqlens, initial_state, causal: bool):
    """Run ``run(token_slice, row_slice, state) -> (o (B, H, L, .), final)`` on the whole batch, or on each
    packed sequence of ``cu_seqlens`` with its own state row; outputs joined along the tokens (dim 2)."""
    if cu_seqlens is None:
        return run(slice(None), slice(None), initial_state)
    outs, finals = [], []
    for idx, (_, s, e) in enumerate(segments(batch, length, cu_seqlens)):
        seg_state = NaLaState(*(t[idx:idx + 1] for t in initial_state)) if causal else None
        o_seg, f_seg = run(slice(s, e), slice(0, 1), seg_state)
        outs.append(o_seg)
        finals.append(f_seg)
    final = NaLaState(*(torch.cat(parts) for parts in zip(*finals))) if causal else None
    return torch.cat(outs, dim=2), final


def _sequence(phq, phk, rq, rk, v, *, causal, eps, state):
    """One sequence: features (L, H, 2D), v (L, H, Dv) -> o (L, H, Dv), final state."""
    if not causal:
        n = phk.shape[0]
        s = torch.einsum("lhf,lhe->hfe", rk, v) / n
        m = phk.sum(0) / n
        return torch.einsum("lhf,hfe->lhe", rq, s) / (torch.einsum("lhf,hf->lh", phq, m)[..., None] + eps), None
    kv = state.kv + torch.einsum("lhf,lhe->lhfe", rk, v).cumsum(0)  # (L, H, 2D, Dv)
    k_sum = state.k_sum + phk.cumsum(0)  # (L, H, 2D)
    count = state.count + torch.arange(1, phk.shape[0] + 1, device=v.device)
    count = count.to(v.dtype)[:, None]  # (L, 1)
    num = torch.einsum("lhf,lhfe->lhe", rq, kv) / count[..., None]
    den = torch.einsum("lhf,lhf->lh", phq, k_sum) / count
    final = NaLaState(kv[-1], k_sum[-1], state.count + phk.shape[0]) if phk.shape[0] else state
    return num / (den[..., None] + eps), final


@outside_autocast
def nala_attention_reference(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, causal: bool = False, rope=None,
    inhibit: str = "relu", lam: float = 3.0, tau: float = 0.5, alpha: float = 20.0, eps: float = 1e-6,
    norm_eps: float = 1e-6, initial_state: NaLaState | None = None, output_final_state: bool = False,
    cu_seqlens: torch.Tensor | None = None,
):
    """NaLa attention, literally. q, k (B, N, H, D), v (B, N, H, Dv) -> o (B, N, H, Dv).

    Inputs are assumed valid (see :func:`nalaformer.nala_attention` for the checked entry).
    """
    dt = compute_dtype(q.dtype)
    batch, length, heads, head_dim = q.shape
    phq, phk = nala_feature_maps(q, k, inhibit=inhibit, lam=lam, tau=tau, alpha=alpha, norm_eps=norm_eps)
    vf = v.to(dt)
    outs, finals = [], []
    for idx, (b, s, e) in enumerate(segments(batch, length, cu_seqlens)):
        seg_rope = None if rope is None else (rope[0][s:e], rope[1][s:e])
        state = None
        if causal:
            state = (NaLaState.zeros(1, heads, head_dim, v.shape[-1], dtype=dt, device=q.device)
                     if initial_state is None else NaLaState(*(t[idx:idx + 1] for t in initial_state)))
            state = NaLaState(state.kv[0].to(dt), state.k_sum[0].to(dt), state.count[0])
        o, final = _sequence(phq[b, s:e], phk[b, s:e], rotate_features(phq[b, s:e], seg_rope),
                             rotate_features(phk[b, s:e], seg_rope), vf[b, s:e], causal=causal, eps=eps, state=state)
        outs.append(o)
        finals.append(final)
    o = torch.stack(outs) if cu_seqlens is None else torch.cat(outs)[None]
    o = o.to(q.dtype)
    if not output_final_state:
        return o
    return o, NaLaState(*(torch.stack(parts) for parts in zip(*finals)))
