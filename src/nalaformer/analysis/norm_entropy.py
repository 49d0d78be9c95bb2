"""Row entropy against query norm, per attention layer of a trained model (the paper's Figure 1 study).

For each layer: the explicit rows of its kind (with its learned parameters) and, as the reference, the
softmax rows of the same q and k; per query row the entropy and ||q||; binned by ||q|| (quantiles) and
summarised by the least-squares slope of entropy against log ||q||. Softmax gets spikier (negative
slope) as ||q|| grows; ReLU-style linear attention is scale invariant (slope ~0); NaLa restores the norm.
"""

from __future__ import annotations

import csv
import json
import math
import pathlib
import re
from dataclasses import dataclass

import torch

from ..layers.kinds import SoftmaxCore
from .capture import CapturedAttention, capture_attention
from .entropy import row_entropy

__all__ = ["LayerEntropy", "layer_entropy", "analyze_model"]


@dataclass
class LayerEntropy:
    """Per query row: ||q|| and entropies of the kind's rows and of softmax's. Tensors (R,).

    Non-causal rows: nats. Causal rows see i + 1 keys, so their entropy is divided by log(i + 1) (1 =
    uniform over the visible keys; the first row, with one key, is left out): otherwise position, not
    ||q||, would dominate. ``unit`` says which."""

    name: str
    kind: str
    q_norm: torch.Tensor
    entropy: torch.Tensor
    softmax_entropy: torch.Tensor
    unit: str = "nats"


def _slope(x: torch.Tensor, y: torch.Tensor) -> float:
    """Least-squares slope of y on x (nan with fewer than two distinct x)."""
    x, y = x.double(), y.double()
    dx = x - x.mean()
    var = (dx * dx).sum()
    return float((dx * (y - y.mean())).sum() / var) if var > 0 else math.nan


@torch.no_grad()
def layer_entropy(layer: CapturedAttention, *, max_queries: int = 256, max_sequences: int = 4,
                  seed: int = 0) -> LayerEntropy:
    """Rows of up to ``max_sequences`` sequences; non-causal layers use ``max_queries`` random queries
    per sequence against all keys (causal layers all N x N rows). Computed in float64."""
    q, k = layer.q[:max_sequences].double(), layer.k[:max_sequences].double()
    n = q.shape[1]
    if not layer.causal and n > max_queries:
        pick = torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:max_queries].to(q.device)
        q = q[:, pick]
    w = layer.core.weights(q, k, causal=layer.causal)  # (B, H, [G,] Nq, Nk)
    ent = row_entropy(w)
    if ent.dim() == 4:  # polarity: mean over its same-sign and opposite-sign maps
        ent = ent.mean(2)
    ref = row_entropy(SoftmaxCore.rows(q.transpose(1, 2), k.transpose(1, 2), causal=layer.causal))
    norm = torch.linalg.vector_norm(q, dim=-1).transpose(1, 2)  # (B, H, Nq)
    if not layer.causal:
        return LayerEntropy(layer.name, layer.kind, norm.flatten().cpu(), ent.flatten().cpu(), ref.flatten().cpu())
    uniform = torch.arange(1, n + 1, device=q.device, dtype=q.dtype).log()[1:]
    norm, ent, ref = norm[..., 1:], ent[..., 1:] / uniform, ref[..., 1:] / uniform
    return LayerEntropy(layer.name, layer.kind, norm.flatten().cpu(), ent.flatten().cpu(), ref.flatten().cpu(),
                        unit="fraction of log(visible keys)")


def binned(result: LayerEntropy, bins: int = 10) -> list[dict]:
    """Quantile bins of ||q||: count, norm range and mean, mean entropy of the kind and of softmax."""
    order = torch.argsort(result.q_norm)
    rows = []
    for chunk in torch.tensor_split(order, min(bins, max(len(order), 1))):
        if len(chunk) == 0:
            continue
        norm = result.q_norm[chunk]
        rows.append({"q_norm_low": norm.min().item(), "q_norm_high": norm.max().item(),
                     "q_norm_mean": norm.mean().item(), "count": len(chunk),
                     f"entropy_{result.kind}": result.entropy[chunk].mean().item(),
                     "entropy_softmax": result.softmax_entropy[chunk].mean().item()})
    return rows


def _summary(index: int, result: LayerEntropy) -> dict:
    keep = result.q_norm > 0
    log_norm = result.q_norm[keep].log()
    return {"layer": index, "name": result.name, "kind": result.kind, "unit": result.unit, "rows": int(keep.sum()),
            "slope": _slope(log_norm, result.entropy[keep]),
            "softmax_slope": _slope(log_norm, result.softmax_entropy[keep]),
            "mean_entropy": result.entropy.mean().item(), "mean_softmax_entropy": result.softmax_entropy.mean().item()}


def _write_csv(path: pathlib.Path, rows: list[dict]) -> None:
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def _plot(path: pathlib.Path, result: LayerEntropy, rows: list[dict], title: str) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, ax = plt.subplots(figsize=(5, 3.6))
    ax.scatter(result.q_norm, result.entropy, s=2, alpha=0.15, color="C0")
    ax.scatter(result.q_norm, result.softmax_entropy, s=2, alpha=0.15, color="C1")
    x = [r["q_norm_mean"] for r in rows]
    ax.plot(x, [r[f"entropy_{result.kind}"] for r in rows], "o-", color="C0", label=result.kind)
    ax.plot(x, [r["entropy_softmax"] for r in rows], "s--", color="C1", label="softmax (same q, k)")
    ax.set_xscale("log")
    ax.set_xlabel("||q||")
    ax.set_ylabel(f"row entropy ({result.unit})")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def _file_stem(index: int, name: str) -> str:
    return f"{index:02d}_" + re.sub(r"[^A-Za-z0-9_.-]+", "_", name)


@torch.no_grad()
def analyze_model(model: torch.nn.Module, batch, out_dir, *, bins: int = 10, max_queries: int = 256,
                  max_sequences: int = 4, seed: int = 0) -> list[dict]:
    """Run ``model`` on ``batch`` (a tensor, or a dict of keyword inputs), capture every attention layer's
    q and k, and write ``out_dir/layers/NN_NAME.csv`` (+ ``.png``), ``summary.csv`` and ``summary.json``.
    Returns the summary rows (one per layer: kind, slope of entropy vs log ||q|| and softmax's, means)."""
    out = pathlib.Path(out_dir)
    (out / "layers").mkdir(parents=True, exist_ok=True)
    model.eval()
    with capture_attention(model) as layers:
        model(**batch) if isinstance(batch, dict) else model(batch)
    summary = []
    for index, layer in enumerate(layers):
        result = layer_entropy(layer, max_queries=max_queries, max_sequences=max_sequences, seed=seed + index)
        rows = binned(result, bins)
        stem = _file_stem(index, layer.name)
        _write_csv(out / "layers" / f"{stem}.csv", rows)
        entry = _summary(index, result)
        entry["plot"] = _plot(out / "layers" / f"{stem}.png", result, rows,
                              f"{layer.name} ({layer.kind}): slope {entry['slope']:.3f} vs softmax "
                              f"{entry['softmax_slope']:.3f}")
        summary.append(entry)
    _write_csv(out / "summary.csv", summary)
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary

