"""Cached 2-D rotary tables for the vision attention layers.

Every block of a stage sees the same token grid, so the tables of spec §4 are built once per
``(height, width, head_dim, device, dtype)`` and reused. The cache is small and bounded; tables are
always built outside inference mode so that a first call under ``torch.inference_mode()`` cannot
poison later training steps.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

import torch

from ..ops import rope_2d

__all__ = ["rotary_tables_2d", "clear_rotary_cache"]

_MAX_ENTRIES = 64
_cache: OrderedDict[tuple, tuple[torch.Tensor, torch.Tensor]] = OrderedDict()
_lock = threading.Lock()


def _is_compiling() -> bool:
    compiler = getattr(torch, "compiler", None)
    return bool(compiler is not None and hasattr(compiler, "is_compiling") and compiler.is_compiling())


def rotary_tables_2d(
    height: int, width: int, head_dim: int, *, device: torch.device, dtype: torch.dtype,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Axial 2-D rotary tables ``(sin, cos)``, each ``(height * width, head_dim / 2)`` (one value per pair),
    row-major tokens.

    Same values as :func:`nalaformer.ops.rope_2d` with ``per_pair=True``; cached per
    (height, width, head_dim, device, dtype).
    """
    if _is_compiling():  # let the compiler see (and fold) the table computation
        return rope_2d(height, width, head_dim, device=device, dtype=dtype, per_pair=True)
    key = (int(height), int(width), int(head_dim), torch.device(device), dtype)
    with _lock:
        tables = _cache.get(key)
        if tables is not None:
            _cache.move_to_end(key)
            return tables
    with torch.inference_mode(False), torch.no_grad():
        tables = rope_2d(height, width, head_dim, device=device, dtype=dtype, per_pair=True)
    with _lock:
        _cache[key] = tables
        while len(_cache) > _MAX_ENTRIES:
            _cache.popitem(last=False)
    return tables


def clear_rotary_cache() -> None:
    """Drop every cached table (e.g. to free device memory)."""
    with _lock:
        _cache.clear()
