"""Explicit attention rows of every kind, and `nalaformer analyze` on tiny trained vision and language runs."""

from __future__ import annotations

import csv
import json
import pathlib

import pytest
import torch

from nalaformer.analysis import attention_weights, entropy_vs_query_norm
from nalaformer.cli import main
from nalaformer.layers import KINDS
from tests.layers.kinds import zoo_math
from tests.train.conftest import synthetic_fashion, write_idx


@pytest.mark.parametrize("kind", tuple(KINDS))
def test_attention_weights_of_every_kind(kind):
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(3, 11, 8, generator=g, dtype=torch.float64) for _ in range(3))
    for causal in (False, True):
        w = attention_weights(q, k, kind, causal=causal)
        assert w.shape == ((3, 2, 11, 11) if kind == "polarity" else (3, 11, 11))
        assert ((w.sum(-1) - 1).abs() < 1e-3).float().mean() > 0.9 and (w >= 0).all()
        # the rows give the oracle's output (learned parameters at their initial values)
        params = {"power": 3.0, "scale": torch.tensor(2.0).log()} if kind in ("focused", "polarity") else {}
        o = (torch.einsum("bgij,bjge->bige", w, v.unflatten(-1, (2, 4))).flatten(-2) if kind == "polarity"
             else w @ v)
        expected = zoo_math.attention(kind, q[:, :, None], k[:, :, None], v[:, :, None], causal, **params)[:, :, 0]
        assert (o - expected).abs().max() <= 1e-10


def test_unknown_kind_and_parameters():
    q = torch.randn(4, 8)
    with pytest.raises(ValueError, match="kind: expected one of"):
        attention_weights(q, q, "linear")
    with pytest.raises(ValueError, match="lam: expected"):
        attention_weights(q, q, "nala", lam=float("inf"))
    w = attention_weights(q, q, "nala_cosine", alpha=5.0)
    assert torch.allclose(w, attention_weights(q, q, "nala", inhibit="cosine", alpha=5.0))


def test_entropy_gap_the_paper_describes():
    ent = entropy_vs_query_norm([0.5, 2.0, 8.0], kinds=("softmax", "nala", "relu_linear", "elu_linear", "focused"))
    assert ent["softmax"][0] > ent["softmax"][-1] + 0.5 and ent["nala"][0] > ent["nala"][-1] + 0.1
    assert abs(ent["relu_linear"][0] - ent["relu_linear"][-1]) < 1e-4  # scale invariant (up to eps)


def _summary(out: pathlib.Path) -> list[dict]:
    rows = json.loads((out / "summary.json").read_text())
    for row in rows:
        layer_csv = out / "layers" / f"{row['layer']:02d}_{row['name']}.csv"
        with layer_csv.open() as f:
            bins = list(csv.DictReader(f))
        assert bins and sum(int(b["count"]) for b in bins) == row["rows"]
        assert (out / "layers" / f"{row['layer']:02d}_{row['name']}.png").is_file()
    return rows


def test_analyze_a_trained_vision_run(tmp_path, capsys):
    from nalaformer.train.vision.train import Trainer
    from tests.train.test_vision_trainer import tiny_config

    data = tmp_path / "fmnist"
    data.mkdir()
    for split, n, seed in (("train", 64, 0), ("t10k", 16, 1)):
        images, labels = synthetic_fashion(n, seed)
        write_idx(data / f"{split}-images-idx3-ubyte.gz", images)
        write_idx(data / f"{split}-labels-idx1-ubyte.gz", labels)
    cfg = tiny_config(tmp_path, data, epochs=1, max_eval_batches=1)
    cfg.model_kwargs["attn_types"] = ["nala", "polarity", "focused", "softmax"]
    Trainer(cfg).fit()
    run = pathlib.Path(cfg.output_dir)
    assert main(["analyze", str(run), "--batch-size", "2", "--max-queries", "64"]) == 0
    rows = _summary(run / "analysis")
    assert [r["kind"] for r in rows][:1] == ["nala"] and {r["kind"] for r in rows} == {"nala", "polarity", "focused",
                                                                                         "softmax"}
    assert all(r["slope"] == r["slope"] for r in rows)  # finite slopes (not NaN)
    assert "slope" in capsys.readouterr().out


def test_analyze_a_trained_language_model(tmp_path):
    from nalaformer.train.lm.train import train
    from tests.train.test_lm_train import tiny_config

    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for i in range(6):
        (corpus / f"doc{i}.txt").write_text("".join(f"def f_{i}_{j}(x):\n    return x * {j}\n" for j in range(10)))
    overrides = {"softmax_layers": [1], "attn_type": "focused"}
    result = train(tiny_config(corpus, tmp_path / "run", steps=2, sample_every=0, save_every=0, eval_every=0,
                               model_overrides=overrides))
    out = tmp_path / "lm_analysis"
    assert main(["analyze", result["model_dir"], "--out", str(out), "--batch-size", "2", "--seq-len", "24"]) == 0
    rows = _summary(out)
    assert [r["kind"] for r in rows] == ["focused", "softmax"]
    assert rows[1]["slope"] == pytest.approx(rows[1]["softmax_slope"])


def test_analyze_refuses_an_unknown_directory(tmp_path, capsys):
    assert main(["analyze", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "nalaformer analyze: error: target: " in err and "neither a training run" in err
    with pytest.raises(FileNotFoundError, match="target: .* neither a training run"):
        main(["analyze", str(tmp_path), "--debug"])
