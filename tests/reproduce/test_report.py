"""The markdown table (mean ± std over seeds) and the plots."""

from __future__ import annotations

import pytest

from nalaformer.reproduce.report import markdown_table, summarize, write_plots


def _rows():
    rows = []
    for kind, values in (("nala", (0.8, 0.9)), ("softmax", (0.7, 0.7))):
        for seed, v in enumerate(values):
            rows.append(dict(task="fashion_mnist", attention=kind, seed=seed, metric="top1", value=v, params=100))
            for kv, acc in ((2, v), (4, v / 2)):
                rows.append(dict(task="mqar", attention=kind, seed=seed, metric="accuracy", value=acc, seq_len=64,
                                 num_kv_pairs=kv, params=50))
    return rows


def test_summary_mean_and_sample_std():
    summary = {(s["task"], s["setting"], s["attention"]): s for s in summarize(_rows())}
    nala = summary[("fashion_mnist", "", "nala")]
    assert nala["mean"] == pytest.approx(0.85) and nala["std"] == pytest.approx(0.0707107, rel=1e-5)
    assert nala["seeds"] == 2
    assert summary[("mqar", "L=64 kv=4", "softmax")]["mean"] == pytest.approx(0.35)


def test_markdown_table_has_a_column_per_kind():
    table = markdown_table(_rows(), ["softmax", "nala"])
    assert "| task | metric | setting | softmax | nala |" in table
    assert "| fashion_mnist | top1 |  | 0.7000 ± 0.0000 | 0.8500 ± 0.0707 |" in table
    assert "| mqar | accuracy | L=64 kv=2 |" in table


def test_plots_are_written(tmp_path):
    pytest.importorskip("matplotlib")
    written = write_plots(_rows(), tmp_path, ["softmax", "nala"])
    names = {p.name for p in written}
    assert {"fashion_mnist_top1.png", "mqar_heatmaps.png"} <= names
    assert all(p.stat().st_size > 1000 for p in written)


def test_one_seed_is_shown_without_a_spread():
    rows = [r for r in _rows() if not (r["attention"] == "nala" and r["seed"] == 1)]
    table = markdown_table(rows, ["softmax", "nala"])
    assert "(1 seed)" in table and "± 0.0000 |" in table  # softmax's two equal seeds keep their (zero) std


def test_entropy_csvs_are_found_after_the_results_folder_moved(tmp_path):
    from nalaformer.reproduce.entropy import _entropy_dir

    moved = tmp_path / "study" / "cells" / "mqar-nala-s0" / "entropy"
    moved.mkdir(parents=True)
    assert _entropy_dir("/elsewhere/cells/mqar-nala-s0/entropy", tmp_path / "study") == moved
    assert _entropy_dir(str(moved), tmp_path / "other") == moved  # a path that exists is kept
