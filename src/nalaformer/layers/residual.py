"""Residual-branch helpers: stochastic depth and LayerScale (channels-last)."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["DropPath", "LayerScale"]


class DropPath(nn.Module):
    """Stochastic depth: in training, zero a whole residual branch per sample with probability ``p``
    and rescale the survivors by 1/(1-p). Any shape (B, ...); identity in eval or with p = 0."""

    def __init__(self, p: float = 0.0):
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"p: expected a drop probability in [0, 1), got {p}")
        self.p = float(p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.p == 0.0 or not self.training:
            return x
        keep = 1.0 - self.p
        mask = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(keep)
        return x * mask.div_(keep)

    def extra_repr(self) -> str:
        return f"p={self.p:g}"


class LayerScale(nn.Module):
    """Per-channel learnable scale ``x * gamma`` on channels-last input (..., C); gamma starts at ``init_value``."""

    def __init__(self, dim: int, init_value: float = 1e-5, device=None, dtype=None):
        super().__init__()
        self.init_value = float(init_value)
        self.gamma = nn.Parameter(torch.empty(dim, device=device, dtype=dtype))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.constant_(self.gamma, self.init_value)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma

    def extra_repr(self) -> str:
        return f"dim={self.gamma.shape[0]}, init_value={self.init_value:g}"
