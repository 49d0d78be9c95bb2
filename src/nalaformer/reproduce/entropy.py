"""The entropy study on a trained model: ``analyze_model`` per layer, reduced to result rows."""

from __future__ import annotations

import csv
import math
import pathlib

from ..analysis.norm_entropy import analyze_model

__all__ = ["entropy_rows", "plot_entropy_curves"]


def entropy_rows(cell, model, batch, source: str, **extra) -> list[dict]:
    """Entropy vs ||q|| of every attention layer of ``model`` on ``batch`` (written to ``cell.work_dir/entropy``);
    rows (stamped with ``extra``): mean slope of entropy vs log ||q|| (and softmax's on the same q, k) and mean
    entropy gap to softmax."""
    summary = analyze_model(model, batch, cell.work_dir / "entropy", seed=cell.seed)
    summary = [s for s in summary if all(math.isfinite(s[k]) for k in ("slope", "softmax_slope"))]
    if not summary:
        return []
    n = len(summary)
    slope = sum(s["slope"] for s in summary) / n
    softmax_slope = sum(s["softmax_slope"] for s in summary) / n
    gap = sum(s["mean_entropy"] - s["mean_softmax_entropy"] for s in summary) / n
    extra = dict(extra, source=source, layers=n, entropy_dir=str(cell.work_dir / "entropy"))
    return [cell.row("entropy_slope_vs_log_qnorm", slope, **extra),
            cell.row("softmax_entropy_slope_vs_log_qnorm", softmax_slope, **extra),
            cell.row("entropy_gap_to_softmax", gap, **extra)]


def _curve(entropy_dir: pathlib.Path, kind: str) -> tuple[list[float], list[float], list[float]] | None:
    """Bin-wise mean over layers of (||q|| mean, entropy of the kind, softmax entropy)."""
    files = sorted((entropy_dir / "layers").glob("*.csv"))
    curves = []
    for file in files:
        with file.open() as f:
            rows = list(csv.DictReader(f))
        if rows and f"entropy_{kind}" in rows[0]:
            curves.append([(float(r["q_norm_mean"]), float(r[f"entropy_{kind}"]), float(r["entropy_softmax"]))
                           for r in rows])
    if not curves:
        return None
    bins = min(len(c) for c in curves)
    mean = [[sum(c[b][i] for c in curves) / len(curves) for b in range(bins)] for i in range(3)]
    return mean[0], mean[1], mean[2]


def _entropy_dir(recorded: str, study_dir: pathlib.Path) -> pathlib.Path:
    """Where a row's entropy CSVs are now: the recorded path, else the same cell's folder under ``study_dir``
    (a results folder copied or moved from the machine that ran it)."""
    path = pathlib.Path(recorded)
    return path if path.is_dir() else study_dir / "cells" / path.parent.name / path.name


def plot_entropy_curves(plt, rows: list[dict], kinds: list[str], out: pathlib.Path) -> list[pathlib.Path]:
    """``entropy_SOURCE.png``: entropy vs ||q|| (mean over layers, first seed) per kind, dashed softmax
    entropy on the same q, k."""
    written = []
    for source in sorted({r["source"] for r in rows if r.get("source")}):
        dirs = {}
        for r in sorted((r for r in rows if r.get("source") == source), key=lambda r: r["seed"]):
            dirs.setdefault(r["attention"], _entropy_dir(r["entropy_dir"], out.parent))
        names = [k for k in kinds if k in dirs]
        fig, axes = plt.subplots(1, len(names), figsize=(2.6 * len(names) + 1, 2.8), squeeze=False)
        for ax, kind in zip(axes[0], names):
            curve = _curve(dirs[kind], kind)
            if curve is not None:
                ax.plot(curve[0], curve[1], "o-", label=kind)
                ax.plot(curve[0], curve[2], "k--", label="softmax (same q, k)")
            ax.set_xscale("log")
            ax.set_title(kind, fontsize=9)
            ax.set_xlabel("||q||")
        axes[0][0].set_ylabel("attention entropy")
        if axes[0][0].lines:
            axes[0][0].legend(fontsize=7)
        fig.suptitle(f"{source}: entropy vs query norm (trained models)", fontsize=10)
        fig.tight_layout()
        path = out / f"entropy_{source}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    return written
