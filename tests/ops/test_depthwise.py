"""The Triton depthwise convolution (ops.depthwise) against the float64 convolution.

CPU: the kernels run in the Triton interpreter (TRITON_INTERPRET=1 per test) on small shapes whose tiles
(8 columns x 16 channels x 2 rows there) end mid-tile in every dimension. GPU (marker ``gpu``): the
compiled kernels at the shapes nalaformer_t runs, the tuner on. Every output starts as NaN (``POISON``), so
an element no program wrote fails. Errors are ||out - ref|| / ||ref||: fp32 <= 1e-5, bf16/fp16 <= 1e-2.
"""

from __future__ import annotations

import importlib.util

import pytest
import torch
import torch.nn.functional as F

from nalaformer.layers import DepthwiseConv2d
from nalaformer.ops.depthwise import depthwise_conv2d_reference, depthwise_conv2d_triton
from tests.ops.helpers import HAS_CUDA, TOL, rel_error as _rel, triton_test_env

pytestmark = pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="triton is not installed")


@pytest.fixture(autouse=True)
def _triton_env(monkeypatch, request):
    import nalaformer.ops.depthwise.triton as host

    with triton_test_env(monkeypatch, request, host):
        yield


def _inputs(shape, kernel, layout, dtype, device, with_bias, seed):
    gen = torch.Generator().manual_seed(seed)
    b, c, h, w = shape
    if layout == "view":  # channels contiguous, pixels 3C apart: a chunk of a (B, H, W, 3C) projection
        x = torch.randn(b, h, w, 3 * c, generator=gen)[..., c:2 * c].permute(0, 3, 1, 2)
    else:
        x = torch.randn(shape, generator=gen)
        x = x.contiguous(memory_format=torch.channels_last) if layout == "channels_last" else x
    weight = torch.randn(c, 1, *kernel, generator=gen) / kernel[0]
    bias = torch.randn(c, generator=gen) if with_bias else None
    grad_out = torch.randn(shape, generator=gen)
    to = lambda t: None if t is None else t.to(device=device, dtype=dtype)
    return to(x), to(weight), to(bias), to(grad_out)


def check(shape, kernel, layout="channels_last", dtype=torch.float32, device="cpu", with_bias=True, seed=0):
    x, weight, bias, grad_out = _inputs(shape, kernel, layout, dtype, device, with_bias, seed)
    leaves = [t.requires_grad_() for t in (x, weight, bias) if t is not None]
    out = depthwise_conv2d_triton(x, weight, bias)
    assert out.shape == x.shape and out.dtype == dtype and out.is_contiguous(memory_format=torch.channels_last)
    grads = torch.autograd.grad(out, leaves, grad_out)
    refs = [t.detach().double().requires_grad_() for t in leaves]
    ref = depthwise_conv2d_reference(refs[0], refs[1], refs[2] if with_bias else None)
    ref_grads = torch.autograd.grad(ref, refs, grad_out.double())
    tol = TOL[dtype]
    assert _rel(out, ref) <= tol
    for name, got, want in zip(("x", "weight", "bias"), grads, ref_grads):
        assert got.shape == want.shape and got.dtype == dtype, name
        assert _rel(got, want) <= tol, name


@pytest.mark.parametrize("shape,kernel,layout", [
    ((2, 20, 7, 19), (3, 3), "channels_last"),  # 3 column tiles, 2 channel tiles, rows end mid-tile
    ((3, 33, 9, 5), (5, 5), "view"),  # the lepe's strided view of v
    ((1, 5, 1, 1), (5, 5), "contiguous"),  # N = 1: every tap but the centre is padding
    ((2, 17, 4, 6), (3, 5), "contiguous"),  # NCHW input (copied), non-square kernel
])
def test_forward_and_gradients_equal_float64(shape, kernel, layout):
    check(shape, kernel, layout, seed=sum(shape))


def test_without_bias_and_in_half_precision():
    check((2, 24, 5, 9), (3, 3), with_bias=False, seed=3)
    check((2, 18, 6, 5), (5, 5), dtype=torch.float16, seed=4)
    check((1, 20, 3, 10), (3, 3), dtype=torch.bfloat16, seed=5)


def test_empty_batch():
    x = torch.randn(0, 6, 5, 5, requires_grad=True)
    weight, bias = torch.randn(6, 1, 3, 3, requires_grad=True), torch.randn(6, requires_grad=True)
    out = depthwise_conv2d_triton(x, weight, bias)
    assert out.shape == x.shape
    dx, dweight, dbias = torch.autograd.grad(out, (x, weight, bias), torch.randn(0, 6, 5, 5))
    assert dx.shape == x.shape and not dweight.any() and not dbias.any()


def test_autocast_output_has_the_autocast_dtype():
    x, weight, bias, _ = _inputs((2, 12, 5, 6), (3, 3), "channels_last", torch.float32, "cpu", True, 6)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = depthwise_conv2d_triton(x, weight, bias)
    assert out.dtype == torch.bfloat16
    assert _rel(out, depthwise_conv2d_reference(x.double(), weight.double(), bias.double())) <= 1e-2


def test_only_the_gradients_asked_for():
    """Only the weight wants a gradient (x and bias frozen): no input-gradient launch, the same dweight."""
    x, weight, bias, grad_out = _inputs((2, 10, 4, 5), (3, 3), "channels_last", torch.float32, "cpu", True, 7)
    weight.requires_grad_()
    (dweight,) = torch.autograd.grad(depthwise_conv2d_triton(x, weight, bias), weight, grad_out)
    ref_weight = weight.detach().double().requires_grad_()
    ref = depthwise_conv2d_reference(x.double(), ref_weight, bias.double())
    assert _rel(dweight, torch.autograd.grad(ref, ref_weight, grad_out.double())[0]) <= 1e-5


