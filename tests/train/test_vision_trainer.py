"""The vision trainer: a short real run, exact resume after a kill, checkpoint format, bad input."""

from __future__ import annotations

import csv
import os
import pathlib
import signal
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file

from nalaformer.train.core import checkpoint as ckpt_mod
from nalaformer.train.core.checkpoint import CheckpointError, latest_checkpoint
from nalaformer.train.vision.config import VisionTrainConfig
from nalaformer.train.vision.train import Trainer

TINY = dict(embed_dims=[16, 32, 32, 64], depths=[1, 1, 1, 1], num_heads=[1, 2, 2, 4], mlp_ratios=[2, 2, 2, 2],
            head_hidden_size=64)


def tiny_config(tmp_path, data_dir, **overrides) -> VisionTrainConfig:
    base = dict(model="nalaformer_xt", model_kwargs=dict(TINY), data_dir=str(data_dir), epochs=2, batch_size=32,
                output_dir=str(tmp_path / "run"), tensorboard=False, lr=2e-3, warmup_epochs=0.0, log_every=1000)
    base.update(overrides)
    return VisionTrainConfig(**base)


def _column(run_dir: pathlib.Path, name: str) -> list[str]:
    with open(run_dir / "metrics.csv") as f:
        return [r[name] for r in csv.DictReader(f)]


def losses(run_dir: pathlib.Path) -> list[float]:
    return [float(x) for x in _column(run_dir, "train_loss")]


def test_short_run_learns_and_writes_everything(tmp_path, fashion_dir, capsys):
    cfg = tiny_config(tmp_path, fashion_dir, epochs=5, keep_last=2, tensorboard=True)
    metrics = Trainer(cfg).fit()
    out = pathlib.Path(cfg.output_dir)
    train_losses = losses(out)
    assert train_losses[-1] < 0.8 * train_losses[0]  # a working loop learns the easy synthetic classes
    assert metrics["top1"] > 0.8  # chance is 0.1 (BatchNorm's running statistics need a few epochs)
    assert sorted(p.name for p in (out / "checkpoints").glob("epoch_*")) == ["epoch_0003", "epoch_0004"]
    assert latest_checkpoint(out / "checkpoints").name == "epoch_0004"
    state = torch.load(out / "checkpoints" / "epoch_0004" / "state.pt", weights_only=True)
    assert state["epoch"] == 4 and state["run"]["model"] == "nalaformer_xt"
    weights = load_file(out / "checkpoints" / "epoch_0004" / "model.safetensors")
    assert all(torch.isfinite(t).all() for t in weights.values() if t.is_floating_point())
    from safetensors import safe_open

    with safe_open(str(out / "best.safetensors"), "pt") as f:
        assert abs(float(f.metadata()["top1"]) - max(float(r) for r in _column(out, "test_top1"))) < 1e-6
    assert len(losses(out)) == 5 and (out / "run.json").is_file()
    assert (out / "tensorboard").is_dir()
    printed = capsys.readouterr().out
    assert "test accuracy: " in printed and "checkpoints: " in printed
    assert "torch kernels " in printed and "speed probe: " in printed and " min for 5 epoch(s)" in printed


