"""Convolutional pieces of the NaLaFormer backbone: conv-BN units, the stride-4 stem, downsampling,
and the depthwise "same" convolution of the blocks, with CPU fast paths for small images (dense forms of
both convolutions) and the GPU forms of the depthwise one (cuDNN, our Triton kernels, a shifted form)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..ops.depthwise import check_depthwise, depthwise_conv2d_triton

__all__ = ["ConvBnAct", "DepthwiseConv2d", "NaLaStem", "SmallImageConv2d", "conv2d_dense", "create_downsample",
           "depthwise_conv2d_dense", "depthwise_conv2d_shifted", "DEPTHWISE_GPU_FORMS"]

DEPTHWISE_GPU_FORMS = ("cudnn", "shifted", "triton")


def _out_size(size: int, k: int, stride: int) -> int:
    return (size + 2 * (k // 2) - k) // stride + 1


def _tap_index(height: int, width: int, kh: int, kw: int, device, stride: int = 1) -> torch.Tensor:
    """(P, Q) kernel-tap index of a convolution with zero padding k//2 and ``stride`` over Q = height*width
    input positions into its P output positions: entry [p, q] is the tap of weight (flattened kh*kw) that
    carries input position q into output position p, or kh*kw (a zero slot) where q lies outside p's window."""
    out_rows = torch.arange(_out_size(height, kh, stride), device=device) * stride
    out_cols = torch.arange(_out_size(width, kw, stride), device=device) * stride
    rows, cols = torch.arange(height, device=device), torch.arange(width, device=device)
    dy = rows[None, :] - out_rows[:, None] + kh // 2  # (out row, in row)
    dx = cols[None, :] - out_cols[:, None] + kw // 2  # (out col, in col)
    inside = ((dy >= 0) & (dy < kh))[:, None, :, None] & ((dx >= 0) & (dx < kw))[None, :, None, :]
    tap = dy[:, None, :, None] * kw + dx[None, :, None, :]
    return torch.where(inside, tap, kh * kw).reshape(out_rows.numel() * out_cols.numel(), height * width)


def conv2d_dense(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None,
                 stride: int = 1) -> torch.Tensor:
    """A dense (groups=1) convolution with odd kernel, zero padding k//2 and ``stride`` as one matmul over the
    whole image, for images so small that each output sees most of them.

    x (B, C, H, W), weight (O, C, kh, kw), bias (O,) or None -> (B, O, H', W') channels_last; equal to
    ``F.conv2d(x, weight, bias, stride, padding=(kh // 2, kw // 2))``. The convolution is the (Q*C, P*O) matrix
    M[(q, c), (p, o)] = weight[o, c, tap(p, q)] over the Q input and P output positions, applied to the
    channels-last rows: P*Q multiply-adds per channel pair and image against P*kh*kw in the direct form, so it
    is the cheaper form when P*Q <= kh*kw (e.g. a stride-2 3x3 from 2x2 to 1x1: 2.5-3x oneDNN's fwd+bwd on a
    CPU, docs/benchmarks.md).
    """
    if x.dim() != 4 or weight.dim() != 4 or weight.shape[1] != x.shape[1] or weight.shape[2] % 2 == 0 \
            or weight.shape[3] % 2 == 0:
        raise ValueError(f"weight: expected (O, {x.shape[1] if x.dim() == 4 else 'C'}, kh, kw) with odd kh, kw "
                         f"for x of shape {tuple(x.shape)}, got {tuple(weight.shape)}")
    out_chs, in_chs, kh, kw = weight.shape
    if bias is not None and bias.shape != (out_chs,):
        raise ValueError(f"bias: expected shape ({out_chs},) or None, got {tuple(bias.shape)}")
    if stride < 1:
        raise ValueError(f"stride: expected a positive integer, got {stride}")
    batch, _, height, width = x.shape
    index = _tap_index(height, width, kh, kw, x.device, stride)  # (P, Q)
    taps = F.pad(weight.reshape(out_chs, in_chs, kh * kw), (0, 1))  # (O, C, kh*kw + 1), the last slot zero
    matrix = taps[:, :, index].permute(3, 1, 2, 0).reshape(height * width * in_chs, -1)  # (Q*C, P*O)
    out = x.permute(0, 2, 3, 1).reshape(batch, height * width * in_chs) @ matrix  # (B, P*O)
    out = out.view(batch, -1, out_chs)
    if bias is not None:
        out = out + bias.to(out.dtype)  # under autocast the matmul's dtype, as the convolution's
    return out.view(batch, _out_size(height, kh, stride), _out_size(width, kw, stride), out_chs).permute(0, 3, 1, 2)


