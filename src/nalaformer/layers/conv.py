"""Convolutional pieces of the NaLaFormer backbone: conv-BN units, the stride-4 stem, downsampling."""

from __future__ import annotations

from torch import nn

__all__ = ["ConvBnAct", "NaLaStem", "create_downsample"]


class ConvBnAct(nn.Module):
    """3x3 convolution (bias) -> BatchNorm -> optional activation. (B, C_in, H, W) -> (B, C_out, H/s, W/s)."""

    def __init__(self, in_chs: int, out_chs: int, stride: int = 1, act_layer: type[nn.Module] | None = None,
                 device=None, dtype=None):
        super().__init__()
        dd = {"device": device, "dtype": dtype}
        self.conv = nn.Conv2d(in_chs, out_chs, 3, stride=stride, padding=1, **dd)
        self.bn = nn.BatchNorm2d(out_chs, **dd)
        self.act = act_layer() if act_layer is not None else nn.Identity()

    def forward(self, x):
        return self.act(self.bn(self.conv(x)))


class NaLaStem(nn.Module):
    """Stride-4 stem (spec §6): Conv s2 (C/2) BN GELU, Conv (C/2) BN GELU, Conv (C/2) BN GELU, Conv s2 (C) BN.

    (B, in_chans, H, W) -> (B, out_chs, ceil(H/4), ceil(W/4)).
    """

    def __init__(self, in_chans: int = 3, out_chs: int = 64, act_layer: type[nn.Module] = nn.GELU,
                 device=None, dtype=None):
        super().__init__()
        dd = {"device": device, "dtype": dtype}
        mid = out_chs // 2
        self.in_chans = in_chans
        self.conv1 = ConvBnAct(in_chans, mid, stride=2, act_layer=act_layer, **dd)
        self.conv2 = ConvBnAct(mid, mid, act_layer=act_layer, **dd)
        self.conv3 = ConvBnAct(mid, mid, act_layer=act_layer, **dd)
        self.conv4 = ConvBnAct(mid, out_chs, stride=2, **dd)

    def forward(self, x):
        return self.conv4(self.conv3(self.conv2(self.conv1(x))))


def create_downsample(in_chs: int, out_chs: int, device=None, dtype=None) -> ConvBnAct:
    """Stage transition: 3x3 conv stride 2 (C_in -> C_out) + BatchNorm, halving H and W (rounding up)."""
    return ConvBnAct(in_chs, out_chs, stride=2, device=device, dtype=dtype)
