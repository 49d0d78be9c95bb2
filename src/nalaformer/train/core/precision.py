"""Mixed precision shared by every trainer: the ``--amp`` setting -> autocast dtype and GradScaler."""

from __future__ import annotations

import contextlib

import torch

__all__ = ["resolve_amp", "autocast"]

AMP_CHOICES = ("auto", "bf16", "fp16", "none")


def resolve_amp(amp: str, device: torch.device) -> tuple[torch.dtype | None, torch.amp.GradScaler | None]:
    """(autocast dtype or None, GradScaler for fp16 or None). ``auto``: bf16 on a GPU that has it, else fp16
    on GPU; off on CPU."""
    if amp == "auto":
        amp = ("bf16" if torch.cuda.is_bf16_supported() else "fp16") if device.type == "cuda" else "none"
    if amp not in AMP_CHOICES:
        raise ValueError(f"--amp: expected one of {', '.join(AMP_CHOICES)}, got {amp!r}")
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(amp)
    return dtype, (torch.amp.GradScaler(device.type) if amp == "fp16" else None)


def autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    """``torch.autocast`` to ``dtype`` on ``device``'s type; a no-op when ``dtype`` is None."""
    return torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None)
