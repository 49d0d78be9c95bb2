"""Analysis tools: explicit attention rows of every kind, entropy vs query norm, and the per-layer study
of trained models (hooks capture q and k; no model edits)."""

from .capture import CapturedAttention, capture_attention
from .entropy import attention_entropy, attention_weights, entropy_vs_query_norm, row_entropy
from .norm_entropy import LayerEntropy, analyze_model, layer_entropy

__all__ = [
    "attention_entropy", "attention_weights", "entropy_vs_query_norm", "row_entropy", "CapturedAttention",
    "capture_attention", "LayerEntropy", "layer_entropy", "analyze_model",
]
