"""The shared training step: ``backward`` (used by every trainer) and ``fit_steps``, a fixed number of
optimizer steps over a stream of batches with the core's precision, gradient application (unscale, clip,
step, zero) and progress bar, for jobs that bring their own data and loss (``nalaformer reproduce``'s
MQAR and dense-prediction cells)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch

from .distributed import apply_gradients
from .precision import autocast
from .progress import progress_bar

__all__ = ["backward", "fit_steps"]


def backward(loss: torch.Tensor, scaler=None, accum_steps: int = 1) -> None:
    """Back-propagate one micro-step's ``loss`` / ``accum_steps`` (through the fp16 GradScaler when given):
    the step every trainer of the house shares (vision, LM, ``fit_steps``)."""
    scaled = loss / accum_steps
    (scaler.scale(scaled) if scaler is not None else scaled).backward()


def fit_steps(model: torch.nn.Module, optimizer, batches: Iterator, loss_fn: Callable, steps: int, *,
              device: torch.device, amp_dtype=None, scaler=None, clip: float | None = None, scheduler=None,
              desc: str = "train") -> list[float]:
    """Train ``model`` for ``steps`` steps: ``loss_fn(batch) -> scalar`` under autocast, one optimizer step
    per batch. Returns the per-step losses; a non-finite loss raises ``FloatingPointError``."""
    if steps < 1:
        raise ValueError(f"steps: expected a positive int, got {steps}")
    model.train()
    optimizer.zero_grad(set_to_none=True)
    losses = []
    bar = progress_bar(steps, desc, refresh_every=max(steps // 50, 1))
    for step in range(steps):
        with autocast(device, amp_dtype):
            loss = loss_fn(next(batches))
        if not torch.isfinite(loss):
            raise FloatingPointError(f"non-finite loss {loss.item()} at step {step}")
        backward(loss, scaler)
        apply_gradients(model, optimizer, scaler, clip)
        if scheduler is not None:
            scheduler.step()
        losses.append(loss.item())
        bar.set_postfix(loss=f"{losses[-1]:.4g}", refresh=False)
        bar.update()
    bar.close()
    return losses
