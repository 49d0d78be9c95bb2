"""Causal depthwise convolution over packed sequences, with a carried state for decoding.

Sequences are given as one stream of T tokens plus, per token, its sequence and its index in that
sequence, so padding, packed documents and per-row cache offsets all take the same path. The state of
a sequence is its last ``K - 1`` inputs; a fresh sequence starts from zeros.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["ShortConv", "sequence_coordinates"]


def sequence_coordinates(cu_seqlens: torch.Tensor, total: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(seq_of_token (T,), pos_in_seq (T,)) for offsets ``cu_seqlens`` (S+1,)."""
    lengths = cu_seqlens.diff()
    seq = torch.repeat_interleave(torch.arange(lengths.numel(), device=cu_seqlens.device), lengths,
                                  output_size=total)
    return seq, torch.arange(total, device=cu_seqlens.device) - cu_seqlens[seq]


class ShortConv(nn.Module):
    """y_t = sum_j w[:, K-1-j] * x_{t-j} over one sequence; weight (C, K). Initialised to the identity."""

    def __init__(self, channels: int, kernel_size: int):
        super().__init__()
        if kernel_size < 2:
            raise ValueError(f"short_conv_size: expected >= 2 (or 0 = off), got {kernel_size}")
        self.kernel_size = kernel_size
        self.weight = nn.Parameter(torch.zeros(channels, kernel_size))
        with torch.no_grad():
            self.weight[:, -1] = 1.0

    def forward(self, x: torch.Tensor, cu_seqlens: torch.Tensor, prev: torch.Tensor | None = None,
                want_state: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        """x (T, C) packed sequences; prev (S, K-1, C) or None -> (y (T, C), new state (S, K-1, C) or None)."""
        total, k = x.shape[0], self.kernel_size
        seq, pos = sequence_coordinates(cu_seqlens, total)
        w = self.weight.to(x.dtype)
        y = x * w[:, -1]
        for j in range(1, k):  # tap j looks j tokens back: inside the sequence, else into its state
            shifted = torch.roll(x, j, dims=0)
            inside = (pos >= j)[:, None]
            if prev is None:
                src = torch.where(inside, shifted, torch.zeros((), dtype=x.dtype, device=x.device))
            else:
                src = torch.where(inside, shifted, prev[seq, (k - 1 - j + pos).clamp(0, k - 2)])
            y = y + src * w[:, k - 1 - j]
        return y, (self._tail(x, cu_seqlens, prev) if want_state else None)

    def _tail(self, x: torch.Tensor, cu_seqlens: torch.Tensor, prev: torch.Tensor | None) -> torch.Tensor:
        """Last K-1 inputs of every sequence (state included), (S, K-1, C)."""
        keep = self.kernel_size - 1
        lengths = cu_seqlens.diff()
        offset = lengths[:, None] - keep + torch.arange(keep, device=x.device)  # (S, K-1) index in the sequence
        from_x = x[(cu_seqlens[:-1, None] + offset).clamp(0, max(x.shape[0] - 1, 0))]
        if prev is None:
            from_prev = torch.zeros_like(from_x)
        else:
            from_prev = prev.gather(1, (keep + offset).clamp(0, keep - 1)[..., None].expand_as(from_x))
        return torch.where((offset >= 0)[..., None], from_x, from_prev)
