"""Rotary position tables and the interleaved-pair rotation used by NaLa.

Tables are ``(sin, cos)``, each ``(N, D)`` with the value of pair ``i`` repeated at
columns ``2i`` and ``2i + 1``, or ``(N, D/2)`` with one value per pair (``per_pair=True``: half the
memory traffic in the fused kernels). :func:`apply_rotary` rotates pairs ``(2i, 2i+1)``:
``(x0, x1) -> (x0*cos - x1*sin, x1*cos + x0*sin)``.
"""

from __future__ import annotations

import torch

__all__ = ["rope_1d", "rope_2d", "apply_rotary", "rotate_halves", "rotation_tables", "rotate_columns",
           "rotate_pairs_by_columns"]


def _tables(angles: torch.Tensor, dtype: torch.dtype, per_pair: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Angles (..., D/2), one per pair -> (sin, cos), per pair or repeated for both members."""
    if not per_pair:
        angles = angles.repeat_interleave(2, dim=-1)
    return angles.sin().to(dtype), angles.cos().to(dtype)


def rope_1d(
    positions: int | torch.Tensor,
    head_dim: int,
    base: float = 10000.0,
    *,
    offset: int = 0,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
    per_pair: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Standard interleaved-pair rotary tables for a 1-D sequence.

    ``positions`` is a length N (positions ``offset .. offset+N-1``) or a 1-D tensor of
    positions (e.g. restarting per packed document). Pair ``i`` turns by
    ``pos * base**(-2i/head_dim)``. Returns ``(sin, cos)``, each ``(N, head_dim)``, or
    ``(N, head_dim / 2)`` with ``per_pair``.
    """
    if head_dim <= 0 or head_dim % 2:
        raise ValueError(f"head_dim: expected a positive even number for rotary tables, got {head_dim}")
    if isinstance(positions, int):
        if positions < 0:
            raise ValueError(f"positions: expected a length >= 0, got {positions}")
        pos = torch.arange(offset, offset + positions, device=device, dtype=torch.float64)
    else:
        if positions.dim() != 1:
            raise ValueError(f"positions: expected a 1-D tensor of positions, got shape {tuple(positions.shape)}")
        pos = positions.to(device=device or positions.device, dtype=torch.float64) + offset
    inv_freq = base ** (-torch.arange(0, head_dim, 2, device=pos.device, dtype=torch.float64) / head_dim)
    return _tables(pos[:, None] * inv_freq[None, :], dtype, per_pair)


def rope_2d(
    height: int,
    width: int,
    head_dim: int,
    base: float = 10000.0,
    *,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
    per_pair: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Axial 2-D rotary tables of the NaLaFormer backbone (spec §4).

    ``a = 1 / base**linspace(0, 1, head_dim/4)``; a token at row r, column c gets angles
    ``[r*a, c*a]`` with every value repeated for both members of a pair. Tokens are in
    row-major order. Returns ``(sin, cos)``, each ``(height*width, head_dim)``, or
    ``(height*width, head_dim / 2)`` with ``per_pair``.
    """
    if head_dim <= 0 or head_dim % 4:
        raise ValueError(f"head_dim: expected a positive multiple of 4 for 2-D rotary tables, got {head_dim}")
    if height < 1 or width < 1:
        raise ValueError(f"height, width: expected positive grid sizes, got {height}x{width}")
    a = 1.0 / base ** torch.linspace(0, 1, head_dim // 4, device=device, dtype=torch.float64)
    rows = torch.arange(height, device=a.device, dtype=torch.float64)
    cols = torch.arange(width, device=a.device, dtype=torch.float64)
    r_ang = (rows[:, None] * a[None, :])[:, None, :].expand(height, width, -1)
    c_ang = (cols[:, None] * a[None, :])[None, :, :].expand(height, width, -1)
    # one angle per pair: [row block, column block]
    angles = torch.cat([r_ang, c_ang], dim=-1).reshape(height * width, head_dim // 2)
    return _tables(angles, dtype, per_pair)


def rotation_tables(sin: torch.Tensor, cos: torch.Tensor, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Tables per pair (..., width/2) or per column (..., width) -> per column ``(signed_sin, cos)``, each
    (..., width), where ``signed_sin`` is -sin at the first member of a pair and +sin at the second."""
    if width > 1 and sin.shape[-1] * 2 == width:  # per pair
        first, second, cos = sin, sin, torch.stack((cos, cos), dim=-1).flatten(-2)
    else:  # per column
        first, second = sin[..., 0::2], sin[..., 1::2]
    # no constant tensor built here: that would be a host-to-device copy in every eager call and in CUDA graphs
    return torch.stack((-first, second), dim=-1).flatten(-2), cos


def rotate_columns(x: torch.Tensor, signed_sin: torch.Tensor, cos: torch.Tensor) -> torch.Tensor:
    """Rotate interleaved pairs of x (..., D) by per-column tables from :func:`rotation_tables`:
    ``x * cos + swap(x) * signed_sin``, swap exchanging the members of each pair. The same values as
    ``(x0*cos - x1*sin, x1*cos + x0*sin)`` to the bit, in four passes over contiguous memory."""
    swapped = x.unflatten(-1, (-1, 2)).flip(-1).flatten(-2)
    return x * cos + swapped * signed_sin


def _complex_viewable(x: torch.Tensor) -> bool:
    """Whether ``torch.view_as_complex`` can view x's interleaved pairs (..., D/2, 2) without a copy."""
    return (x.stride(-1) == 1 and x.storage_offset() % 2 == 0
            and all(st % 2 == 0 for size, st in zip(x.shape[:-1], x.stride()[:-1]) if size > 1))


def _rotate_complex(x: torch.Tensor, sin: torch.Tensor, cos: torch.Tensor) -> torch.Tensor:
    """Pairs of x (..., D) rotated as complex numbers times ``cos + i sin`` (per-pair tables (..., D/2)): one
    vectorised pass each way on CPUs, where the column form's pair swap (a ``flip`` over a dim of 2) is slow."""
    pairs = torch.view_as_complex(x.unflatten(-1, (-1, 2)))
    return torch.view_as_real(pairs * torch.complex(cos, sin)).flatten(-2)


def apply_rotary(x: torch.Tensor, sin: torch.Tensor, cos: torch.Tensor) -> torch.Tensor:
    """Rotate interleaved pairs of the last dim of ``x`` (..., D) by tables broadcastable to ``x``, either
    per column (..., D) or per pair (..., D/2).

    Eager float32/float64 CPU calls with per-pair tables multiply the pairs as complex numbers (the same
    products, about 10x faster there than the column form's swap); everything else, compiled graphs and
    GPUs included, takes :func:`rotate_columns`."""
    if (not torch.compiler.is_compiling() and x.device.type == "cpu" and x.dtype in (torch.float32, torch.float64)
            and x.shape[-1] % 2 == 0 and sin.shape[-1] * 2 == x.shape[-1] and sin.dtype == cos.dtype == x.dtype
            and _complex_viewable(x)):
        return _rotate_complex(x, sin, cos)
    return rotate_pairs_by_columns(x, sin, cos)


def rotate_pairs_by_columns(x: torch.Tensor, sin: torch.Tensor, cos: torch.Tensor) -> torch.Tensor:
    """:func:`apply_rotary` in its column form on every device (bit-identical to the textbook rotation)."""
    return rotate_columns(x, *rotation_tables(sin, cos, x.shape[-1]))


def rotate_halves(phi: torch.Tensor, rope, rotate=apply_rotary) -> torch.Tensor:
    """Rotate each D-half of the 2D features phi (L, H, 2D) alike by tables (L, D) or (L, D/2) with ``rotate``
    (an :func:`apply_rotary`-like function); identity if rope is None."""
    if rope is None:
        return phi
    sin, cos = (t.to(phi.dtype)[:, None, None, :] for t in rope)  # (L, 1, 1, P): every head, both halves
    return rotate(phi.unflatten(-1, (2, -1)), sin, cos).flatten(-2)
