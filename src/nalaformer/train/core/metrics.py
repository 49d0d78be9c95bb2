"""Run metrics: ``metrics.csv`` (+ TensorBoard when installed) and PNG plots of them."""

from __future__ import annotations

import csv
import pathlib
import warnings

__all__ = ["MetricsLog", "plot_metrics", "pyplot_and_rows", "save_figure"]


class MetricsLog:
    """``metrics.csv``, one row per ``key`` (epoch or step) with fixed columns; mirrored to TensorBoard
    when it is installed. Floats are written with full precision (resume checks compare them)."""

    def __init__(self, directory: str | pathlib.Path, fields: list[str], key: str = "epoch",
                 tensorboard: bool = True):
        if key not in fields:
            raise ValueError(f"fields: expected the key column {key!r} among {fields}")
        self.dir = pathlib.Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.csv_path = self.dir / "metrics.csv"
        self.fields, self.key = list(fields), key
        self.writer = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.writer = SummaryWriter(str(self.dir / "tensorboard"))
            except Exception:  # tensorboard not installed
                warnings.warn("tensorboard is not installed: metrics go to metrics.csv only", RuntimeWarning,
                              stacklevel=2)

    def rows(self) -> list[dict]:
        if not self.csv_path.is_file():
            return []
        with self.csv_path.open() as f:
            return list(csv.DictReader(f))

    def truncate_after(self, value: int) -> None:
        """Drop rows whose key is past ``value`` (a resumed run writes them again)."""
        self._rewrite([r for r in self.rows() if int(r[self.key]) <= value])

    def _rewrite(self, rows: list[dict]) -> None:
        tmp = self.csv_path.with_suffix(".tmp")
        with tmp.open("w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=self.fields)
            w.writeheader()
            w.writerows(rows)
        tmp.replace(self.csv_path)

    def log(self, row: dict) -> None:
        """Append one row (unknown columns are an error) and mirror its scalars to TensorBoard."""
        if not self.csv_path.is_file():
            self._rewrite([])
        with self.csv_path.open("a", newline="") as f:
            csv.DictWriter(f, fieldnames=self.fields).writerow(
                {k: repr(v) if isinstance(v, float) else v for k, v in row.items()})
        if self.writer is not None:
            for name, value in row.items():
                if name != self.key and isinstance(value, (int, float)):
                    self.writer.add_scalar(name, value, int(row[self.key]))
            self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def pyplot_and_rows(csv_path: str | pathlib.Path):
    """(matplotlib.pyplot with a file-only backend, the CSV's rows), or None without matplotlib or rows."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        warnings.warn("matplotlib is not installed: no plots", RuntimeWarning, stacklevel=3)
        return None
    with open(csv_path) as f:
        rows = list(csv.DictReader(f))
    return (plt, rows) if rows else None


def save_figure(plt, fig, out_path: str | pathlib.Path) -> bool:
    """Lay out, write and close ``fig``; True (the plot exists)."""
    fig.tight_layout()
    fig.savefig(out_path, dpi=110)
    plt.close(fig)
    return True


def plot_metrics(csv_path: str | pathlib.Path, out_path: str | pathlib.Path, panels: dict[str, list[str]]) -> bool:
    """One PNG with a panel per entry of ``panels`` (title -> CSV columns vs epoch). False without matplotlib."""
    loaded = pyplot_and_rows(csv_path)
    if loaded is None:
        return False
    plt, rows = loaded
    epochs = [int(r["epoch"]) for r in rows]
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 3.8))
    for ax, (title, columns) in zip(axes if len(panels) > 1 else [axes], panels.items()):
        for col in columns:
            values = [float(r[col]) if r.get(col) not in (None, "") else float("nan") for r in rows]
            ax.plot(epochs, values, marker="o", label=col)
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        ax.legend()
    return save_figure(plt, fig, out_path)
