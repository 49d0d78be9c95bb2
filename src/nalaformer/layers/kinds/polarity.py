"""``polarity``: polarity-aware linear attention (PolaFormer; Meng et al., ICLR 2025).

q and k are divided by a learnable per-channel scale softplus(s) and split into positive and negative
parts raised to a learnable per-channel power p = 1 + alpha * sigmoid(w) (alpha = 4, w initialised at 0,
so p starts at 3)::

    phi_k = [k+^p, k-^p]                     (2D features)
    same-sign map:     [q+^p, q-^p] . phi_k   (q+k+ and q-k- pairs)  -> first half of v
    opposite-sign map: [q-^p, q+^p] . phi_k   (q-k+ and q+k- pairs)  -> second half of v

each half normalised by its own row sum, as in the authors' released code (ZacharyMeng/PolaFormer).
The paper writes the two maps combined by learnable coefficient matrices; the released code (followed
here) splits v in two halves instead. In vision layers a per-head depthwise 5x5 conv of v is added to
the output, as in the released code.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .base import LinearAttentionCore, as_compute

__all__ = ["PolarityCore", "polarity_feature_maps"]

_INIT_SCALE = math.log(2.0)  # softplus(0)
ALPHA = 4.0


def _signed_powers(x: torch.Tensor, power) -> tuple[torch.Tensor, torch.Tensor]:
    """relu(x)^p and relu(-x)^p, 0 (with zero gradients, also for p) where the part is 0."""
    pos, neg = F.relu(x), F.relu(-x)

    def pw(t):
        nz = t > 0
        return torch.where(nz, torch.where(nz, t, 1.0).pow(power), 0.0)

    return pw(pos), pw(neg)


def polarity_feature_maps(q: torch.Tensor, k: torch.Tensor, power=3.0, scale=_INIT_SCALE):
    """phi_q (..., 2, 2D) (same-sign, opposite-sign) and phi_k (..., 2D); ``power`` > 0 and ``scale`` > 0
    broadcast to (..., D)."""
    q, k = as_compute(q), as_compute(k)
    if isinstance(scale, torch.Tensor):
        scale = scale.to(q.dtype)
    if isinstance(power, torch.Tensor):
        power = power.to(q.dtype)
    q_pos, q_neg = _signed_powers(q / scale, power)
    k_pos, k_neg = _signed_powers(k / scale, power)
    same, opposite = torch.cat([q_pos, q_neg], -1), torch.cat([q_neg, q_pos], -1)
    return torch.stack([same, opposite], -2), torch.cat([k_pos, k_neg], -1)


class PolarityCore(LinearAttentionCore):
    """PolaFormer's attention; learnable ``scale`` (H, D) and ``power`` (H, D). Dv must be even."""

    name = "polarity"
    vision_dwc = 5
    groups = 2

    def __init__(self, num_heads: int, head_dim: int, *, params=None, eps: float = 1e-6):
        super().__init__(num_heads, head_dim, eps=eps)
        if head_dim % 2:
            raise ValueError(f"head_dim: polarity splits v in two halves, so it needs an even head dim, got {head_dim}")
        self.scale = nn.Parameter(torch.zeros(num_heads, head_dim))
        self.power = nn.Parameter(torch.zeros(num_heads, head_dim))


    def feature_params(self) -> dict:
        return {"power": 1 + ALPHA * torch.sigmoid(self.power), "scale": F.softplus(self.scale)}

    @staticmethod
    def feature_maps(q, k, power=3.0, scale=_INIT_SCALE):
        return polarity_feature_maps(q, k, power, scale)