def test_resume_after_kill_matches_uninterrupted_run(tmp_path, fashion_dir):
    args = ["--model-kwargs", __import__("json").dumps(TINY), "--data-dir", str(fashion_dir), "--epochs", "4",
            "--batch-size", "32", "--lr", "2e-3", "--warmup-epochs", "0.5", "--tensorboard", "false",
            "--model-ema", "true", "--log-every", "1000", "--max-train-batches", "6", "--max-eval-batches", "2"]
    cmd = [sys.executable, "-m", "nalaformer", "train"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    full = tmp_path / "full"
    subprocess.run(cmd + args + ["--output-dir", str(full)], check=True, env=env, capture_output=True)

    cut = tmp_path / "cut"
    proc = subprocess.Popen(cmd + args + ["--output-dir", str(cut)], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    pointer = cut / "checkpoints" / "latest"
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if pointer.is_file() and pointer.read_text().strip() == "epoch_0000":
            proc.send_signal(signal.SIGKILL)  # killed somewhere inside epoch 2
            break
        time.sleep(0.01)
    assert proc.wait() == -signal.SIGKILL, "the run finished before it could be killed"
    assert len(losses(cut)) == 1
    subprocess.run(cmd + args + ["--output-dir", str(cut), "--resume", "auto"], check=True, env=env,
                   capture_output=True)
    a, b = losses(full), losses(cut)
    assert len(a) == len(b) == 4
    assert max(abs(x - y) for x, y in zip(a, b)) <= 1e-6, (a, b)


def test_failed_save_keeps_previous_checkpoint(tmp_path, fashion_dir, monkeypatch):
    cfg = tiny_config(tmp_path, fashion_dir, epochs=2, max_train_batches=2)
    trainer = Trainer(cfg)
    real_save = ckpt_mod.save_file
    calls = {"n": 0}

    def flaky_save(*a, **k):
        calls["n"] += 1
        if calls["n"] > 2:  # epoch 0 writes model + best weights; epoch 1's checkpoint hits a full disk
            raise OSError(28, "No space left on device")
        return real_save(*a, **k)

    monkeypatch.setattr(ckpt_mod, "save_file", flaky_save)
    with pytest.raises(CheckpointError, match="No space left on device.*epoch_0000 is intact"):
        trainer.fit()
    root = pathlib.Path(cfg.output_dir) / "checkpoints"
    assert latest_checkpoint(root).name == "epoch_0000"
    assert [p.name for p in root.iterdir() if p.name.startswith(".")] == []  # no temp leftovers
    ckpt_mod.load_checkpoint(root)  # still loads


def test_resume_from_another_model_is_refused(tmp_path, fashion_dir):
    cfg = tiny_config(tmp_path, fashion_dir, epochs=1, max_train_batches=1, max_eval_batches=1)
    Trainer(cfg).fit()
    other = tiny_config(tmp_path, fashion_dir, model="test_resnet", model_kwargs={}, resume="auto")
    with pytest.raises(CheckpointError, match="holds model 'nalaformer_xt'"):
        Trainer(other)


def test_bad_config_and_data(tmp_path, fashion_dir):
    from nalaformer.cli import main

    bad = tmp_path / "bad.yaml"
    bad.write_text("epochs: 1\nlearning_rate: 0.1\n")
    with pytest.raises(ValueError, match="unknown option\\(s\\) learning_rate"):
        main(["train", "--config", str(bad), "--debug"])
    with pytest.raises(FileNotFoundError, match="--data-dir: .*does not exist"):
        Trainer(tiny_config(tmp_path, tmp_path / "missing"))
    empty = tmp_path / "empty"
    (empty / "train").mkdir(parents=True)
    (empty / "val").mkdir()
    with pytest.raises(FileNotFoundError, match="holds no images"):
        Trainer(tiny_config(tmp_path, empty, dataset="folder"))


def test_image_folder_skips_corrupt_images(tmp_path, capsys):
    from PIL import Image

    root = tmp_path / "imgs"
    for split in ("train", "val"):
        for c in range(2):
            d = root / split / f"class{c}"
            d.mkdir(parents=True)
            for i in range(6 - (c == 0)):  # 12 files per split with the broken one: no partial batch
                Image.new("RGB", (40, 40), (200 * c, 50, 100)).save(d / f"{i}.png")
    (root / "train" / "class0" / "broken.png").write_bytes(b"not a png")
    cfg = tiny_config(tmp_path, root, dataset="folder", epochs=1, batch_size=4, img_size=32)
    with pytest.warns(RuntimeWarning, match="skipping unreadable image"):
        Trainer(cfg).fit()
    assert "skipped 1 unreadable image(s)" in capsys.readouterr().out


def test_recipe_features_run_together(tmp_path, fashion_dir):
    """Mixup + CutMix (soft targets), layer decay, repeated augmentation, accumulation, clipping, bf16
    autocast and grad checkpointing in one short run: finite, and every update reaches the weights."""
    cfg = tiny_config(tmp_path, fashion_dir, epochs=1, max_train_batches=4, max_eval_batches=2, mixup=0.8,
                      cutmix=1.0, smoothing=0.1, layer_decay=0.75, repeated_aug=2, accum_steps=2, clip_grad=1.0,
                      amp="bf16", grad_checkpointing=True, model_ema=True)
    trainer = Trainer(cfg)
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    metrics = trainer.fit()
    assert trainer.num_updates == 2  # 4 micro-batches / 2 accumulation steps
    assert len({g["lr_scale"] for g in trainer.optimizer.param_groups if "lr_scale" in g}) > 1  # layer decay
    changed = [n for n, p in trainer.model.named_parameters() if not torch.equal(p.detach(), before[n])]
    assert len(changed) > 0.9 * len(before)
    assert 0.0 <= metrics["top1"] <= 1.0 and all(torch.isfinite(torch.tensor(x)) for x in losses(trainer.out))


def test_compiled_run_trains_and_writes_plain_checkpoints(tmp_path, fashion_dir):
    """--compile: the compiled model trains, and its checkpoints carry the plain model's keys (no _orig_mod.).
    With --compile-mode reduce-overhead (CUDA graphs on a GPU; on the CPU inductor leaves them out)."""
    torch._dynamo.reset()
    cfg = tiny_config(tmp_path, fashion_dir, epochs=1, max_train_batches=3, max_eval_batches=1, compile=True,
                      compile_mode="reduce-overhead")
    trainer = Trainer(cfg)
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    metrics = trainer.fit()
    assert 0.0 <= metrics["top1"] <= 1.0
    assert sum(not torch.equal(p.detach(), before[n]) for n, p in trainer.model.named_parameters()) > 0
    weights = load_file(pathlib.Path(cfg.output_dir) / "checkpoints" / "epoch_0000" / "model.safetensors")
    assert weights and not any(k.startswith("_orig_mod.") for k in weights)
    resumed = Trainer(tiny_config(tmp_path, fashion_dir, epochs=2, max_train_batches=3, max_eval_batches=1,
                                  resume="auto"))
    assert resumed.start_epoch == 1


def test_resume_with_changed_settings_reports_and_applies_or_refuses(tmp_path, fashion_dir, capsys):
    Trainer(tiny_config(tmp_path, fashion_dir, epochs=1, max_train_batches=2, max_eval_batches=1)).fit()
    longer = Trainer(tiny_config(tmp_path, fashion_dir, epochs=3, max_train_batches=2, max_eval_batches=1,
                                 min_lr=1e-4, resume="auto"))
    assert "settings changed since the checkpoint, applied: --epochs 1 -> 3, --min-lr 1e-05 -> 0.0001" in \
        capsys.readouterr().out
    assert longer.start_epoch == 1 and longer.scheduler.t_initial == 3 * longer.updates_per_epoch
    assert longer.optimizer.param_groups[0]["lr"] == pytest.approx(
        longer.scheduler._get_lr(longer.num_updates)[0])  # the new schedule's lr at the resumed update
    with pytest.raises(CheckpointError, match="cannot change mid-run: --img-size 32 -> 48"):
        Trainer(tiny_config(tmp_path, fashion_dir, epochs=3, img_size=48, resume="auto"))


@pytest.mark.parametrize("opt, fused", [("adamw", True), ("sgd", None)])
def test_adam_steps_are_fused(tmp_path, fashion_dir, opt, fused):
    trainer = Trainer(tiny_config(tmp_path, fashion_dir, epochs=1, max_train_batches=1, max_eval_batches=1, opt=opt))
    assert trainer.optimizer.param_groups[0].get("fused") is fused
