"""DepthwiseConv2d and its dense small-image form against nn.Conv2d / F.conv2d (float64 reference)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.profiler import profile

from nalaformer.layers import DepthwiseConv2d, SmallImageConv2d, conv2d_dense, depthwise_conv2d_dense, \
    depthwise_conv2d_shifted


def _reference(x, weight, bias):
    kh, kw = weight.shape[-2:]
    return F.conv2d(x.double(), weight.double(), None if bias is None else bias.double(),
                    padding=(kh // 2, kw // 2), groups=x.shape[1])


def _rel(a, b):
    return ((a.double() - b).abs().max() / b.abs().max().clamp_min(1e-30)).item()


@pytest.mark.parametrize("shape,kernel", [((3, 8, 1, 1), (3, 3)), ((1, 8, 1, 1), (5, 5)), ((2, 16, 2, 2), (3, 3)),
                                          ((2, 4, 2, 2), (5, 5)), ((3, 6, 4, 4), (5, 5)), ((2, 5, 1, 3), (3, 5)),
                                          ((2, 3, 3, 5), (5, 3)), ((1, 4, 7, 9), (3, 3))])
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("with_bias", [True, False])
def test_dense_form_equals_conv2d_forward_and_backward(shape, kernel, channels_last, with_bias):
    gen = torch.Generator().manual_seed(sum(shape) + sum(kernel))
    x = torch.randn(shape, generator=gen)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    x.requires_grad_()
    weight = torch.randn(shape[1], 1, *kernel, generator=gen, requires_grad=True)
    bias = torch.randn(shape[1], generator=gen, requires_grad=True) if with_bias else None
    grad_out = torch.randn(shape, generator=gen)
    out = depthwise_conv2d_dense(x, weight, bias)
    ref = _reference(x, weight, bias)
    assert out.dtype == torch.float32 and out.shape == x.shape and torch.isfinite(out).all()
    assert out.is_contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    assert _rel(out, ref) <= 1e-5
    inputs = [x, weight] + ([bias] if with_bias else [])
    grads = torch.autograd.grad(out, inputs, grad_out)
    ref_inputs = [t.detach().double().requires_grad_() for t in inputs]
    ref_grads = torch.autograd.grad(_reference(*ref_inputs, *([None] if not with_bias else [])), ref_inputs,
                                    grad_out.double())
    for name, got, want in zip(["x", "weight", "bias"], grads, ref_grads):
        assert torch.isfinite(got).all(), name
        assert _rel(got, want) <= 1e-5, name


@pytest.mark.parametrize("shape,kernel", [((2, 8, 1, 1), (3, 3)), ((2, 6, 7, 9), (3, 3)), ((3, 4, 8, 8), (5, 5)),
                                          ((2, 5, 4, 6), (3, 5))])
@pytest.mark.parametrize("channels_last", [False, True])
def test_shifted_form_equals_conv2d_forward_and_backward(shape, kernel, channels_last):
    """The form inductor fuses (torch.compile on CUDA with gpu_form="shifted") is the same convolution."""
    gen = torch.Generator().manual_seed(11 + sum(shape))
    x = torch.randn(shape, generator=gen)
    x = (x.contiguous(memory_format=torch.channels_last) if channels_last else x).requires_grad_()
    weight = torch.randn(shape[1], 1, *kernel, generator=gen, requires_grad=True)
    bias = torch.randn(shape[1], generator=gen, requires_grad=True)
    out = depthwise_conv2d_shifted(x, weight, bias)
    assert out.shape == x.shape and _rel(out, _reference(x, weight, bias)) <= 1e-5
    grad_out = torch.randn(shape, generator=gen)
    grads = torch.autograd.grad(out, (x, weight, bias), grad_out)
    refs = [t.detach().double().requires_grad_() for t in (x, weight, bias)]
    for got, want in zip(grads, torch.autograd.grad(_reference(*refs), refs, grad_out.double())):
        assert torch.isfinite(got).all() and _rel(got, want) <= 1e-5
    with torch.autocast("cpu", dtype=torch.bfloat16):  # computes in the autocast dtype, as the convolution does
        assert depthwise_conv2d_shifted(x, weight, bias).dtype == torch.bfloat16
    with pytest.raises(ValueError, match="weight: expected"):
        depthwise_conv2d_shifted(x, weight[:, :, :2], bias)


def test_shifted_form_is_taken_only_when_compiling_on_cuda():
    conv = DepthwiseConv2d(4, 3)
    conv.gpu_form = "shifted"
    x = torch.randn(2, 4, 6, 6)
    assert "aten::convolution" in _ops(conv, x)  # eager CPU: nn.Conv2d


def test_dense_form_in_float64_and_bfloat16():
    gen = torch.Generator().manual_seed(7)
    x, weight, bias = torch.randn(2, 8, 2, 2, generator=gen), torch.randn(8, 1, 3, 3, generator=gen), torch.randn(8)
    ref = _reference(x, weight, bias)
    torch.testing.assert_close(depthwise_conv2d_dense(x.double(), weight.double(), bias.double()), ref,
                               rtol=1e-12, atol=1e-12)
    out = depthwise_conv2d_dense(x.bfloat16(), weight.bfloat16(), bias.bfloat16())
    assert out.dtype == torch.bfloat16 and _rel(out.float(), ref) <= 1e-2


def _ops(module, x):
    with profile() as prof:
        module(x)
    return {e.name for e in prof.events()}


@pytest.mark.parametrize("size,dense", [((1, 1), True), ((2, 2), True), ((3, 3), True), ((4, 4), False),
                                        ((8, 8), False)])
def test_module_takes_the_dense_form_for_images_no_larger_than_the_kernel(size, dense):
    conv = DepthwiseConv2d(6, 3)
    conv.dense_on_cpu = True
    x = torch.randn(2, 6, *size)
    ops = _ops(conv, x)
    assert ("aten::convolution" in ops) is not dense
    with torch.no_grad():
        torch.testing.assert_close(conv(x), F.conv2d(x, conv.weight, conv.bias, padding=1, groups=6))


@pytest.mark.parametrize("lacks_avx512", [True, False])
def test_module_decides_by_the_cpu_unless_told(monkeypatch, lacks_avx512):
    from nalaformer.layers import conv as conv_module

    monkeypatch.setattr(conv_module, "cpu_lacks_avx512", lambda: lacks_avx512)
    conv, x = DepthwiseConv2d(6, 3), torch.randn(2, 6, 2, 2)
    assert ("aten::convolution" in _ops(conv, x)) is not lacks_avx512
    conv.dense_on_cpu = not lacks_avx512
    assert ("aten::convolution" in _ops(conv, x)) is lacks_avx512


def test_cpu_capability_probe_follows_aten():
    from nalaformer.layers.conv import cpu_lacks_avx512

    assert cpu_lacks_avx512() is not torch.backends.cpu.get_cpu_capability().startswith("AVX512")


def test_module_is_a_drop_in_conv2d():
    torch.manual_seed(0)
    conv = DepthwiseConv2d(12, 5, bias=False)
    conv.dense_on_cpu = True
    plain = torch.nn.Conv2d(12, 12, 5, padding=2, groups=12, bias=False)
    assert isinstance(conv, torch.nn.Conv2d) and conv.padding == (2, 2) and conv.groups == 12
    assert conv.state_dict().keys() == plain.state_dict().keys()
    plain.load_state_dict(conv.state_dict())
    x = torch.randn(2, 12, 4, 4)  # 16 <= 25: the dense form, against oneDNN's
    torch.testing.assert_close(conv(x), plain(x), rtol=1e-5, atol=1e-6)


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="kernel_size"):
        DepthwiseConv2d(4, 4)
    with pytest.raises(ValueError, match="weight"):
        depthwise_conv2d_dense(torch.randn(1, 4, 2, 2), torch.randn(4, 1, 2, 2))
    with pytest.raises(ValueError, match="weight"):
        depthwise_conv2d_dense(torch.randn(1, 4, 2, 2), torch.randn(8, 1, 3, 3))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_compiled_shifted_form_on_cuda_matches_float64():
    """torch.compile of a DepthwiseConv2d with gpu_form="shifted" (inductor's fused kernel) against the
    float64 convolution: fp32 forward and gradients within 1e-5, bf16 autocast within 1e-2."""
    conv = DepthwiseConv2d(48, 5).cuda()
    conv.gpu_form = "shifted"
    compiled = torch.compile(conv)
    x = torch.randn(4, 48, 28, 28, device="cuda").contiguous(memory_format=torch.channels_last).requires_grad_()
    out = compiled(x)
    ref = _reference(x, conv.weight, conv.bias)
    assert _rel(out, ref) <= 1e-5
    grad_out = torch.randn_like(out)
    grads = torch.autograd.grad(out, (x, conv.weight, conv.bias), grad_out)
    refs = [t.detach().double().requires_grad_() for t in (x, conv.weight, conv.bias)]
    for got, want in zip(grads, torch.autograd.grad(_reference(*refs), refs, grad_out.double())):
        assert torch.isfinite(got).all() and _rel(got, want) <= 1e-5
    with torch.autocast("cuda", dtype=torch.bfloat16):
        half = compiled(x)
    assert half.dtype == torch.bfloat16 and _rel(half.float(), ref) <= 1e-2


@pytest.mark.parametrize("shape,out_chs,kernel,stride", [((3, 8, 2, 2), 12, 3, 2), ((2, 6, 1, 1), 4, 3, 1),
                                                         ((2, 5, 1, 1), 7, 3, 2), ((2, 4, 2, 3), 6, 5, 1),
                                                         ((2, 3, 4, 4), 5, 3, 2), ((1, 4, 3, 5), 3, 3, 1)])
@pytest.mark.parametrize("channels_last", [False, True])
def test_dense_conv_equals_conv2d_forward_and_backward(shape, out_chs, kernel, stride, channels_last):
    gen = torch.Generator().manual_seed(sum(shape) + out_chs + stride)
    x = torch.randn(shape, generator=gen)
    x = (x.contiguous(memory_format=torch.channels_last) if channels_last else x).requires_grad_()
    weight = torch.randn(out_chs, shape[1], kernel, kernel, generator=gen, requires_grad=True)
    bias = torch.randn(out_chs, generator=gen, requires_grad=True)
    out = conv2d_dense(x, weight, bias, stride)
    ref_in = [t.detach().double().requires_grad_() for t in (x, weight, bias)]
    ref = F.conv2d(*ref_in, stride=stride, padding=kernel // 2)
    assert out.shape == ref.shape and out.is_contiguous(memory_format=torch.channels_last)
    assert _rel(out, ref) <= 1e-5
    grad_out = torch.randn(ref.shape, generator=gen)
    for got, want in zip(torch.autograd.grad(out, (x, weight, bias), grad_out),
                         torch.autograd.grad(ref, ref_in, grad_out.double())):
        assert torch.isfinite(got).all() and _rel(got, want) <= 1e-5
    no_bias = F.conv2d(*ref_in[:2], stride=stride, padding=kernel // 2)
    assert _rel(conv2d_dense(x, weight, None, stride), no_bias) <= 1e-5


@pytest.mark.parametrize("size,stride,dense", [((2, 2), 2, True), ((1, 1), 1, True), ((1, 1), 2, True),
                                               ((3, 3), 2, False), ((2, 2), 1, False), ((4, 4), 2, False),
                                               ((8, 8), 1, False)])
def test_small_image_conv_takes_the_dense_form_only_where_it_is_cheaper(size, stride, dense):
    conv = SmallImageConv2d(6, 10, 3, stride=stride)
    x = torch.randn(2, 6, *size)
    assert ("aten::convolution" in _ops(conv, x)) is not dense
    with torch.no_grad():
        torch.testing.assert_close(conv(x), F.conv2d(x, conv.weight, conv.bias, stride, 1), rtol=1e-5, atol=1e-6)
    plain = torch.nn.Conv2d(6, 10, 3, stride, 1)
    assert isinstance(conv, torch.nn.Conv2d) and conv.state_dict().keys() == plain.state_dict().keys()
    with pytest.raises(ValueError, match="kernel_size"):
        SmallImageConv2d(6, 10, 2)
    with pytest.raises(ValueError, match="weight"):
        conv2d_dense(x, torch.randn(10, 5, 3, 3))
    with pytest.raises(ValueError, match="bias"):
        conv2d_dense(x, conv.weight, torch.randn(1))
    with pytest.raises(ValueError, match="stride"):
        conv2d_dense(x, conv.weight, None, 0)
    if size == (2, 2) and stride == 2:  # the dense form keeps the autocast dtype, as the convolution does
        with torch.autocast("cpu", dtype=torch.bfloat16):
            assert conv(x).dtype == torch.bfloat16


def test_unknown_gpu_form_is_named():
    conv = DepthwiseConv2d(4, 3)
    conv.gpu_form = "cuda-graphs"
    with pytest.raises(ValueError, match="gpu_form"):
        conv(torch.randn(1, 4, 5, 5))
