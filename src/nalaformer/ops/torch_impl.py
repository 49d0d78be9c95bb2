"""Memory-lean PyTorch NaLa attention: the CPU implementation and the GPU fallback.

Non-causal: one (2D x Dv) summary per sequence and head. Causal: chunkwise, an exact
quadratic part inside each chunk of ``chunk_size`` tokens plus the prefix state of the
chunks before it; only one state per chunk, never one per token, is materialised.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .autocast import outside_autocast
from .feature_maps import compute_dtype, key_feature_map, key_scale, nala_feature_maps, query_feature_map
from .reference import over_segments
from .rope import rotate_halves
from .state import NaLaState

__all__ = ["nala_attention_torch", "nala_decode_step_torch"]

DEFAULT_CHUNK = 64


def _noncausal(phq, phk, rq, rk, v, eps):
    """Features (B, H, L, 2D), v (B, H, L, Dv) -> o (B, H, L, Dv)."""
    n = phk.shape[2]
    s = rk.transpose(-1, -2) @ v / n  # (B, H, 2D, Dv)
    m = phk.mean(2, keepdim=True)  # (B, H, 1, 2D)
    den = (phq * m).sum(-1, keepdim=True)
    return (rq @ s) / (den + eps)


def _causal(phq, phk, rq, rk, v, eps, state: NaLaState, chunk: int):
    """Chunkwise causal NaLa. Features (B, H, L, 2D), v (B, H, L, Dv); state per batch row."""
    b, h, length, f = phq.shape
    pad = (-length) % chunk
    if pad:  # zero features add nothing to any sum; padded outputs are dropped below
        phq, phk, rq, rk, v = (F.pad(t, (0, 0, 0, pad)) for t in (phq, phk, rq, rk, v))
    nc = (length + pad) // chunk
    phq, phk, rq, rk, v = (t.unflatten(2, (nc, chunk)) for t in (phq, phk, rq, rk, v))  # (B, H, nc, C, .)

    kv_chunk = rk.transpose(-1, -2) @ v  # (B, H, nc, 2D, Dv)
    ks_chunk = phk.sum(3)  # (B, H, nc, 2D)
    kv_total = kv_chunk.sum(2)
    ks_total = ks_chunk.sum(2)
    # state entering each chunk: exclusive prefix sum over chunks plus the initial state
    kv_prev = F.pad(kv_chunk[:, :, :-1].cumsum(2), (0, 0, 0, 0, 1, 0)) + state.kv[:, :, None]
    ks_prev = F.pad(ks_chunk[:, :, :-1].cumsum(2), (0, 0, 1, 0)) + state.k_sum[:, :, None]

    mask = torch.ones(chunk, chunk, dtype=torch.bool, device=v.device).tril()
    scores = (rq @ rk.transpose(-1, -2)).masked_fill(~mask, 0)  # (B, H, nc, C, C)
    num = scores @ v + rq @ kv_prev
    den_scores = (phq @ phk.transpose(-1, -2)).masked_fill(~mask, 0)
    den = den_scores.sum(-1) + (phq @ ks_prev.unsqueeze(-1)).squeeze(-1)  # (B, H, nc, C)

    pos = torch.arange(1, nc * chunk + 1, device=v.device)
    count = (state.count[:, None] + pos).to(v.dtype).view(b, 1, nc, chunk)
    o = (num / count[..., None]) / (den / count + eps)[..., None]
    o = o.flatten(2, 3)[:, :, :length]
    final = NaLaState(state.kv + kv_total, state.k_sum + ks_total, state.count + length)
    return o, final


@outside_autocast
def nala_attention_torch(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, causal: bool = False, rope=None,
    inhibit: str = "relu", lam: float = 3.0, tau: float = 0.5, alpha: float = 20.0, eps: float = 1e-6,
    norm_eps: float = 1e-6, initial_state: NaLaState | None = None, output_final_state: bool = False,
    cu_seqlens: torch.Tensor | None = None, chunk_size: int = DEFAULT_CHUNK,
):
    """Same contract as :func:`nala_attention_reference`; inputs are assumed validated."""
    dt = compute_dtype(q.dtype)
    batch, length, heads, head_dim = q.shape
    # huge keys: scale them by a power of two s (1 for ordinary keys) and every key-side sum and eps by
    # s^lam, which leaves the result exact (feature_maps.key_scale)
    scale = key_scale(k, lam)
    scale_pow = scale ** lam
    eps = (eps * scale_pow).clamp_min(torch.finfo(dt).tiny)  # ordinary keys: eps itself
    phq = query_feature_map(q, inhibit=inhibit, lam=lam, tau=tau, alpha=alpha, norm_eps=norm_eps)
    phk = key_feature_map(k.to(dt) * scale, inhibit=inhibit, lam=lam, alpha=alpha, norm_eps=norm_eps * scale)
    rq, rk = rotate_halves(phq, rope), rotate_halves(phk, rope)
    vf = v.to(dt)
    # (B, N, H, .) -> (B, H, N, .) so the per-head products are batched matmuls
    phq, phk, rq, rk, vf = (t.transpose(1, 2) for t in (phq, phk, rq, rk, vf))
    if causal and initial_state is None:
        initial_state = NaLaState.zeros(batch if cu_seqlens is None else cu_seqlens.numel() - 1,
                                        heads, head_dim, v.shape[-1], dtype=dt, device=q.device)
    elif causal:
        initial_state = NaLaState(initial_state.kv.to(dt) * scale_pow, initial_state.k_sum.to(dt) * scale_pow,
                                  initial_state.count)

    def run(sl: slice, rows: slice, state: NaLaState | None):
        args = (phq[rows, :, sl], phk[rows, :, sl], rq[rows, :, sl], rk[rows, :, sl], vf[rows, :, sl], eps)
        return _causal(*args, state, chunk_size) if causal else (_noncausal(*args), None)

    o, final = over_segments(run, batch, length, cu_seqlens, initial_state, causal)  # packed: each on its own
    o = o.transpose(1, 2).to(q.dtype)
    if not output_final_state:
        return o
    return o, NaLaState(final.kv / scale_pow, final.k_sum / scale_pow, final.count)


@outside_autocast
def nala_decode_step_torch(q, k, v, state: NaLaState | None, *, rope=None, inhibit="relu", lam=3.0, tau=0.5,
                           alpha=20.0, eps=1e-6, norm_eps=1e-6):
    """One token per sequence: q, k (B, H, D), v (B, H, Dv) -> (o (B, H, Dv), new state). O(D*Dv)."""
    dt = compute_dtype(q.dtype)
    batch, heads, head_dim = q.shape
    if state is None:
        state = NaLaState.zeros(batch, heads, head_dim, v.shape[-1], dtype=dt, device=q.device)
    phq, phk = nala_feature_maps(q, k, inhibit=inhibit, lam=lam, tau=tau, alpha=alpha, norm_eps=norm_eps)
    if rope is not None:  # tables (D,) or (B, D) -> (B, D) rows for rotate_halves' (L, H, 2D) layout
        sin, cos = (t.expand(batch, t.shape[-1]) for t in rope)
        rq, rk = rotate_halves(phq, (sin, cos)), rotate_halves(phk, (sin, cos))
    else:
        rq, rk = phq, phk
    vf = v.to(dt)
    kv = state.kv.to(dt) + rk.unsqueeze(-1) * vf.unsqueeze(-2)  # (B, H, 2D, Dv)
    k_sum = state.k_sum.to(dt) + phk
    count = state.count + 1
    c = count.to(dt)[:, None]
    num = (rq.unsqueeze(-2) @ kv).squeeze(-2) / c[..., None]
    den = (phq * k_sum).sum(-1) / c
    o = num / (den + eps)[..., None]
    return o.to(q.dtype), NaLaState(kv, k_sum, count)
