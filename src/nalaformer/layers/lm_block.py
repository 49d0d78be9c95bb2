"""Llama-style decoder block around :class:`CausalAttention`: pre-RMSNorm, residuals, SwiGLU MLP."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .causal_attention import CausalAttention, CausalAttentionState
from .causal_layout import TokenLayout
from .lm_norm import RMSNorm

__all__ = ["SwiGLU", "CausalDecoderBlock"]


class SwiGLU(nn.Module):
    """down(SiLU(gate(x)) * up(x)); x (..., C) -> (..., C)."""

    def __init__(self, hidden_size: int, intermediate_size: int, bias: bool = False):
        super().__init__()
        self.gate_proj = nn.Linear(hidden_size, intermediate_size, bias=bias)
        self.up_proj = nn.Linear(hidden_size, intermediate_size, bias=bias)
        self.down_proj = nn.Linear(intermediate_size, hidden_size, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class CausalDecoderBlock(nn.Module):
    """x + attn(norm(x)), then + mlp(norm(x)). x (B, N, C) -> (B, N, C), new attention state."""

    def __init__(self, hidden_size: int, intermediate_size: int, rms_norm_eps: float, attention: CausalAttention):
        super().__init__()
        self.input_layernorm = RMSNorm(hidden_size, eps=rms_norm_eps)
        self.self_attn = attention
        self.post_attention_layernorm = RMSNorm(hidden_size, eps=rms_norm_eps)
        self.mlp = SwiGLU(hidden_size, intermediate_size)

    def forward(self, x: torch.Tensor, layout: TokenLayout, state: CausalAttentionState | None = None,
                use_cache: bool = False) -> tuple[torch.Tensor, CausalAttentionState | None]:
        attn, new_state = self.self_attn(self.input_layernorm(x), layout, state, use_cache)
        x = x + attn
        return x + self.mlp(self.post_attention_layernorm(x)), new_state
