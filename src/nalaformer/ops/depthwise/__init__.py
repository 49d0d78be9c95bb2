"""Depthwise stride-1 'same' convolution (the NaLaFormer blocks' position, FFN and lepe convolutions): the
reference semantics and a fused Triton kernel (forward, input and weight gradients)."""

from .reference import check_depthwise, depthwise_conv2d_reference
from .triton import depthwise_conv2d_triton

__all__ = ["check_depthwise", "depthwise_conv2d_reference", "depthwise_conv2d_triton"]
