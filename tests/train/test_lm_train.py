"""train-lm / eval-lm end to end on a tiny corpus: outputs, exact resume, DDP, CLI and input errors."""

from __future__ import annotations

import argparse
import csv
import json
import os
import pathlib
import subprocess
import sys

import pytest

pytest.importorskip("transformers")

from nalaformer.data.text import DEFAULT_CORPUS_DIRS, CorpusError  # noqa: E402
from nalaformer.train.lm import train as train_lm  # noqa: E402
from nalaformer.train.lm import evaluate as lm_evaluate  # noqa: E402
from nalaformer.train.lm.config import LMTrainConfig  # noqa: E402
from nalaformer.train.lm.train import train  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parents[2]


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> pathlib.Path:
    """A dozen small, learnable 'Python' documents."""
    root = tmp_path_factory.mktemp("corpus")
    for i in range(12):
        lines = [f"def add_{i}_{j}(x):\n    return x + {j}\n" for j in range(12)]
        (root / f"doc{i:02d}.txt").write_text(f"Module {i}.\n\n" + "".join(lines))
    return root


def tiny_config(corpus: pathlib.Path, out: pathlib.Path, **overrides) -> LMTrainConfig:
    base = dict(model="nala-tiny", model_overrides={"softmax_layers": [1], "short_conv_size": 3},
                corpus=[str(corpus)], held_out=0.2, seq_len=32, batch_size=2, steps=6, warmup_steps=2,
                eval_every=3, eval_batches=0, sample_every=3, sample_tokens=8, save_every=2, tensorboard=False,
                output_dir=str(out), log_every=100)
    return LMTrainConfig(**{**base, **overrides})


def read_metrics(out: pathlib.Path) -> list[dict]:
    with (out / "metrics.csv").open() as f:
        return list(csv.DictReader(f))


def test_interrupted_and_resumed_run_matches_uninterrupted(corpus, tmp_path):
    full = train(tiny_config(corpus, tmp_path / "full"))
    train(tiny_config(corpus, tmp_path / "split", stop_after=4))
    assert not (tmp_path / "split" / "model").exists()  # stopped early: no final model yet
    resumed = train(tiny_config(corpus, tmp_path / "split", resume="auto"))
    a, b = read_metrics(tmp_path / "full"), read_metrics(tmp_path / "split")
    assert [int(r["step"]) for r in a] == [int(r["step"]) for r in b] == list(range(1, 7))
    for ra, rb in zip(a, b):
        assert abs(float(ra["train_loss"]) - float(rb["train_loss"])) <= 1e-6
        assert (ra["val_loss"] == "") == (rb["val_loss"] == "")
        if ra["val_loss"]:
            assert abs(float(ra["val_loss"]) - float(rb["val_loss"])) <= 1e-6
    assert abs(full["val_ppl"] - resumed["val_ppl"]) <= 1e-5
    outputs = tmp_path / "full"
    assert (outputs / "samples.txt").read_text().count("--- step") == 2
    assert sorted(p.name for p in (outputs / "checkpoints").glob("step_*")) == ["step_00000004", "step_00000006"]
    assert (outputs / "checkpoints" / "latest").read_text() == "step_00000006"
    assert not list((outputs / "checkpoints").glob(".*tmp*")) and not list(outputs.glob(".model.*"))
    if full.get("plot"):
        assert pathlib.Path(full["plot"]).stat().st_size > 0


def test_eval_lm_reproduces_the_held_out_perplexity(corpus, tmp_path, capsys):
    result = train(tiny_config(corpus, tmp_path / "run", steps=3, sample_every=0, save_every=0))
    parser = argparse.ArgumentParser()
    lm_evaluate.add_arguments(parser)
    assert lm_evaluate.run(parser.parse_args([result["model_dir"], "--json", str(tmp_path / "eval.json")])) == 0
    assert "perplexity" in capsys.readouterr().out
    ppl = json.loads((tmp_path / "eval.json").read_text())["perplexity"]["ppl"]
    assert abs(ppl - result["val_ppl"]) <= 1e-4 * result["val_ppl"]
    from transformers import AutoModelForCausalLM

    checkpoint = tmp_path / "run" / "checkpoints" / "step_00000003"
    assert type(AutoModelForCausalLM.from_pretrained(checkpoint)).__name__ == "NaLaForCausalLM"


def test_cli_flags_and_yaml_recipe(corpus, tmp_path):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(f"model: nala-tiny\ncorpus: [{corpus}]\nseq_len: 32\nbatch_size: 2\nsteps: 2\n"
                      "eval_every: 0\nsample_every: 0\ntensorboard: false\n")
    parser = argparse.ArgumentParser()
    train_lm.add_arguments(parser)
    args = parser.parse_args(["--config", str(recipe), "--output-dir", str(tmp_path / "out"), "--model-overrides",
                              '{"short_conv_size": 2}', "--packing", "concat"])
    assert train_lm.run(args) == 0
    config = (tmp_path / "out" / "model" / "config.json").read_text()
    assert '"short_conv_size": 2' in config
    assert len(read_metrics(tmp_path / "out")) == 2


@pytest.mark.skipif(not any(pathlib.Path(d).is_dir() for d in DEFAULT_CORPUS_DIRS),
                    reason="python3.11-doc (the built-in corpus) is not installed")
