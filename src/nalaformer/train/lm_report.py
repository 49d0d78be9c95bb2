"""Step-keyed metrics of language-model runs: CSV (+ TensorBoard when installed) and a loss/perplexity PNG."""

from __future__ import annotations

import csv
import math
import pathlib
import warnings

__all__ = ["StepLog", "plot_lm_metrics"]

FIELDS = ["step", "tokens", "train_loss", "train_ppl", "val_loss", "val_ppl", "lr", "tokens_per_s", "elapsed_s"]


class StepLog:
    """``metrics.csv`` with one row per training step (validation columns filled at eval steps)."""

    def __init__(self, directory: str | pathlib.Path, tensorboard: bool = True):
        self.dir = pathlib.Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.path = self.dir / "metrics.csv"
        self.writer = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.writer = SummaryWriter(str(self.dir / "tensorboard"))
            except Exception:
                warnings.warn("tensorboard is not installed: metrics go to metrics.csv only", RuntimeWarning,
                              stacklevel=2)

    def rows(self) -> list[dict]:
        if not self.path.is_file():
            return []
        with self.path.open() as f:
            return list(csv.DictReader(f))

    def truncate_after(self, step: int) -> None:
        """Drop rows past ``step`` (a resumed run writes them again)."""
        self._rewrite([r for r in self.rows() if int(r["step"]) <= step])

    def _rewrite(self, rows: list[dict]) -> None:
        tmp = self.path.with_suffix(".tmp")
        with tmp.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=FIELDS)
            writer.writeheader()
            writer.writerows(rows)
        tmp.replace(self.path)

    def log(self, **row) -> None:
        """Append a row (floats written with full precision) and mirror scalars to TensorBoard."""
        if not self.path.is_file():
            self._rewrite([])
        with self.path.open("a", newline="") as f:
            csv.DictWriter(f, fieldnames=FIELDS).writerow({k: repr(v) if isinstance(v, float) else v
                                                           for k, v in row.items()})
        if self.writer is not None:
            for key, value in row.items():
                if key != "step" and isinstance(value, (int, float)):
                    self.writer.add_scalar(key, value, row["step"])

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def plot_lm_metrics(csv_path: str | pathlib.Path, out_path: str | pathlib.Path) -> bool:
    """Loss and perplexity (log scale) vs step, train and held-out. False without matplotlib or data."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        warnings.warn("matplotlib is not installed: no loss plot", RuntimeWarning, stacklevel=2)
        return False
    with open(csv_path) as f:
        rows = list(csv.DictReader(f))
    if not rows:
        return False
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
    fig.tight_layout()
    fig.savefig(out_path, dpi=110)
    plt.close(fig)
    return True
