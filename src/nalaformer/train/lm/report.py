"""Language-model run reports: the step-keyed metric columns and the loss/perplexity PNG."""

from __future__ import annotations

import math
import pathlib

from ..core.metrics import pyplot_and_rows, save_figure

__all__ = ["FIELDS", "plot_lm_metrics"]

FIELDS = ["step", "tokens", "train_loss", "train_ppl", "val_loss", "val_ppl", "lr", "tokens_per_s", "elapsed_s"]


def plot_lm_metrics(csv_path: str | pathlib.Path, out_path: str | pathlib.Path) -> bool:
    """Loss and perplexity (log scale) vs step, train and held-out. False without matplotlib or data."""
    loaded = pyplot_and_rows(csv_path)
    if loaded is None:
        return False
    plt, rows = loaded
    fig, (ax_loss, ax_ppl) = plt.subplots(1, 2, figsize=(10, 3.8))
    for split in ("train", "val"):
        points = [(int(r["step"]), float(r[f"{split}_loss"])) for r in rows if r.get(f"{split}_loss")]
        if not points:
            continue
        steps, losses = zip(*points)
        style = dict(marker="o") if split == "val" else dict(alpha=0.7)
        ax_loss.plot(steps, losses, label=split, **style)
        ax_ppl.plot(steps, [math.exp(min(x, 50.0)) for x in losses], label=split, **style)
    ax_loss.set_title("loss (nats/token)")
    ax_ppl.set_title("perplexity")
    ax_ppl.set_yscale("log")
    for ax in (ax_loss, ax_ppl):
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        ax.legend()
    return save_figure(plt, fig, out_path)
