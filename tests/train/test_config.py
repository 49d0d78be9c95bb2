"""Flag and YAML values are validated once, with the option named (train, train-lm, eval, eval-lm)."""

from __future__ import annotations

import argparse

import pytest

from nalaformer.train.core.config import add_dataclass_arguments, config_from_args
from nalaformer.train.lm.config import LMTrainConfig
from nalaformer.train.vision.config import VisionTrainConfig


def _config(cls, argv):
    parser = argparse.ArgumentParser()
    add_dataclass_arguments(parser, cls)
    return config_from_args(cls, parser.parse_args(argv))


@pytest.mark.parametrize("cls,argv,message", [
    (VisionTrainConfig, ["--epochs", "0"], "--epochs: expected a value >= 1, got 0"),
    (VisionTrainConfig, ["--batch-size", "0"], "--batch-size: expected a value >= 1, got 0"),
    (VisionTrainConfig, ["--workers", "-1"], "--workers: expected a value >= 0"),
    (VisionTrainConfig, ["--compile-mode", "fast"], "--compile-mode: expected one of default, reduce-overhead"),
    (LMTrainConfig, ["--steps", "0"], "--steps: expected a value >= 1, got 0"),
    (LMTrainConfig, ["--seq-len", "1"], "--seq-len: expected a value >= 2"),
])
def test_out_of_range_flags_are_refused(cls, argv, message):
    with pytest.raises(ValueError, match=message):
        _config(cls, argv)


def test_yaml_types_are_checked(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("epochs: 2.5\n")
    with pytest.raises(ValueError, match="--epochs: expected an integer, got 2.5"):
        _config(VisionTrainConfig, ["--config", str(recipe)])
    recipe.write_text("lr: true\n")
    with pytest.raises(ValueError, match="--lr: expected a number, got True"):
        _config(VisionTrainConfig, ["--config", str(recipe)])
    recipe.write_text("epochs: 3\nlr: 1e-3\n")
    assert _config(VisionTrainConfig, ["--config", str(recipe)]).epochs == 3


def test_eval_batch_sizes_must_be_positive():
    from nalaformer.cli import main

    for argv in (["eval", "--run", "x", "--batch-size", "0"], ["eval-lm", "x", "--batch-size", "0"]):
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        assert exit_info.value.code == 2


def test_unknown_model_overrides_are_refused():
    from nalaformer.models.lm import NaLaByteTokenizer
    from nalaformer.train.lm.build import build_model

    with pytest.raises(ValueError, match="--model-overrides: unknown NaLaConfig key\\(s\\) hidden_sise"):
        build_model("nala-tiny", NaLaByteTokenizer(), {"hidden_sise": 8})
    assert build_model("nala-tiny", NaLaByteTokenizer(), {"num_hidden_layers": 1}).config.num_hidden_layers == 1
