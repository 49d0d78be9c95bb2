"""NaLa feature maps (spec §2): norm-aware query power, fixed key power, inhibit map.

Both maps work on the last (head) dim D and return 2D features in the compute dtype
(float32, or float64 for float64 input).
"""

from __future__ import annotations

import math

import torch

__all__ = ["INHIBIT_MODES", "compute_dtype", "query_feature_map", "key_feature_map", "nala_feature_maps", "key_scale"]

INHIBIT_MODES = ("relu", "cosine")


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """float64 stays float64; everything else computes in float32."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def _direction(x: torch.Tensor, norm_eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Split ``x`` into its L2 norm (..., 1) and direction ``x / max(norm, norm_eps)``."""
    norm = torch.linalg.vector_norm(x, dim=-1, keepdim=True)
    return norm, x / norm.clamp_min(norm_eps)


def _power(x_abs: torch.Tensor, p) -> torch.Tensor:
    """|x|^p with 0 at x = 0 and a zero gradient there, for every p > 0 (for p < 1 the true derivative
    at 0 is infinite and autograd's 0 * inf would turn into NaN). NaN stays NaN."""
    if isinstance(p, (int, float)) and p > 1:  # a constant power above 1: pow is already 0 with a 0 gradient at 0
        return x_abs.contiguous().pow(p)  # contiguous: the vectorised pow, the same bits for any input layout
    zero = x_abs == 0
    return torch.where(zero, 0.0, torch.where(zero, 1.0, x_abs).pow(p))


def _inhibit(x_dir: torch.Tensor, magnitude: torch.Tensor, inhibit: str, alpha: float) -> torch.Tensor:
    """Map per-dimension magnitudes to non-negative-product 2D features.

    relu:   [m * [x > 0], m * [x < 0]]
    cosine: [m * sin(pi/2 * sigmoid(w)), m * sin(pi/2 * sigmoid(-w))], w = 2 * alpha * x_dir

    The spec writes the cosine map as m * [cos(theta), sin(theta)], theta = pi/4 * tanh(alpha * x_dir).
    We use the same pair rotated by -pi/4 and reflected (beta = pi/4 - theta), an orthogonal change of
    basis applied to queries and keys alike; cos(beta) = sin(pi/2 * sigmoid(w)) and sin(beta) =
    sin(pi/2 * sigmoid(-w)) are written so that neither loses its small part near 0 or pi/2. Every inner
    product, so every attention output, is unchanged (the rotary rotation acts within each D-half and
    commutes with it). In this basis all features are >= 0, so sums never cancel: an inhibited pair
    (opposite signs, cos(theta_q - theta_k) ~ 1e-5) stays accurate in float32 instead of drowning in
    rounding, and alpha -> infinity gives exactly the relu features.
    """
    if inhibit == "relu":  # written so that a NaN direction gives NaN in both halves (the magnitude is 0 at 0)
        opposite = torch.stack((x_dir < 0, x_dir > 0), dim=-2)  # (..., 2, D): the sign each half zeroes
        keep = (~opposite).to(magnitude.dtype)  # NaN is neither sign: kept (NaN) in both halves
        return (magnitude.unsqueeze(-2) * keep).flatten(-2)  # one multiply for both halves
    w = 2.0 * alpha * x_dir  # beta = pi/4 - pi/4 * tanh(alpha * x_dir) = pi/2 * sigmoid(-w)
    both = torch.stack((w, -w), dim=-2)  # (..., 2, D): the two halves in one pass each below
    return (magnitude.unsqueeze(-2) * torch.sin((math.pi / 2) * torch.sigmoid(both))).flatten(-2)


def query_feature_map(
    q: torch.Tensor, *, inhibit: str = "relu", lam: float = 3.0, tau: float = 0.5, alpha: float = 20.0,
    norm_eps: float = 1e-6,
) -> torch.Tensor:
    """phi_q: (..., D) -> (..., 2D). Direction u = q/max(|q|, eps) raised to p = lam*(tau + tanh|q|)."""
    q = q.to(compute_dtype(q.dtype))
    norm, u = _direction(q, norm_eps)
    power = lam * (tau + torch.tanh(norm))
    return _inhibit(u, _power(u.abs(), power), inhibit, alpha)


def key_feature_map(
    k: torch.Tensor, *, inhibit: str = "relu", lam: float = 3.0, alpha: float = 20.0, norm_eps: float = 1e-6,
) -> torch.Tensor:
    """phi_k: (..., D) -> (..., 2D). Magnitude |k|^lam; the inhibit angle uses k/max(|k|, eps)."""
    k = k.to(compute_dtype(k.dtype))
    magnitude = _power(k.abs(), lam)
    direction = k if inhibit == "relu" else _direction(k, norm_eps)[1]  # relu only needs the sign
    return _inhibit(direction, magnitude, inhibit, alpha)


def key_scale(k: torch.Tensor, lam: float) -> torch.Tensor:
    """A power of two ``s`` (0-d, compute dtype) that keeps ``|s k|^lam`` far from overflow: ``s = 1`` while
    max|k| < 2^(m / (2 lam)) (m = the dtype's largest exponent: 2^21 in float32 for lam = 3), else the
    smallest power of two that brings max|k| under that bound. NaLa is scale free in k: scaling every key by
    s scales numerator, denominator, state and (scaled alike) eps by s^lam, so the result is unchanged; s is
    a power of two, so s k is exact. Non-finite keys are left out of the max (they give NaN, as they should).
    Computed on the device: no sync."""
    dt = compute_dtype(k.dtype)
    kabs = k.detach().abs().to(dt)
    amax = torch.where(torch.isfinite(kabs), kabs, 0).amax()
    limit = math.floor(math.log2(torch.finfo(dt).max) / (2 * lam))
    excess = (torch.log2(amax).ceil() - limit).clamp_min(0)  # log2(0) = -inf: no scaling
    return torch.exp2(-excess)


def nala_feature_maps(
    q: torch.Tensor, k: torch.Tensor, *, inhibit: str = "relu", lam: float = 3.0, tau: float = 0.5,
    alpha: float = 20.0, norm_eps: float = 1e-6,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Return ``(phi_q, phi_k)``, each ``(..., 2D)`` in float32 (float64 for float64 input)."""
    if inhibit not in INHIBIT_MODES:
        raise ValueError(f"inhibit: expected one of {INHIBIT_MODES}, got {inhibit!r}")
    return (
        query_feature_map(q, inhibit=inhibit, lam=lam, tau=tau, alpha=alpha, norm_eps=norm_eps),
        key_feature_map(k, inhibit=inhibit, lam=lam, alpha=alpha, norm_eps=norm_eps),
    )