# up to this many positions (2x2 images) the dense form multiplies and sums over channels-last rows: 1.4-2.7x
# its einsum there (AVX2, one thread), 2.4x slower at 4x4 (docs/benchmarks.md)
_BROADCAST_MAX_POSITIONS = 4


def depthwise_conv2d_dense(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """Depthwise stride-1 'same' convolution (odd kernel, zero padding k//2) as one dense spatial map per channel.

    x (B, C, H, W), weight (C, 1, kh, kw), bias (C,) or None -> (B, C, H, W) in x's memory format; equal to
    ``F.conv2d(x, weight, bias, padding=(kh // 2, kw // 2), groups=C)``. Each channel's convolution is the
    (N, N) matrix M[c, p, q] = weight[c, tap(p, q)] over the N = H*W positions, applied with one batched
    matmul: N*N multiply-adds per channel and image against N*kh*kw for the direct form, so it is the cheaper
    form when H*W <= kh*kw (images no larger than the kernel: the last stages of a small-input network).
    """
    kh, kw = check_depthwise(x, weight, bias)
    batch, channels, height, width = x.shape
    n = height * width
    taps = F.pad(weight.reshape(channels, kh * kw), (0, 1))  # (C, kh*kw + 1), the last slot zero
    spatial_map = taps[:, _tap_index(height, width, kh, kw, x.device)]  # (C, N, N): output p <- input q
    if n <= _BROADCAST_MAX_POSITIONS:  # a multiply-and-sum over channels-last rows (bmm loops over channels)
        rows = x.permute(0, 2, 3, 1).reshape(batch, 1, n, channels)  # (B, 1, q, C)
        out = (rows * spatial_map.permute(1, 2, 0)).sum(2)  # (B, p, C)
        out = out.reshape(batch, height, width, channels).permute(0, 3, 1, 2)
    else:
        out = torch.einsum("bcq,cpq->bcp", x.reshape(batch, channels, n), spatial_map)
        out = out.reshape(batch, channels, height, width)
    if bias is not None:
        out = out + bias.view(1, channels, 1, 1)
    layout = torch.channels_last if x.is_contiguous(memory_format=torch.channels_last) else torch.contiguous_format
    return out.contiguous(memory_format=layout)


def depthwise_conv2d_shifted(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """Depthwise stride-1 'same' convolution as kh*kw shifted, per-channel scaled views of the zero-padded input.

    x (B, C, H, W), weight (C, 1, kh, kw), bias (C,) or None -> (B, C, H, W); equal to ``F.conv2d(x, weight, bias,
    padding=(kh // 2, kw // 2), groups=C)`` up to the order of the additions. Eagerly it is slower than cuDNN and
    oneDNN (kh*kw passes); it exists for ``torch.compile``, whose inductor turns it into one pointwise kernel that
    can also take in the neighbouring elementwise work (and reductions for the weight gradient), where cuDNN's
    depthwise kernels are separate launches. Under autocast it computes in the autocast dtype, as the
    convolution does.
    """
    kh, kw = check_depthwise(x, weight, bias)
    batch, channels, height, width = x.shape
    if torch.is_autocast_enabled(x.device.type):
        dtype = torch.get_autocast_dtype(x.device.type)
        x, weight = x.to(dtype), weight.to(dtype)
        bias = None if bias is None else bias.to(dtype)
    padded = F.pad(x, (kw // 2, kw // 2, kh // 2, kh // 2))
    taps = weight.reshape(channels, kh * kw)
    out = None
    for i in range(kh):
        for j in range(kw):
            term = padded[:, :, i:i + height, j:j + width] * taps[:, i * kw + j].view(1, channels, 1, 1)
            out = term if out is None else out + term
    return out if bias is None else out + bias.view(1, channels, 1, 1)


def _is_compiling() -> bool:
    compiler = getattr(torch, "compiler", None)
    return bool(compiler is not None and hasattr(compiler, "is_compiling") and compiler.is_compiling())


_LACKS_AVX512 = not torch.backends.cpu.get_cpu_capability().upper().startswith("AVX512")  # read once: fixed per process


def cpu_lacks_avx512() -> bool:
    """True when aten dispatches below AVX-512 (the hardware lacks it, or ``ATEN_CPU_CAPABILITY`` lowers it)."""
    return _LACKS_AVX512


class DepthwiseConv2d(nn.Conv2d):
    """Depthwise k x k convolution, stride 1, zero 'same' padding: an ``nn.Conv2d(dim, dim, k, padding=k // 2,
    groups=dim)`` (same parameters and state dict) whose CPU forward takes :func:`depthwise_conv2d_dense` for
    images no larger than the kernel (H*W <= k*k) on CPUs without AVX-512: oneDNN's AVX2 depthwise kernels are
    slow there (5-40x at 1x1 and 2x2 images; the `make run` model trains 1.34x faster), while with AVX-512 they
    are not (the dense form was 0.86x with 2 threads; docs/benchmarks.md). ``dense_on_cpu`` True / False forces
    the choice, None (default) decides by the CPU. Other devices and larger images run ``nn.Conv2d`` (cuDNN on
    GPUs). ``gpu_form`` (class-wide, or per module) picks the CUDA form: ``"cudnn"`` (default), ``"triton"``
    (:func:`nalaformer.ops.depthwise.depthwise_conv2d_triton`, our fused kernels, eager and compiled) or
    ``"shifted"`` (under ``torch.compile`` only: :func:`depthwise_conv2d_shifted` for inductor to fuse). Measure
    them with ``bench vision --depthwise-form``. (B, dim, H, W) -> (B, dim, H, W).
    """

    dense_on_cpu: bool | None = None
    gpu_form: str = "cudnn"

    def __init__(self, dim: int, kernel_size: int = 3, bias: bool = True, device=None, dtype=None):
        if kernel_size % 2 == 0:
            raise ValueError(f"kernel_size: expected an odd size for 'same' padding, got {kernel_size}")
        super().__init__(dim, dim, kernel_size, padding=kernel_size // 2, groups=dim, bias=bias,
                         device=device, dtype=dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        kh, kw = self.kernel_size
        dense = cpu_lacks_avx512() if self.dense_on_cpu is None else self.dense_on_cpu
        if dense and x.device.type == "cpu" and x.dim() == 4 and x.shape[-2] * x.shape[-1] <= kh * kw:
            return depthwise_conv2d_dense(x, self.weight, self.bias)
        if self.gpu_form not in DEPTHWISE_GPU_FORMS:
            raise ValueError(f"gpu_form: expected one of {DEPTHWISE_GPU_FORMS}, got {self.gpu_form!r}")
        if x.is_cuda and self.gpu_form == "triton" and x.dim() == 4 and x.dtype != torch.float64:
            return depthwise_conv2d_triton(x, self.weight, self.bias)
        if x.is_cuda and self.gpu_form == "shifted" and x.dim() == 4 and _is_compiling():
            return depthwise_conv2d_shifted(x, self.weight, self.bias)
        return super().forward(x)


class SmallImageConv2d(nn.Conv2d):
    """``nn.Conv2d(in_chs, out_chs, k, stride, padding=k // 2)`` (same parameters and state dict) whose CPU
    forward takes :func:`conv2d_dense` when the image is so small that P*Q <= k*k (P output, Q input
    positions): the stage transitions of a small-input network (oneDNN's kernels are slowest there, most of
    all in the backward). Elsewhere, and on other devices, ``nn.Conv2d``. (B, C, H, W) -> (B, O, H', W')."""

    def __init__(self, in_chs: int, out_chs: int, kernel_size: int = 3, stride: int = 1, bias: bool = True,
                 device=None, dtype=None):
        if kernel_size % 2 == 0:
            raise ValueError(f"kernel_size: expected an odd size for padding k // 2, got {kernel_size}")
        super().__init__(in_chs, out_chs, kernel_size, stride=stride, padding=kernel_size // 2, bias=bias,
                         device=device, dtype=dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        kh, kw = self.kernel_size
        if x.device.type == "cpu" and x.dim() == 4:
            height, width = x.shape[-2:]
            positions = _out_size(height, kh, self.stride[0]) * _out_size(width, kw, self.stride[1])
            if self.stride[0] == self.stride[1] and positions * height * width <= kh * kw:
                return conv2d_dense(x, self.weight, self.bias, self.stride[0])
        return super().forward(x)


class ConvBnAct(nn.Module):
    """3x3 convolution (bias) -> BatchNorm -> optional activation. (B, C_in, H, W) -> (B, C_out, H/s, W/s)."""

    def __init__(self, in_chs: int, out_chs: int, stride: int = 1, act_layer: type[nn.Module] | None = None,
                 device=None, dtype=None):
        super().__init__()
        dd = {"device": device, "dtype": dtype}
        self.conv = SmallImageConv2d(in_chs, out_chs, 3, stride=stride, **dd)
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
