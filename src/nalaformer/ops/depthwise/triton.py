"""Host side of the Triton depthwise convolution: launch plans, tuning, and the custom ops (with their
backward) that eager calls and ``torch.compile`` both go through.

  nalaformer::depthwise_conv2d      (x, weight, bias?, out_dtype) -> y          1 launch
  nalaformer::depthwise_conv2d_bwd  (dy, x, weight, has_bias, need_x, need_w) -> (dx, dweight, dbias)
                                    dx: the forward kernel with mirrored taps (1 launch); dweight, dbias:
                                    per-program partial sums (1 launch) and their sum over programs

Every tensor is read channels-last (C stride 1: channels_last images and the permuted (B, H, W, C) views the
blocks hold); other layouts are copied to channels_last first. Outputs are channels_last.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import torch
from torch import Tensor

from ..autocast import autocast_disabled
from ..triton import _tune
from ..triton._loader import interpreter_enabled, load_kernels
from .reference import check_depthwise

__all__ = ["depthwise_conv2d_triton"]

POISON = False  # tests set this: every output the kernels must fill starts as NaN
_SOURCE = Path(__file__).with_name("_kernels.py")
_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
# a few tiles for the tuner (the first is the default without tuning): ROWS x BLOCK_W positions x BLOCK_C channels
_FWD_CONFIGS = ({"ROWS": 4, "BLOCK_W": 32, "BLOCK_C": 64, "num_warps": 4},
                {"ROWS": 8, "BLOCK_W": 8, "BLOCK_C": 64, "num_warps": 4},
                {"ROWS": 8, "BLOCK_W": 16, "BLOCK_C": 64, "num_warps": 8},
                {"ROWS": 4, "BLOCK_W": 16, "BLOCK_C": 128, "num_warps": 8})
_WGRAD_CONFIGS = ({"ROWS": 4, "BLOCK_W": 32, "BLOCK_C": 64, "num_warps": 8},
                  {"ROWS": 8, "BLOCK_W": 8, "BLOCK_C": 64, "num_warps": 4},
                  {"ROWS": 8, "BLOCK_W": 16, "BLOCK_C": 64, "num_warps": 8},
                  {"ROWS": 4, "BLOCK_W": 16, "BLOCK_C": 128, "num_warps": 8})
_INTERPRET_CONFIG = {"BLOCK_W": 8, "BLOCK_C": 16, "ROWS": 2, "num_warps": 1}


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


def _candidates(configs, channels: int, width: int) -> list[dict]:
    """The configs whose tile is not mostly padding at this width and channel count (the first always)."""
    keep = [c for c in configs[1:] if c["BLOCK_C"] <= max(64, channels) and c["BLOCK_W"] <= max(8, 2 * width)]
    return [configs[0], *keep]


def _channels_minor(t: Tensor, name: str = "x") -> Tensor:
    """t itself when its channels are contiguous (stride 1) and its in-image offsets fit int32 (the kernels'
    index type), else a channels_last copy."""
    def fits(u):
        _, c, h, w = u.shape
        return (h - 1) * abs(u.stride(2)) + (w - 1) * abs(u.stride(3)) + c < 2 ** 31

    if (t.stride(1) == 1 or t.shape[1] == 1) and fits(t):
        return t
    t = t.contiguous(memory_format=torch.channels_last)
    if not fits(t):
        raise ValueError(f"{name}: one image of at most 2^31 - 1 elements, got shape {tuple(t.shape)}")
    return t


def _empty(shape, dtype, device) -> Tensor:
    if POISON:
        return torch.full(tuple(shape), float("nan"), dtype=dtype, device=device)
    return torch.empty(tuple(shape), dtype=dtype, device=device)


def _empty_nhwc(shape, dtype, device) -> Tensor:
    b, c, h, w = shape
    return _empty((b, h, w, c), dtype, device).permute(0, 3, 1, 2)


def _interpret(t: Tensor) -> bool:
    if t.device.type == "cuda":
        return False
    if not interpreter_enabled():
        raise ValueError(f"x: the Triton depthwise convolution runs on CUDA tensors (or on CPU with "
                         f"TRITON_INTERPRET=1), got a tensor on {t.device}")
    return True


_CHOSEN: dict[tuple, dict] = {}  # (kernel, shape key, device) -> its config: later calls skip the tuner


def _run_tuned(name: str, key: tuple, configs, src: Tensor, run) -> None:
    """Run ``run`` with the config the tuner picks for this shape (timing the candidates on its first call)."""
    if _interpret(src):
        run(_INTERPRET_CONFIG)
        return
    fast = (name, key, src.device)
    cfg = _CHOSEN.get(fast)
    if cfg is None:
        cfg, _ = _tune.choose(name, key, _candidates(configs, src.shape[1], src.shape[3]), run, src.device)
        _CHOSEN[fast] = cfg
    run(cfg)


def _conv(x: Tensor, taps: Tensor, bias: Optional[Tensor], out: Tensor, kh: int, kw: int, flip: bool) -> None:
    """out = x conv taps (+ bias); mirrored taps when ``flip`` (the input gradient). taps (kh*kw, C)."""
    kern = load_kernels(_interpret(x), _SOURCE, __package__)
    b, c, h, w = x.shape

    def run(cfg):
        grid = (b * _cdiv(h, cfg["ROWS"]) * _cdiv(w, cfg["BLOCK_W"]), _cdiv(c, cfg["BLOCK_C"]))
        kern.dwconv_fwd[grid](x, taps, taps if bias is None else bias, out, h, w, c,
                              x.stride(0), x.stride(2), x.stride(3), out.stride(0), out.stride(2), out.stride(3),
                              KH=kh, KW=kw, FLIP=flip, HAS_BIAS=bias is not None, ROWS=cfg["ROWS"],
                              BLOCK_W=cfg["BLOCK_W"], BLOCK_C=cfg["BLOCK_C"], num_warps=cfg["num_warps"])

    key = (tuple(x.shape), kh, kw, str(x.dtype), str(out.dtype), flip, bias is not None)
    _run_tuned("dwconv_fwd", key, _FWD_CONFIGS, x, run)


def _weight_grad(x: Tensor, dy: Tensor, kh: int, kw: int, with_bias: bool) -> tuple[Tensor, Optional[Tensor]]:
    """(sum over images and positions of dy * shifted x per tap (C, kh*kw), sum of dy (C,) or None), fp32."""
    kern = load_kernels(_interpret(x), _SOURCE, __package__)
    b, c, h, w = x.shape
    sums = {}

    def run(cfg):
        programs = b * _cdiv(h, cfg["ROWS"]) * _cdiv(w, cfg["BLOCK_W"])
        parts = _empty((programs, kh * kw, c), torch.float32, x.device)
        bias_parts = _empty((programs, c), torch.float32, x.device) if with_bias else parts
        kern.dwconv_wgrad[(programs, _cdiv(c, cfg["BLOCK_C"]))](
            x, dy, parts, bias_parts, h, w, c, x.stride(0), x.stride(2), x.stride(3),
            dy.stride(0), dy.stride(2), dy.stride(3), KH=kh, KW=kw, HAS_BIAS=with_bias, ROWS=cfg["ROWS"],
            BLOCK_W=cfg["BLOCK_W"], BLOCK_C=cfg["BLOCK_C"], num_warps=cfg["num_warps"])
        sums["w"], sums["b"] = parts, (bias_parts if with_bias else None)

    key = (tuple(x.shape), kh, kw, str(x.dtype), str(dy.dtype), with_bias)
    _run_tuned("dwconv_wgrad", key, _WGRAD_CONFIGS, x, run)
    dbias = sums["b"].sum(0) if with_bias else None
    return sums["w"].sum(0).t(), dbias


def _taps(weight: Tensor) -> Tensor:
    """(C, 1, kh, kw) -> (kh*kw, C) contiguous: one tap's weights are one coalesced load."""
    return weight.reshape(weight.shape[0], -1).t().contiguous()


