"""RMSNorm of the language-model blocks and of the per-head attention output."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..ops.autocast import autocast_disabled

__all__ = ["RMSNorm"]


class RMSNorm(nn.Module):
    """x / rms(x) * weight over the last dim (..., dim); output in the input dtype.

    One call of ``torch.nn.functional.rms_norm`` with the weight in the input's dtype, outside autocast:
    PyTorch's fused kernel (one read, one write; statistics accumulated in float32 for 16-bit inputs)
    instead of the seven elementwise passes of the textbook formula. A weight of another dtype would make
    PyTorch fall back to the unfused composite.
    """

    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with autocast_disabled(x.device.type):  # (a no-op context when autocast is off, as in decoding)
            return F.rms_norm(x, (x.shape[-1],), self.weight.to(x.dtype), self.eps)

    def extra_repr(self) -> str:
        return f"{self.weight.numel()}, eps={self.eps}"
