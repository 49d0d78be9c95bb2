"""``nala`` and ``nala_cosine``: norm-aware linear attention through the library's op (fused kernels on GPU).

``nala_cosine`` is ``nala`` with the paper's cosine inhibit map (``inhibit="cosine"``); it has its own
registry key so that result tables and command lines can name it.
"""

from __future__ import annotations

from dataclasses import replace

from ...ops import NaLaParams, nala_attention, nala_decode_step, nala_feature_maps
from ...ops.linear_attn import linear_attention_weights
from .base import AttentionCore

__all__ = ["NaLaCore", "NaLaCosineCore"]


class NaLaCore(AttentionCore):
    """NaLa; ``params``: a :class:`NaLaParams` (default: the released settings). Rotary tables, when given,
    rotate the numerator's features (the op's ``rope``)."""

    name = "nala"
    uses_rope = True
    inhibit = "relu"

    def __init__(self, num_heads: int, head_dim: int, *, params: NaLaParams | None = None):
        super().__init__(num_heads, head_dim)
        if params is None:
            params = NaLaParams(inhibit=self.inhibit)
        if not isinstance(params, NaLaParams):
            raise TypeError(f"params: expected a NaLaParams, got {type(params).__name__}")
        self.params = params

    def forward(self, q, k, v, *, causal: bool = False, rope=None, initial_state=None, output_final_state=False,
                cu_seqlens=None, max_seqlen=None, backend: str = "auto"):
        return nala_attention(q, k, v, causal=causal, rope=rope, initial_state=initial_state,
                              output_final_state=output_final_state, cu_seqlens=cu_seqlens, max_seqlen=max_seqlen,
                              backend=backend, params=self.params)

    def step(self, q, k, v, state, *, rope=None):
        return nala_decode_step(q, k, v, state, rope=rope, params=self.params)

    def weights(self, q, k, *, causal: bool = False):
        return self.rows(q.transpose(1, 2), k.transpose(1, 2), causal=causal, **self.params.kernel_kwargs())

    @classmethod
    def rows(cls, q, k, *, causal: bool = False, **params):
        """Rows without rotary positions; ``params``: NaLaParams fields (inhibit, lam, tau, alpha, eps, norm_eps)."""
        p = NaLaParams(**{"inhibit": cls.inhibit, **params})
        phq, phk = nala_feature_maps(q, k, **p.feature_kwargs())
        return linear_attention_weights(phq.unsqueeze(-2), phk, causal=causal, eps=p.eps).squeeze(-3)

    def extra_repr(self) -> str:
        return f"inhibit={self.params.inhibit!r}"


class NaLaCosineCore(NaLaCore):
    """NaLa with the cosine inhibit map (``inhibit="cosine"``)."""

    name = "nala_cosine"
    inhibit = "cosine"

    def __init__(self, num_heads: int, head_dim: int, *, params: NaLaParams | None = None):
        super().__init__(num_heads, head_dim, params=None if params is None else replace(params, inhibit="cosine"))