def test_custom_ops_pass_opcheck():
    x, weight, bias, _ = _inputs((2, 20, 5, 9), (3, 3), "channels_last", torch.float32, "cpu", True, 8)
    x.requires_grad_(), weight.requires_grad_(), bias.requires_grad_()
    checks = ("test_schema", "test_faketensor", "test_autograd_registration", "test_aot_dispatch_dynamic")
    torch.library.opcheck(torch.ops.nalaformer.depthwise_conv2d.default, (x, weight, bias, torch.float32),
                          test_utils=checks)
    grad_out = torch.randn(2, 5, 9, 20).permute(0, 3, 1, 2)  # channels-last, as the forward's output
    for has_bias, need_x, need_w in ((True, True, True), (False, False, True), (True, True, False)):
        torch.library.opcheck(torch.ops.nalaformer.depthwise_conv2d_bwd.default,
                              (grad_out, x.detach(), weight.detach(), has_bias, need_x, need_w),
                              test_utils=("test_schema", "test_faketensor"))


def test_bad_inputs_are_named():
    x, weight = torch.randn(1, 4, 3, 3), torch.randn(4, 1, 3, 3)
    with pytest.raises(ValueError, match="weight: expected"):
        depthwise_conv2d_triton(x, torch.randn(4, 1, 2, 2))
    with pytest.raises(ValueError, match="bias: expected"):
        depthwise_conv2d_triton(x, weight, torch.randn(5))
    with pytest.raises(ValueError, match="x: expected a"):
        depthwise_conv2d_triton(x[0], weight)
    with pytest.raises(ValueError, match="x: expected float32"):
        depthwise_conv2d_triton(x.double(), weight)


def test_devices_and_the_raw_op_are_checked():
    x = torch.randn(1, 4, 3, 3)
    with pytest.raises(ValueError, match="weight: expected a tensor on x's device"):
        depthwise_conv2d_triton(x, torch.randn(4, 1, 3, 3, device="meta"))
    with pytest.raises(ValueError, match="weight: expected"):  # torch.ops.nalaformer.* checks too
        torch.ops.nalaformer.depthwise_conv2d(x, torch.randn(4, 1, 2, 2), None, torch.float32)


def test_offsets_beyond_int32_are_copied_or_refused():
    from nalaformer.ops.depthwise.triton import _channels_minor

    wide = torch.empty(1, device="meta").as_strided((1, 4, 3, 3), (0, 1, 2 ** 30, 2 ** 29))  # pixels 2^29+ apart
    copy = _channels_minor(wide)
    assert copy.is_contiguous(memory_format=torch.channels_last)
    with pytest.raises(ValueError, match="x: one image of at most"):
        _channels_minor(torch.empty(1, 2 ** 16, 2 ** 8, 2 ** 8, device="meta"))


def test_cpu_tensors_need_the_interpreter(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET")
    with pytest.raises(ValueError, match="TRITON_INTERPRET"):
        depthwise_conv2d_triton(torch.randn(1, 4, 3, 3), torch.randn(4, 1, 3, 3))


# ---- GPU: compiled kernels, the model's shapes --------------------------------------------------------------
@pytest.mark.gpu
@pytest.mark.skipif(not HAS_CUDA, reason="needs CUDA")
@pytest.mark.parametrize("shape,kernel", [((16, 256, 56, 56), (3, 3)), ((16, 64, 56, 56), (5, 5)),
                                          ((8, 128, 28, 28), (3, 3)), ((4, 512, 7, 7), (5, 5)),
                                          ((2, 64, 224, 224), (3, 3)), ((3, 37, 13, 1), (3, 5))])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("layout", ["channels_last", "view"])
def test_gpu_forward_and_gradients_equal_float64(shape, kernel, dtype, layout):
    check(shape, kernel, layout, dtype=dtype, device="cuda", seed=sum(shape))


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_CUDA, reason="needs CUDA")
def test_gpu_module_form_compiled_with_autocast():
    """DepthwiseConv2d(gpu_form="triton") compiled (fullgraph) in bf16 autocast against the float64 convolution."""
    conv = DepthwiseConv2d(96, 5).cuda()
    conv.gpu_form = "triton"
    compiled = torch.compile(conv, fullgraph=True)
    x = torch.randn(8, 96, 28, 28, device="cuda").contiguous(memory_format=torch.channels_last).requires_grad_()
    ref_in = [t.detach().double().requires_grad_() for t in (x, conv.weight, conv.bias)]
    ref = F.conv2d(ref_in[0], ref_in[1], ref_in[2], padding=2, groups=96)
    grad_out = torch.randn_like(ref)
    out = compiled(x)
    assert _rel(out, ref) <= 1e-5
    grads = torch.autograd.grad(out, (x, conv.weight, conv.bias), grad_out.float())
    for got, want in zip(grads, torch.autograd.grad(ref, ref_in, grad_out)):
        assert _rel(got, want) <= 1e-5
    with torch.autocast("cuda", dtype=torch.bfloat16):
        half = compiled(x)
    assert half.dtype == torch.bfloat16 and _rel(half, ref) <= 1e-2
