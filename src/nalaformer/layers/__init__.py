"""Reusable nn.Modules: the registry of attention kinds (``KINDS``), the 2-D attention frame around them,
the NaLaFormer block, stem, downsample and classifier head; the 1-D causal attention and the decoder
block of the LMs."""

from .attention2d import (
    ATTENTION_TYPES,
    GatedLepeAttention2d,
    KindAttention2d,
    NaLaAttention2d,
    SoftmaxAttention2d,
    create_attention2d,
)
from .classifier import NaLaClassifierHead
from .conv import (
    ConvBnAct,
    DepthwiseConv2d,
    NaLaStem,
    SmallImageConv2d,
    conv2d_dense,
    create_downsample,
    depthwise_conv2d_dense,
    depthwise_conv2d_shifted,
)
from .rotary2d import clear_rotary_cache, rotary_tables_2d
from .vision_block import ConvFFN, NaLaBlock
from .kinds import KINDS, AttentionCore, create_core
from .causal_attention import CausalAttention, CausalAttentionState
from .causal_conv import ShortConv
from .causal_layout import TokenLayout, build_layout
from .lm_block import CausalDecoderBlock, SwiGLU
from .lm_norm import RMSNorm

__all__ = [
    "GatedLepeAttention2d", "KindAttention2d", "NaLaAttention2d", "SoftmaxAttention2d", "ATTENTION_TYPES",
    "create_attention2d",
    "NaLaBlock", "ConvFFN", "NaLaStem", "ConvBnAct", "create_downsample", "NaLaClassifierHead",
    "DepthwiseConv2d", "depthwise_conv2d_dense", "depthwise_conv2d_shifted", "SmallImageConv2d", "conv2d_dense",
    "rotary_tables_2d", "clear_rotary_cache",
    "CausalAttention", "CausalAttentionState", "TokenLayout", "build_layout", "ShortConv", "CausalDecoderBlock",
    "SwiGLU", "RMSNorm", "KINDS", "AttentionCore", "create_core",
]