@torch.library.custom_op("nalaformer::depthwise_conv2d", mutates_args=())
def _fwd(x: Tensor, weight: Tensor, bias: Optional[Tensor], out_dtype: torch.dtype) -> Tensor:
    kh, kw = check_depthwise(x, weight, bias)  # also here: the raw op is public (torch.ops.nalaformer)
    x = _channels_minor(x)
    out = _empty_nhwc(x.shape, out_dtype, x.device)
    if x.numel() == 0:  # no programs to launch
        return out
    _conv(x, _taps(weight), None if bias is None else bias.contiguous(), out, kh, kw, flip=False)
    return out


@_fwd.register_fake
def _fwd_fake(x, weight, bias, out_dtype):
    return _empty_nhwc(x.shape, out_dtype, x.device)


@torch.library.custom_op("nalaformer::depthwise_conv2d_bwd", mutates_args=())
def _bwd(dy: Tensor, x: Tensor, weight: Tensor, has_bias: bool, need_x: bool,
         need_w: bool) -> tuple[Tensor, Tensor, Tensor]:
    channels, (kh, kw) = x.shape[1], weight.shape[-2:]
    if dy.shape != x.shape:
        raise ValueError(f"dy: expected the output's shape {tuple(x.shape)}, got {tuple(dy.shape)}")
    dy = _channels_minor(dy, "dy")
    empty = x.new_empty(0)
    if x.numel() == 0:  # no positions: a zero weight gradient, an empty input gradient
        dx = _empty_nhwc(x.shape, x.dtype, x.device) if need_x else empty
        zeros = weight.new_zeros(weight.shape) if need_w else empty.clone()
        return dx, zeros, (weight.new_zeros(channels) if need_w and has_bias else empty.clone())
    dx = empty
    if need_x:
        dx = _empty_nhwc(x.shape, x.dtype, x.device)
        _conv(dy, _taps(weight), None, dx, kh, kw, flip=True)
    dweight, dbias = empty.clone(), empty.clone()
    if need_w:
        taps, bias_sum = _weight_grad(_channels_minor(x), dy, kh, kw, has_bias)  # need_w: weight or bias
        dweight = taps.contiguous().reshape(channels, 1, kh, kw).to(weight.dtype)
        dbias = bias_sum.to(weight.dtype) if has_bias else dbias
    return dx, dweight, dbias


