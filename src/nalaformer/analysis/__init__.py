"""Analysis tools: attention weights and entropy vs query norm (the paper's entropy-gap study)."""

from .entropy import attention_entropy, attention_weights, entropy_vs_query_norm

__all__ = ["attention_entropy", "attention_weights", "entropy_vs_query_norm"]
