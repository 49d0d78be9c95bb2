"""1-D causal attention for language models: every kind of the registry (:mod:`nalaformer.layers.kinds`).

All kinds share one module: q, k, v, g projections, an optional causal depthwise conv on v (or on q, k
and v), 1-D
rotary positions (for the kinds that use them), a per-head RMSNorm on the output gated by SiLU(g), and
an output projection. Only the token mixer (the kind's core) differs:

- recurrent kinds (``"nala"``, ``"nala_cosine"``, ``"relu_linear"``, ``"elu_linear"``, ``"focused"``,
  ``"polarity"``): causal O(N) attention whose cache is a fixed-size (kv, k_sum, count) state per row
  (:class:`NaLaState`; NaLa rotates the numerator's features by the rotary tables).
- ``"softmax"``: softmax attention with rotary q and k through SDPA; its cache is the usual growing
  key/value store (for hybrid models).

Layouts (padding, packed documents, per-row cache offsets) come from :class:`TokenLayout`.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from ..ops import NaLaParams, NaLaState, apply_rotary
from .causal_conv import ShortConv
from .causal_layout import TokenLayout
from .kinds import KINDS, check_kind, create_core
from .lm_norm import RMSNorm

__all__ = ["CausalAttentionState", "CausalAttention", "ATTENTION_KINDS", "SHORT_CONV_ON"]

ATTENTION_KINDS = tuple(KINDS)
SHORT_CONV_ON = ("v", "qkv")  # what the optional short conv convolves


class CausalAttentionState(NamedTuple):
    """What one attention layer carries between calls, one row per sequence.

    nala:      recurrent kinds (NaLa, linear, focused, polarity): un-normalised prefix sums (fixed size).
    keys:      softmax layers: (B, P, H, D) rotated keys seen so far (grows with context).
    values:    softmax layers: (B, P, H, Dv).
    key_valid: softmax layers: (B, P) bool, False for padded positions.
    conv:      (B, K-1, C) last inputs of the short conv on v (when enabled).
    """

    nala: NaLaState | None = None
    keys: torch.Tensor | None = None
    values: torch.Tensor | None = None
    key_valid: torch.Tensor | None = None
    conv: torch.Tensor | None = None

    def index_select(self, index: torch.Tensor) -> "CausalAttentionState":
        """Reorder/select rows (beam search, batch expansion)."""
        def pick(t):
            return None if t is None else (t.index_select(index) if isinstance(t, NaLaState)
                                           else t.index_select(0, index))
        return CausalAttentionState(*(pick(t) for t in self))

    def nbytes(self) -> int:
        tensors = [t for x in self if x is not None for t in (x if isinstance(x, NaLaState) else (x,))]
        return sum(t.numel() * t.element_size() for t in tensors)


def _scatter_rows(base: torch.Tensor, rows: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """``base`` with rows ``rows`` replaced by ``values``."""
    return base.index_copy(0, rows, values.to(base.dtype))


def _where_rows(keep: torch.Tensor, new: torch.Tensor, old: torch.Tensor) -> torch.Tensor:
    """Row b of ``new`` where keep[b] (B,) else of ``old``."""
    return torch.where(keep.view(-1, *[1] * (new.dim() - 1)), new, old)


class CausalAttention(nn.Module):
    """Gated causal attention. x (B, N, C) -> (B, N, C), plus the new state when caching.

    Args:
        hidden_size, num_heads: C and H (head dim D = C / H unless ``head_dim`` is given).
        kind: a registry key (``nalaformer.layers.KINDS``): ``"nala"``, ``"softmax"``, ``"focused"``, ...
        params: NaLa hyper-parameters as one :class:`NaLaParams` (else built from inhibit, lam, tau,
            alpha, eps, norm_eps; see ``nala_attention``); used by the NaLa kinds.
        rope_theta: rotary base. short_conv_size: kernel of the causal depthwise conv (0 = off).
        short_conv_on: what it convolves: ``"v"`` (the values only) or ``"qkv"`` (queries, keys and values,
            as in GLA/DeltaNet/Based: a key then sees the tokens just before it, which binds a value to the
            key before it even for kinds without positions).
        rms_norm_eps: eps of the per-head output norm. backend: the op's backend.
    """

    def __init__(self, hidden_size: int, num_heads: int, *, kind: str = "nala", head_dim: int | None = None,
                 inhibit: str = "relu", lam: float = 3.0, tau: float = 0.5, alpha: float = 20.0, eps: float = 1e-6,
                 norm_eps: float = 1e-6, rope_theta: float = 10000.0, short_conv_size: int = 0,
                 short_conv_on: str = "v", rms_norm_eps: float = 1e-6, bias: bool = False, backend: str = "auto",
                 params: NaLaParams | None = None):
        super().__init__()
        check_kind(kind, "kind")
        self.kind, self.num_heads = kind, num_heads
        self.head_dim = head_dim or hidden_size // num_heads
        if self.head_dim * num_heads != hidden_size and head_dim is None:
            raise ValueError(f"num_attention_heads: {num_heads} must divide hidden_size {hidden_size}")
        if self.head_dim % 2:
            raise ValueError(f"head_dim: rotary positions need an even head dim, got {self.head_dim}")
        inner = num_heads * self.head_dim
        self.params = params if params is not None else NaLaParams(inhibit, lam, tau, alpha, eps, norm_eps)
        self.core = create_core(kind, num_heads, self.head_dim, params=self.params)
        self.rope_theta, self.backend = rope_theta, backend
        self.q_proj = nn.Linear(hidden_size, inner, bias=bias)
        self.k_proj = nn.Linear(hidden_size, inner, bias=bias)
        self.v_proj = nn.Linear(hidden_size, inner, bias=bias)
        self.g_proj = nn.Linear(hidden_size, inner, bias=bias)
        if short_conv_on not in SHORT_CONV_ON:
            raise ValueError(f"short_conv_on: expected one of {SHORT_CONV_ON}, got {short_conv_on!r}")
        self.short_conv_on = short_conv_on
        self.short_conv = ShortConv(len(short_conv_on) * inner, short_conv_size) if short_conv_size else None
        self.o_norm = RMSNorm(self.head_dim, eps=rms_norm_eps)
        self.o_proj = nn.Linear(inner, hidden_size, bias=bias)

    def forward(self, x: torch.Tensor, layout: TokenLayout, state: CausalAttentionState | None = None,
                use_cache: bool = False) -> tuple[torch.Tensor, CausalAttentionState | None]:
        b, n, _ = x.shape
        heads = (b, n, self.num_heads, self.head_dim)
        q, k, v, g = (proj(x) for proj in (self.q_proj, self.k_proj, self.v_proj, self.g_proj))
        if self.short_conv_on == "qkv" and self.short_conv is not None:  # one conv over the three (one state)
            qkv, conv_state = self._conv(torch.cat([q, k, v], -1), layout, state, use_cache)
            q, k, v = qkv.split([q.shape[-1], k.shape[-1], v.shape[-1]], -1)
        else:
            v, conv_state = self._conv(v, layout, state, use_cache)
        q, k, v = q.view(heads), k.view(heads), v.view(heads)
        mixer = self._softmax if self.kind == "softmax" else self._recurrent
        o, new_state = mixer(q, k, v, layout, state, use_cache)
        o = self.o_norm(o).flatten(2) * F.silu(g)
        if new_state is not None and conv_state is not None:
            new_state = new_state._replace(conv=conv_state)
        return self.o_proj(o), new_state

    # -- pieces ---------------------------------------------------------------------------------------

    def _conv(self, v, layout: TokenLayout, state, use_cache):
        """Causal conv on v (or on q, k, v concatenated) in the packed view (plain batches are B sequences of N)."""
        if self.short_conv is None:
            return v, None
        prev = None if state is None else state.conv
        if layout.packed:
            if layout.token_index.numel() == 0:
                return v, prev
            if prev is not None and layout.seq_row is not None:
                seq_prev = prev.index_select(0, layout.seq_row)
            else:
                seq_prev = None
            y, tail = self.short_conv(layout.pack(v)[0], layout.cu_seqlens, seq_prev, want_state=use_cache)
            out = layout.unpack(y[None])
            if tail is not None and layout.seq_row is not None:
                base = prev if prev is not None else v.new_zeros(v.shape[0], tail.shape[1], v.shape[-1])
                tail = _scatter_rows(base, layout.seq_row, tail)
            return out, tail
        b, n, c = v.shape
        cu = torch.arange(0, b * n + 1, n, device=v.device)
        y, tail = self.short_conv(v.reshape(b * n, c), cu, prev, want_state=use_cache)
        return y.view(b, n, c), tail

    def _rope(self, layout: TokenLayout, view: str):
        """Rotary tables for kinds that use them in a causal LM (softmax, NaLa and every linear kind), else None."""
        wanted = self.core.uses_rope or self.core.causal_rope
        return layout.rope(self.head_dim, self.rope_theta, view=view) if wanted else None

    def _recurrent(self, q, k, v, layout: TokenLayout, state, use_cache):
        prev = None if state is None else state.nala
        if layout.length == 1:  # decoding: O(D*Dv) per token, per-row positions
            o, new = self.core.step(q[:, 0], k[:, 0], v[:, 0], prev, rope=self._rope(layout, "last"))
            if layout.valid is not None:  # a padded token changes nothing
                keep = layout.valid[:, 0]
                old = prev if prev is not None else NaLaState(*(torch.zeros_like(t) for t in new))
                new = NaLaState(*(_where_rows(keep, n, o_) for n, o_ in zip(new, old)))
                o = o * keep[:, None, None]
            return o[:, None], CausalAttentionState(nala=new) if use_cache else None
        if not layout.packed:
            out = self.core(q, k, v, causal=True, rope=self._rope(layout, "shared"), initial_state=prev,
                            output_final_state=use_cache, backend=self.backend)
            o, new = out if use_cache else (out, None)
            return o, CausalAttentionState(nala=new) if use_cache else None
        return self._recurrent_packed(q, k, v, layout, prev, use_cache)

    def _recurrent_packed(self, q, k, v, layout: TokenLayout, prev: NaLaState | None, use_cache: bool):
        """Only real tokens, one segment per sequence; cached rows continue from their state."""
        keep_state = use_cache and layout.rows_are_sequences
        if layout.token_index.numel() == 0:
            return torch.zeros_like(v), CausalAttentionState(nala=prev) if keep_state else None
        init = None if prev is None or layout.seq_row is None else prev.index_select(layout.seq_row)
        out = self.core(layout.pack(q), layout.pack(k), layout.pack(v), causal=True, rope=self._rope(layout, "packed"),
                        cu_seqlens=layout.cu_seqlens, max_seqlen=layout.max_seqlen, initial_state=init,
                        output_final_state=keep_state, backend=self.backend)
        o, final = out if keep_state else (out, None)
        if not keep_state:
            return layout.unpack(o), None
        base = prev if prev is not None else NaLaState(
            *(t.new_zeros((layout.batch, *t.shape[1:])) for t in final))
        new = NaLaState(*(_scatter_rows(a, layout.seq_row, f) for a, f in zip(base, final)))
        return layout.unpack(o), CausalAttentionState(nala=new)

    def _softmax(self, q, k, v, layout: TokenLayout, state, use_cache):
        sin, cos = layout.rope(self.head_dim, self.rope_theta, view="grid")
        sin, cos = sin[:, :, None].to(q.dtype), cos[:, :, None].to(q.dtype)
        q, k = apply_rotary(q, sin, cos), apply_rotary(k, sin, cos)
        valid = layout.valid if layout.valid is not None else torch.ones(layout.batch, layout.length,
                                                                         dtype=torch.bool, device=q.device)
        if state is not None and state.keys is not None:
            keys, values = torch.cat([state.keys, k], 1), torch.cat([state.values, v], 1)
            key_valid = torch.cat([state.key_valid, valid], 1)
        else:
            keys, values, key_valid = k, v, valid
        cur = layout.attention_mask()
        past = keys.shape[1] - layout.length
        if past == 0 and cur is None:
            mask, causal = None, layout.length > 1
        else:
            if cur is None:
                cur = torch.ones(layout.length, layout.length, dtype=torch.bool, device=q.device).tril()
                cur = cur.expand(layout.batch, -1, -1)
            past_mask = key_valid[:, None, :past].expand(-1, layout.length, -1)
            mask, causal = torch.cat([past_mask, cur], -1)[:, None], False
        o = F.scaled_dot_product_attention(q.transpose(1, 2), keys.transpose(1, 2), values.transpose(1, 2),
                                           attn_mask=mask, is_causal=causal).transpose(1, 2)
        keep_state = use_cache and layout.rows_are_sequences
        new = CausalAttentionState(keys=keys, values=values, key_valid=key_valid) if keep_state else None
        return o, new
