"""The recurrent state of causal NaLa attention (spec §3, recurrent form)."""

from __future__ import annotations

from typing import NamedTuple

import torch

__all__ = ["NaLaState"]


class NaLaState(NamedTuple):
    """Un-normalised prefix sums carried between causal chunks and decode steps.

    kv:    (S, H, 2D, Dv) sum of R_j phi_k(k_j) v_j^T   (compute dtype: float32 or float64)
    k_sum: (S, H, 2D)     sum of phi_k(k_j)
    count: (S,)           number of tokens summed (int64)

    S is the batch size, or the number of sequences when ``cu_seqlens`` is used.
    """

    kv: torch.Tensor
    k_sum: torch.Tensor
    count: torch.Tensor

    @classmethod
    def zeros(cls, batch: int, heads: int, head_dim: int, value_dim: int, *, dtype: torch.dtype = torch.float32,
              device: torch.device | str | None = None) -> "NaLaState":
        """An empty state (no tokens seen yet)."""
        return cls(
            torch.zeros(batch, heads, 2 * head_dim, value_dim, dtype=dtype, device=device),
            torch.zeros(batch, heads, 2 * head_dim, dtype=dtype, device=device),
            torch.zeros(batch, dtype=torch.int64, device=device),
        )

    def index_select(self, index: torch.Tensor) -> "NaLaState":
        """Reorder/select sequences (e.g. for beam search)."""
        return NaLaState(self.kv.index_select(0, index), self.k_sum.index_select(0, index),
                         self.count.index_select(0, index))
