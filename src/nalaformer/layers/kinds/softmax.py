"""``softmax``: softmax(q.k^T / sqrt(D)) through SDPA (rotary q and k when tables are given)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ...ops import apply_rotary
from .base import AttentionCore

__all__ = ["SoftmaxCore"]


class SoftmaxCore(AttentionCore):
    """Softmax attention. No recurrent state: decoding keeps the usual growing key/value cache (the
    language layer's own path). Rotary tables (N, D) or (N, D/2) rotate q and k."""

    name = "softmax"
    uses_rope = True
    recurrent = False

    def forward(self, q, k, v, *, causal: bool = False, rope=None, initial_state=None, output_final_state=False,
                cu_seqlens=None, max_seqlen=None, backend: str = "auto"):
        if initial_state is not None or output_final_state or cu_seqlens is not None:
            raise ValueError("softmax: no recurrent state and no packed sequences in the core (use a key/value cache)")
        if rope is not None:
            sin, cos = (t.to(q.dtype)[:, None, :] for t in rope)  # (N, 1, .): broadcast over heads
            q, k = apply_rotary(q, sin, cos), apply_rotary(k, sin, cos)
        out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                                             is_causal=causal)
        return out.transpose(1, 2)

    def rope_dtype(self, dtype: torch.dtype) -> torch.dtype:
        return dtype  # rotary q and k in their own precision

    def weights(self, q, k, *, causal: bool = False):
        return self.rows(q.transpose(1, 2), k.transpose(1, 2), causal=causal)

    @classmethod
    def rows(cls, q, k, *, causal: bool = False, scale: float | None = None):
        scale = q.shape[-1] ** -0.5 if scale is None else scale
        logits = (q @ k.transpose(-1, -2)) * scale
        if causal:
            nq, nk = logits.shape[-2:]
            if nq != nk:
                raise ValueError(f"causal: explicit causal rows need as many queries as keys, got {nq} and {nk}")
            mask = torch.ones(nq, nk, dtype=torch.bool, device=q.device).tril()
            logits = logits.masked_fill(~mask, float("-inf"))
        return torch.softmax(logits, dim=-1)
