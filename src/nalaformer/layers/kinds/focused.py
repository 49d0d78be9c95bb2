"""``focused``: focused linear attention (FLatten; Han et al., ICCV 2023).

phi_p(x) = ||r|| * r^p / ||r^p||, r = (relu(x) + 1e-6) / softplus(s): a learnable per-channel scale s
(initialised at 0) and the focusing power p (3). The map keeps the norm and sharpens the direction
towards its largest entries. r^p / ||r^p|| is computed as u^p / ||u^p|| with u = r / max(r), which is the
same value and stays finite for any input norm. In vision layers a per-head depthwise 5x5 convolution of
v is added to the output (the paper's rank restoration module).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .base import LinearAttentionCore, as_compute

__all__ = ["FocusedCore", "focused_feature_map"]

_INIT_SCALE = math.log(2.0)  # softplus(0): the scale of a freshly initialised layer
_FLOOR = 1e-6


def focused_feature_map(x: torch.Tensor, power: float = 3.0, scale=_INIT_SCALE) -> torch.Tensor:
    """phi_p: (..., D) -> (..., D) in float32 (float64 for float64 input); ``scale`` > 0 broadcasts to x."""
    x = as_compute(x)
    r = (F.relu(x) + _FLOOR) / (scale.to(x.dtype) if isinstance(scale, torch.Tensor) else scale)
    top = r.amax(-1, keepdim=True)
    u = (r / top) ** power
    return torch.linalg.vector_norm(r, dim=-1, keepdim=True) * u / torch.linalg.vector_norm(u, dim=-1, keepdim=True)


class FocusedCore(LinearAttentionCore):
    """Focused linear attention; learnable ``scale`` (H, D) (softplus of it divides q and k)."""

    name = "focused"
    vision_dwc = 5

    def __init__(self, num_heads: int, head_dim: int, *, params=None, eps: float = 1e-6, power: float = 3.0):
        super().__init__(num_heads, head_dim, eps=eps)
        if not (isinstance(power, (int, float)) and math.isfinite(power) and power >= 1):
            raise ValueError(f"power: expected a finite focusing power >= 1, got {power!r}")
        self.power = float(power)
        self.scale = nn.Parameter(torch.zeros(num_heads, head_dim))


    def feature_params(self) -> dict:
        return {"power": self.power, "scale": F.softplus(self.scale)}

    @staticmethod
    def feature_maps(q, k, power: float = 3.0, scale=_INIT_SCALE):
        return focused_feature_map(q, power, scale).unsqueeze(-2), focused_feature_map(k, power, scale)

    def extra_repr(self) -> str:
        return f"power={self.power:g}"
