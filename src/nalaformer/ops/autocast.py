"""Keep the op's float32 math out of autocast (which would push its matmuls back to 16 bits)."""

from __future__ import annotations

import contextlib
import functools

import torch

__all__ = ["autocast_disabled", "outside_autocast"]

_NO_OP = contextlib.nullcontext()  # reusable: the common case (autocast off) allocates nothing


def autocast_disabled(device_type: str):
    """A context that turns autocast off for ``device_type`` (no-op when it is off or unknown)."""
    try:
        enabled = torch.is_autocast_enabled(device_type)
    except TypeError:  # torch < 2.4: no per-device query
        enabled = torch.is_autocast_enabled() if device_type == "cuda" else torch.is_autocast_cpu_enabled()
    except RuntimeError:  # a device type autocast does not know (e.g. meta)
        return _NO_OP
    return torch.autocast(device_type, enabled=False) if enabled else _NO_OP


def outside_autocast(fn):
    """Decorate an op whose first argument is a tensor: run it with autocast off on that device."""

    @functools.wraps(fn)
    def wrapper(q, *args, **kwargs):
        with autocast_disabled(q.device.type):
            return fn(q, *args, **kwargs)

    return wrapper
