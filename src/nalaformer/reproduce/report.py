"""The markdown table (mean ± std over seeds) and the PNG plots of a results list."""

from __future__ import annotations

import pathlib
import statistics
from collections import defaultdict

__all__ = ["summarize", "markdown_table", "write_plots"]


def _setting(row: dict) -> str:
    if row["task"] == "mqar":
        return f"L={row.get('seq_len')} kv={row.get('num_kv_pairs')}"
    if "img_size" in row and row["metric"] not in ("top1", "miou"):
        return f"{row['img_size']}px"
    return ""


def summarize(rows: list[dict]) -> list[dict]:
    """One entry per (task, metric, setting, attention): mean, std (0 for one seed), seeds, params."""
    groups = defaultdict(list)
    for row in rows:
        groups[(row["task"], row["metric"], _setting(row), row["attention"])].append(row)
    out = []
    for (task, metric, setting, attention), group in groups.items():
        values = [float(r["value"]) for r in group]
        out.append({"task": task, "metric": metric, "setting": setting, "attention": attention,
                    "mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0,
                    "seeds": len(values), "params": group[0].get("params")})
    return out


def markdown_table(rows: list[dict], kinds: list[str] | None = None) -> str:
    """Rows: task / metric / setting; columns: attention kinds; cells ``mean ± std`` (``mean (1 seed)``)."""
    summary = summarize(rows)
    kinds = kinds or sorted({s["attention"] for s in summary})
    keyed = {(s["task"], s["metric"], s["setting"], s["attention"]): s for s in summary}
    lines = ["| task | metric | setting | " + " | ".join(kinds) + " |", "|" + "---|" * (3 + len(kinds))]
    for task, metric, setting in sorted({(s["task"], s["metric"], s["setting"]) for s in summary}):
        cells = []
        for kind in kinds:
            s = keyed.get((task, metric, setting, kind))
            if s is None:
                cells.append("")
            else:  # one seed has no spread: say so instead of printing ± 0
                cells.append(f"{s['mean']:.4f} ± {s['std']:.4f}" if s["seeds"] > 1 else f"{s['mean']:.4f} (1 seed)")
        lines.append(f"| {task} | {metric} | {setting} | " + " | ".join(cells) + " |")
    seeds = sorted({s["seeds"] for s in summary})
    params = sorted({(s["task"], s["attention"], s["params"]) for s in summary if s["params"]})
    lines += ["", f"seeds per cell: {', '.join(map(str, seeds))}", "",
              "parameters: " + "; ".join(f"{t}/{a} {p:,}" for t, a, p in params)]
    return "\n".join(lines) + "\n"


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _bar_plot(plt, summary: list[dict], task: str, metric: str, kinds: list[str], path: pathlib.Path) -> None:
    entries = {s["attention"]: s for s in summary if s["task"] == task and s["metric"] == metric and not s["setting"]}
    names = [k for k in kinds if k in entries]
    fig, ax = plt.subplots(figsize=(1.2 + 0.9 * len(names), 3.2))
    ax.bar(names, [entries[k]["mean"] for k in names], yerr=[entries[k]["std"] for k in names], capsize=3,
           color=["tab:red" if k.startswith("nala") else "tab:gray" if k == "softmax" else "tab:blue" for k in names])
    ax.set_title(f"{task}: {metric}")
    ax.tick_params(axis="x", rotation=30)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _mqar_heatmaps(plt, summary: list[dict], kinds: list[str], path: pathlib.Path) -> None:
    entries = [s for s in summary if s["task"] == "mqar" and s["metric"] == "accuracy"]
    cells = {}
    for s in entries:
        length, kv = (int(part.split("=")[1]) for part in s["setting"].split())
        cells[(s["attention"], length, kv)] = s["mean"]
    lengths = sorted({c[1] for c in cells})
    kvs = sorted({c[2] for c in cells})
    names = [k for k in kinds if any(c[0] == k for c in cells)]
    fig, axes = plt.subplots(1, len(names), figsize=(2.4 * len(names) + 1, 2.8), squeeze=False)
    for ax, kind in zip(axes[0], names):
        grid = [[cells.get((kind, n, k), float("nan")) for n in lengths] for k in kvs]
        ax.imshow(grid, vmin=0, vmax=1, cmap="viridis", origin="lower", aspect="auto")
        ax.set_xticks(range(len(lengths)), lengths)
        ax.set_yticks(range(len(kvs)), kvs)
        ax.set_title(kind, fontsize=9)
        ax.set_xlabel("seq len")
        for i, row in enumerate(grid):
            for j, value in enumerate(row):
                if value == value:
                    ax.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=7, color="w")
    axes[0][0].set_ylabel("kv pairs")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_plots(rows: list[dict], out_dir: str | pathlib.Path, kinds: list[str] | None = None) -> list[pathlib.Path]:
    """PNG plots: one bar chart (mean ± std per kind) per task metric, MQAR heat maps, entropy curves.
    Returns the files written (none when matplotlib is missing)."""
    try:
        plt = _pyplot()
    except ImportError:
        return []
    out = pathlib.Path(out_dir) / "plots"
    out.mkdir(parents=True, exist_ok=True)
    summary = summarize(rows)
    kinds = kinds or sorted({s["attention"] for s in summary})
    written = []
    for task, metric in sorted({(s["task"], s["metric"]) for s in summary if not s["setting"]}):
        path = out / f"{task}_{metric}.png"
        _bar_plot(plt, summary, task, metric, kinds, path)
        written.append(path)
    if any(s["task"] == "mqar" for s in summary):
        path = out / "mqar_heatmaps.png"
        _mqar_heatmaps(plt, summary, kinds, path)
        written.append(path)
    from .entropy import plot_entropy_curves

    written += plot_entropy_curves(plt, rows, kinds, out)
    return written