def test_default_corpus_is_the_python_docs(tmp_path):
    result = train(LMTrainConfig(model="nala-tiny", seq_len=32, batch_size=1, steps=1, eval_batches=1,
                                 sample_every=0, tensorboard=False, output_dir=str(tmp_path)))
    assert result["val_ppl"] > 1
    assert '"corpus": null' in (tmp_path / "model" / "run.json").read_text()


def test_bad_inputs_name_the_argument(corpus, tmp_path):
    with pytest.raises(FileNotFoundError, match="--tokenizer"):
        train(tiny_config(corpus, tmp_path / "a", tokenizer=str(tmp_path / "no-such-tokenizer")))
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "blank.txt").write_text("  \n")
    with pytest.raises(CorpusError, match="--corpus"):
        train(tiny_config(empty, tmp_path / "b"))
    with pytest.raises(CorpusError, match="--corpus"):
        train(tiny_config(tmp_path / "missing-dir", tmp_path / "c"))
    with pytest.raises(ValueError, match="--packing"):
        train(tiny_config(corpus, tmp_path / "d", packing="zip"))
    with pytest.raises(FileNotFoundError, match="--model"):
        train(tiny_config(corpus, tmp_path / "e", model="nala-huge"))


@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_torchrun_matches_one_process(corpus, tmp_path, strategy):
    """Two gloo processes with one sequence each = one process with two sequences (same blocks). FSDP2 also
    stops after 2 steps (a gathered checkpoint and a lock-step sample) and resumes its sharded state."""
    cfg = tiny_config(corpus, tmp_path / "single", packing="concat", steps=3, eval_every=0, sample_every=0,
                      save_every=0)
    train(cfg)
    flags = ["--model", "nala-tiny", "--model-overrides", json.dumps(cfg.model_overrides), "--corpus", str(corpus),
             "--held-out", "0.2", "--seq-len", "32", "--batch-size", "1", "--steps", "3", "--warmup-steps", "2",
             "--packing", "concat", "--eval-every", "0", "--eval-batches", "0", "--sample-every", "0",
             "--save-every", "0", "--tensorboard", "false", "--output-dir", str(tmp_path / "ddp")]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO / "src")}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "nalaformer.train.lm", "--device", "cpu", "--distributed", strategy, *flags]
    runs = [cmd] if strategy == "ddp" else [cmd + ["--stop-after", "2", "--sample-every", "2"],
                                            cmd + ["--resume", "auto"]]
    for command in runs:
        proc = subprocess.run(command, env=env, capture_output=True, text=True, timeout=240)
        assert proc.returncode == 0, proc.stderr[-3000:]
    single, ddp = read_metrics(tmp_path / "single"), read_metrics(tmp_path / "ddp")
    assert len(single) == len(ddp) == 3
    for a, b in zip(single, ddp):
        assert abs(float(a["train_loss"]) - float(b["train_loss"])) <= 2e-5


def test_local_tokenizer_directory_and_bf16_autocast(corpus, tmp_path):
    """A BPE tokenizer trained here from scratch (no download), saved as a Hugging Face directory."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.train([str(p) for p in sorted(corpus.glob("*.txt"))],
              trainers.BpeTrainer(vocab_size=300, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tokenizer_dir = tmp_path / "bpe"
    PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<|endoftext|>").save_pretrained(tokenizer_dir)

    result = train(tiny_config(corpus, tmp_path / "run", tokenizer=str(tokenizer_dir), steps=2, amp="bf16",
                               sample_every=2, save_every=0))
    config = json.loads((tmp_path / "run" / "model" / "config.json").read_text())
    from transformers import AutoTokenizer

    assert config["vocab_size"] == len(AutoTokenizer.from_pretrained(tokenizer_dir)) and config["eos_token_id"] == 0
    assert result["val_ppl"] > 1 and (tmp_path / "run" / "samples.txt").is_file()


@pytest.mark.parametrize("recipe", sorted((REPO / "configs" / "lm").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_recipes_are_valid(recipe):
    from nalaformer.models.lm import PRESETS
    from nalaformer.train.core.config import load_yaml

    config = LMTrainConfig(**load_yaml(recipe))
    assert config.model in PRESETS


def test_resume_with_changed_settings_reports_and_applies_or_refuses(corpus, tmp_path, capsys):
    from nalaformer.train.core.checkpoint import CheckpointError

    quick = dict(steps=4, stop_after=2, eval_every=0, sample_every=0, save_every=0)
    train(tiny_config(corpus, tmp_path / "run", **quick))
    with pytest.raises(CheckpointError, match="cannot change mid-run: --model-overrides"):
        train(tiny_config(corpus, tmp_path / "run", **{**quick, "model_overrides": {"short_conv_size": 2}},
                          resume="auto"))
    result = train(tiny_config(corpus, tmp_path / "run", **{**quick, "steps": 3, "stop_after": None},
                               resume="auto"))
    assert "settings changed since the checkpoint, applied: --steps 4 -> 3" in capsys.readouterr().out
    assert result["step"] == 3 and [int(r["step"]) for r in read_metrics(tmp_path / "run")] == [1, 2, 3]
