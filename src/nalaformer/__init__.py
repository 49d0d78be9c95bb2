"""nalaformer: norm-aware linear attention (NaLa) for vision and language models."""

from .ops import (
    NaLaParams,
    NaLaState,
    apply_rotary,
    nala_attention,
    nala_attention_reference,
    nala_decode_step,
    nala_feature_maps,
    rope_1d,
    rope_2d,
)

from . import _integrations

__version__ = "0.1.0"

_integrations.install()  # timm / transformers families register when (or if) those libraries are imported

__all__ = [
    "nala_attention", "nala_decode_step", "nala_attention_reference", "nala_feature_maps", "rope_1d", "rope_2d",
    "apply_rotary", "NaLaState", "NaLaParams", "__version__",
]
