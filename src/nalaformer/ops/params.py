"""``NaLaParams``: NaLa's hyper-parameters as one validated, immutable object.

Built once (from keywords, a config, or a layer's arguments) and carried unchanged to the op, so the
checks live here and nowhere else: every value must be a real, finite number in its range (a string, a
bool, inf or NaN is refused with a message naming the argument).
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, fields

from .feature_maps import INHIBIT_MODES

__all__ = ["NaLaParams"]

# (name, lower bound, lower bound allowed, what it is)
_NUMBERS = (
    ("lam", 0.0, False, "a positive power"),
    ("tau", 0.0, True, "tau >= 0"),
    ("alpha", 0.0, False, "a positive sharpness"),
    ("eps", 0.0, False, "a positive denominator epsilon"),
    ("norm_eps", 0.0, False, "a positive norm floor"),
)


@dataclass(frozen=True)
class NaLaParams:
    """inhibit: ``"relu"`` | ``"cosine"``; lam, tau: key power and query power ``lam*(tau + tanh|q|)``;
    alpha: cosine sharpness; eps: denominator epsilon; norm_eps: floor of the query/key norm."""

    inhibit: str = "relu"
    lam: float = 3.0
    tau: float = 0.5
    alpha: float = 20.0
    eps: float = 1e-6
    norm_eps: float = 1e-6

    def __post_init__(self) -> None:
        if not isinstance(self.inhibit, str) or self.inhibit not in INHIBIT_MODES:
            raise ValueError(f"inhibit: expected one of {INHIBIT_MODES}, got {self.inhibit!r}")
        for name, low, closed, what in _NUMBERS:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Real):
                raise TypeError(f"{name}: expected {what}, a real number, got {type(value).__name__} {value!r}")
            value = float(value)
            if not math.isfinite(value) or value < low or (value == low and not closed):
                raise ValueError(f"{name}: expected {what}, finite, got {value}")
            object.__setattr__(self, name, value)  # ints and numpy scalars become plain floats

    def kernel_kwargs(self) -> dict:
        """The six values as keywords (what the backends and the feature maps take)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def feature_kwargs(self) -> dict:
        """The values the feature maps use (everything but the denominator epsilon)."""
        return {k: v for k, v in self.kernel_kwargs().items() if k != "eps"}