@_bwd.register_fake
def _bwd_fake(dy, x, weight, has_bias, need_x, need_w):
    dx = _empty_nhwc(x.shape, x.dtype, x.device) if need_x else x.new_empty(0)
    dweight = torch.empty_like(weight, memory_format=torch.contiguous_format) if need_w else x.new_empty(0)
    dbias = weight.new_empty((x.shape[1],)) if need_w and has_bias else x.new_empty(0)
    return dx, dweight, dbias


def _setup_context(ctx, inputs, output):
    x, weight, bias, _out_dtype = inputs
    ctx.save_for_backward(x, weight)
    ctx.bias_dtype = None if bias is None else bias.dtype


def _backward(ctx, dy):
    x, weight = ctx.saved_tensors
    need_x, need_w, need_b = ctx.needs_input_grad[:3]
    if not (need_x or need_w or need_b):
        return None, None, None, None
    has_bias = ctx.bias_dtype is not None
    dx, dweight, dbias = _bwd(dy, x, weight, has_bias, need_x, need_w or need_b)
    return (dx if need_x else None, dweight if need_w else None,
            dbias.to(ctx.bias_dtype) if need_b else None, None)


_fwd.register_autograd(_backward, setup_context=_setup_context)


def depthwise_conv2d_triton(x: Tensor, weight: Tensor, bias: Optional[Tensor] = None) -> Tensor:
    """Depthwise stride-1 'same' convolution (odd kernel, zero padding) in one fused Triton kernel.

    x (B, C, H, W) float32/bfloat16/float16 on CUDA (or CPU with ``TRITON_INTERPRET=1``), weight (C, 1, kh, kw),
    bias (C,) or None -> (B, C, H, W) channels_last; equal to ``F.conv2d(x, weight, bias, padding=(kh // 2,
    kw // 2), groups=C)`` up to the order of the fp32 additions. Under autocast the output has the autocast dtype
    (as the convolution's), computed from x and the weights as they are (no rounded copies). The zero padding
    takes part in the products: a NaN or inf tap makes every output it touches (and, in the backward, every
    input-gradient position) NaN, the image border included, where aten's convolution skips the padding.
    """
    check_depthwise(x, weight, bias)
    for name, t in (("x", x), ("weight", weight), ("bias", bias)):
        if t is not None and t.dtype not in _DTYPES:
            raise ValueError(f"{name}: expected float32, bfloat16 or float16, got {t.dtype}")
    for name, t in (("weight", weight), ("bias", bias)):
        if t is not None and t.device != x.device:
            raise ValueError(f"{name}: expected a tensor on x's device {x.device}, got {t.device}")
    out_dtype = x.dtype
    try:
        if torch.is_autocast_enabled(x.device.type):
            out_dtype = torch.get_autocast_dtype(x.device.type)
    except RuntimeError:  # a device type autocast does not know
        pass
    with autocast_disabled(x.device.type):
        return _fwd(x, weight, bias, out_dtype)
