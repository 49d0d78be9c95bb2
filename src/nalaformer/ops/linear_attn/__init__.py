"""Normalised linear attention from feature maps (O(N), causal and non-causal, recurrent state).

The attention kinds of :mod:`nalaformer.layers.kinds` build their feature maps and run them here.
"""

from .core import empty_state, linear_attention, linear_attention_weights, linear_decode_step, resolve_backend

__all__ = ["linear_attention", "linear_decode_step", "linear_attention_weights", "empty_state", "resolve_backend"]
