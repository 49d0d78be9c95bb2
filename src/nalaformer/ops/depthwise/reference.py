"""What the depthwise convolution computes, and the argument checks every form shares."""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["check_depthwise", "depthwise_conv2d_reference"]


def check_depthwise(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> tuple[int, int]:
    """(kh, kw) of a valid call: x (B, C, H, W), weight (C, 1, kh, kw) with odd kh, kw, bias (C,) or None."""
    if x.dim() != 4:
        raise ValueError(f"x: expected a (B, C, H, W) tensor, got shape {tuple(x.shape)}")
    channels, (kh, kw) = x.shape[1], weight.shape[-2:]
    if weight.shape != (channels, 1, kh, kw) or kh % 2 == 0 or kw % 2 == 0:
        raise ValueError(f"weight: expected ({channels}, 1, kh, kw) with odd kh, kw for x of shape "
                         f"{tuple(x.shape)}, got {tuple(weight.shape)}")
    if bias is not None and bias.shape != (channels,):
        raise ValueError(f"bias: expected shape ({channels},) or None, got {tuple(bias.shape)}")
    return kh, kw


def depthwise_conv2d_reference(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None):
    """y[b, c, h, w] = sum_ij x[b, c, h + i - kh//2, w + j - kw//2] * weight[c, 0, i, j] + bias[c], zero outside
    the image: ``F.conv2d`` with 'same' padding and one group per channel. (B, C, H, W) -> (B, C, H, W)."""
    kh, kw = check_depthwise(x, weight, bias)
    return F.conv2d(x, weight, bias, padding=(kh // 2, kw // 2), groups=x.shape[1])
