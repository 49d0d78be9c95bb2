"""The registry of attention kinds, read by the vision and the language layers alike.

A kind is one module here defining an :class:`AttentionCore` subclass, plus one line in ``KINDS``.
"""

from __future__ import annotations

from .base import AttentionCore, LinearAttentionCore
from .focused import FocusedCore
from .linear import EluLinearCore, ReluLinearCore
from .nala import NaLaCore, NaLaCosineCore
from .polarity import PolarityCore
from .softmax import SoftmaxCore

__all__ = ["KINDS", "AttentionCore", "LinearAttentionCore", "SoftmaxCore", "get_kind", "create_core", "check_kind"]

KINDS: dict[str, type[AttentionCore]] = {
    "softmax": SoftmaxCore,
    "relu_linear": ReluLinearCore,
    "elu_linear": EluLinearCore,
    "focused": FocusedCore,
    "polarity": PolarityCore,
    "nala": NaLaCore,
    "nala_cosine": NaLaCosineCore,
}


def check_kind(kind, arg: str = "kind") -> str:
    """``kind`` if it is a registered name, else a ValueError naming ``arg`` and the choices."""
    if not isinstance(kind, str) or kind not in KINDS:
        raise ValueError(f"{arg}: expected one of {tuple(KINDS)}, got {kind!r}")
    return kind


def get_kind(kind: str, arg: str = "kind") -> type[AttentionCore]:
    """The core class registered as ``kind``."""
    return KINDS[check_kind(kind, arg)]


def create_core(kind: str, num_heads: int, head_dim: int, **options) -> AttentionCore:
    """Build the core of ``kind`` for ``num_heads`` heads of ``head_dim`` (options: ``params`` for NaLa)."""
    return get_kind(kind)(num_heads, head_dim, **options)
