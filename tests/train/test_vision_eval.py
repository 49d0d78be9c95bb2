"""`nalaformer eval` and `nalaformer predict` on a run written by the trainer."""

from __future__ import annotations

import json
import pathlib

import numpy as np
import pytest

from nalaformer.cli import main
from nalaformer.train.vision.train import Trainer
from tests.train.test_vision_trainer import tiny_config


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory, fashion_dir) -> pathlib.Path:
    tmp = tmp_path_factory.mktemp("evalrun")
    cfg = tiny_config(tmp, fashion_dir, epochs=1, max_train_batches=4, max_eval_batches=1)
    Trainer(cfg).fit()
    return pathlib.Path(cfg.output_dir)


def test_eval_reports_accuracy_and_confusion(trained_run, fashion_dir, capsys):
    assert main(["eval", "--run", str(trained_run), "--data-dir", str(fashion_dir)]) == 0
    result = json.loads((trained_run / "eval.json").read_text())
    assert result["images"] == 128 and 0.0 <= result["top1"] <= result["top5"] <= 1.0
    assert set(result["per_class"]) == {"T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                                        "Sneaker", "Bag", "Ankle boot"}
    assert (trained_run / "confusion.png").stat().st_size > 1000
    assert "images/s" in capsys.readouterr().out


def test_predict_prints_top_k(trained_run, tmp_path, capsys):
    from PIL import Image

    path = tmp_path / "shirt.png"
    Image.fromarray(np.full((28, 28), 120, dtype=np.uint8)).save(path)
    assert main(["predict", str(path), "--run", str(trained_run), "--top-k", "2"]) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith(str(path)) and line.count(",") == 1
    with pytest.raises(ValueError, match="images: cannot read"):
        main(["predict", str(tmp_path / "missing.png"), "--run", str(trained_run), "--debug"])
    with pytest.raises(FileNotFoundError, match="--run: .* is not a training run"):
        main(["predict", str(path), "--run", str(tmp_path), "--debug"])


def test_recipes_parse():
    import argparse

    from nalaformer.train.core.config import config_from_args
    from nalaformer.train.vision.config import VisionTrainConfig

    recipes = sorted(pathlib.Path(__file__).resolve().parents[2].glob("configs/vision/*.yaml"))
    assert len(recipes) == 6
    for recipe in recipes:
        args = argparse.Namespace(config=recipe)
        cfg = config_from_args(VisionTrainConfig, args)
        assert cfg.epochs >= 1 and isinstance(cfg.lr_base, float)
    defaults = VisionTrainConfig()
    written = config_from_args(VisionTrainConfig, argparse.Namespace(config=recipes[0]))
    assert recipes[0].name == "fashion_mnist.yaml" and written == defaults  # the YAML is the built-in default
