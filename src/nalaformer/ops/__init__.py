"""Functional NaLa ops: the public op, its reference, feature maps and rotary tables."""

from .feature_maps import nala_feature_maps
from .nala import nala_attention, nala_decode_step
from .params import NaLaParams
from .reference import nala_attention_reference
from .rope import apply_rotary, rope_1d, rope_2d
from .state import NaLaState

__all__ = [
    "nala_attention", "nala_decode_step", "nala_attention_reference", "nala_feature_maps", "rope_1d", "rope_2d",
    "apply_rotary", "NaLaState", "NaLaParams",
]
