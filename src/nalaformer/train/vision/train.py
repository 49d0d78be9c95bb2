"""``nalaformer train``: train a timm image model (NaLaFormer by default) on Fashion-MNIST or ImageFolder.

Built from timm's parts (transforms, Mixup/CutMix, soft-target and label-smoothing losses,
``create_optimizer_v2`` with layer decay, ``create_scheduler_v2``, ``ModelEmaV3``, repeated
augmentation); AMP, accumulation, clipping, channels_last, torch.compile, grad checkpointing;
torchrun DDP/FSDP2; atomic checkpoints and exact resume.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import pathlib
import time

import torch
import torch.nn.functional as F

from ..core.checkpoint import CheckpointError, latest_checkpoint, load_checkpoint, save_checkpoint, save_weights_atomic
from ..core.config import (add_dataclass_arguments, changed_settings, config_from_args, describe_changes,
                           validate_config)
from ..core.distributed import (
    all_reduce_sum, apply_gradients, barrier, DistEnv, full_optimizer_state, full_state_dict, init_distributed,
    load_full_state, no_sync_if, unwrap, wrap_model,
)
from ..core.loop import backward
from ..core.metrics import MetricsLog, plot_metrics
from ..core.precision import autocast, resolve_amp
from ..core.progress import progress_bar
from ..core.rundir import claim_output_dir, run_lock
from ..core.seeding import rng_state, seed_everything, set_rng_state
from .config import VisionTrainConfig
from .data import build_vision_data, prepare, unpack_batch

HELP = "train a vision model (default: a small NaLaFormer on Fashion-MNIST)"

VISION_FIELDS = ["epoch", "train_loss", "test_loss", "test_top1", "test_top5", "lr", "train_img_per_s",
                 "epoch_seconds"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_dataclass_arguments(parser, VisionTrainConfig)


# settings that do not change a run's result (not reported on resume) / that a resumed run cannot change
_BOOKKEEPING = {"resume", "overwrite", "output_dir", "log_every", "tensorboard", "device", "workers", "data_dir",
                "download", "keep_last", "eval_batch_size", "max_eval_batches", "compile", "compile_mode",
                "distributed"}
_FIXED_ON_RESUME = {"model", "model_kwargs", "dataset", "img_size", "opt", "model_ema", "pretrained_file"}


def _shard_units() -> tuple[type, ...]:
    """The modules FSDP2 shards one by one (NaLaFormer's blocks; other timm models shard at the root)."""
    from ...layers import NaLaBlock

    return (NaLaBlock,)


def build_model(cfg: VisionTrainConfig, num_classes: int, in_chans: int) -> torch.nn.Module:
    import timm

    import nalaformer  # noqa: F401  (registers the NaLaFormer family with timm)

    kwargs = dict(cfg.model_kwargs)
    if cfg.drop_path is not None:
        kwargs["drop_path_rate"] = cfg.drop_path
    if cfg.pretrained_file:
        kwargs.update(pretrained=True, pretrained_cfg_overlay=dict(file=cfg.pretrained_file))
    return timm.create_model(cfg.model, num_classes=num_classes, in_chans=in_chans, **kwargs)


def _loss_fn(cfg: VisionTrainConfig, mixing: bool):
    from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy

    if mixing:
        return SoftTargetCrossEntropy()
    if cfg.smoothing > 0:
        return LabelSmoothingCrossEntropy(smoothing=cfg.smoothing)
    return torch.nn.CrossEntropyLoss()


@torch.no_grad()
def evaluate(model, loader, env: DistEnv, cfg, transform, amp_dtype, num_classes: int, max_batches=None) -> dict:
    """Top-1/top-5 accuracy and loss over the (sharded) eval set, summed over ranks."""
    model.eval()
    loss_sum = top1 = top5 = count = 0.0
    per_class_correct = torch.zeros(num_classes, dtype=torch.float64)
    per_class_total = torch.zeros(num_classes, dtype=torch.float64)
    for i, batch in enumerate(loader):
        if max_batches is not None and i >= max_batches:
            break
        x, y, _ = unpack_batch(batch)
        if x is None:
            continue
        x, y = prepare(x, y, env.device, transform, cfg.channels_last)
        with autocast(env.device, amp_dtype):
            logits = model(x)
        logits = logits.float()
        loss_sum += torch.nn.functional.cross_entropy(logits, y, reduction="sum").item()
        top = logits.topk(min(5, num_classes), dim=-1).indices
        hit1 = top[:, 0] == y
        top1 += hit1.sum().item()
        top5 += (top == y[:, None]).any(-1).sum().item()
        count += y.numel()
        per_class_total += torch.bincount(y.cpu(), minlength=num_classes).double()
        per_class_correct += torch.bincount(y[hit1].cpu(), minlength=num_classes).double()
    loss_sum, top1, top5, count = all_reduce_sum([loss_sum, top1, top5, count], env)
    counts = all_reduce_sum(per_class_correct.tolist() + per_class_total.tolist(), env)
    per_class = [c / t if t else float("nan") for c, t in zip(counts[:num_classes], counts[num_classes:])]
    n = max(count, 1)
    return {"loss": loss_sum / n, "top1": top1 / n, "top5": top5 / n, "count": int(count),
            "per_class": per_class}


def _compiled(model: torch.nn.Module, mode: str) -> torch.nn.Module:
    """torch.compile with --compile-mode (validated with the config: COMPILE_MODES)."""
    return torch.compile(model, mode=None if mode == "default" else mode)


class Trainer:
    """One training run: setup, the epoch loop, checkpoints and reports."""

    def __init__(self, cfg: VisionTrainConfig):
        from timm.data import Mixup
        from timm.optim import create_optimizer_v2
        from timm.scheduler import create_scheduler_v2
        from timm.utils import ModelEmaV3

        validate_config(cfg)
        self.cfg = cfg
        self.env = init_distributed(cfg.device)
        seed_everything(cfg.seed)
        self.out = pathlib.Path(cfg.output_dir)
        self.ckpt_dir = self.out / "checkpoints"
        if self.env.is_main or not cfg.overwrite:
            claim_output_dir(self.out, resume=cfg.resume, overwrite=cfg.overwrite)
        self.data = build_vision_data(cfg, self.env)
        self.num_classes = len(self.data.classes)
        model = build_model(cfg, self.num_classes, self.data.in_chans)
        if cfg.grad_checkpointing:
            model.set_grad_checkpointing(True)
        model.to(self.env.device)
        if cfg.channels_last and not (cfg.distributed == "fsdp" and self.env.distributed):
            model.to(memory_format=torch.channels_last)  # FSDP2 shards contiguous weights only (inputs stay NHWC)
        self.model_name = cfg.model
        self.ema = None
        if cfg.model_ema:
            if cfg.distributed == "fsdp" and self.env.distributed:
                raise ValueError("--model-ema: not supported with --distributed fsdp (sharded weights); use ddp")
            self.ema = ModelEmaV3(model, decay=cfg.model_ema_decay)
        self.num_params = sum(p.numel() for p in model.parameters())  # before FSDP2 shards them
        global_batch = cfg.batch_size * cfg.accum_steps * self.env.world_size
        self.lr = cfg.lr if cfg.lr is not None else cfg.lr_base * global_batch / cfg.lr_base_size
        # dist_model: the DDP-wrapped or FSDP2-sharded model (state dicts); model: what runs (compiled or not)
        self.dist_model = wrap_model(model, self.env, cfg.distributed, shard_units=_shard_units())
        self.model = _compiled(self.dist_model, cfg.compile_mode) if cfg.compile else self.dist_model
        # torch's fused Adam(W) step: one kernel per tensor (CPU 2.6 vs 7.7 ms a step for the make-run model)
        fused = {"fused": True} if cfg.opt.lower() in ("adam", "adamw") and not (
            cfg.distributed == "fsdp" and self.env.distributed) else {}
        self.optimizer = create_optimizer_v2(unwrap(self.dist_model), opt=cfg.opt, lr=self.lr,
                                             weight_decay=cfg.weight_decay, layer_decay=cfg.layer_decay, **fused)
        self.steps_per_epoch = len(self.data.train)
        if cfg.max_train_batches:
            self.steps_per_epoch = min(self.steps_per_epoch, cfg.max_train_batches)
        self.updates_per_epoch = max(1, self.steps_per_epoch // cfg.accum_steps)
        self.scheduler, _ = create_scheduler_v2(
            self.optimizer, sched=cfg.sched, num_epochs=cfg.epochs, warmup_epochs=0, min_lr=cfg.min_lr,
            warmup_lr=cfg.warmup_lr, step_on_epochs=False, updates_per_epoch=self.updates_per_epoch)
        # timm counts warm-up in whole epochs; ours may be fractional: set it in updates directly
        if getattr(self.scheduler, "warmup_t", None) is not None and cfg.warmup_epochs > 0:
            self._set_warmup(round(cfg.warmup_epochs * self.updates_per_epoch))
        self.amp_dtype, self.scaler = resolve_amp(cfg.amp, self.env.device)
        mixing = cfg.mixup > 0 or cfg.cutmix > 0
        self.mixup = Mixup(mixup_alpha=cfg.mixup, cutmix_alpha=cfg.cutmix, label_smoothing=cfg.smoothing,
                           num_classes=self.num_classes) if mixing else None
        self.loss_fn = _loss_fn(cfg, mixing)
        self.start_epoch, self.num_updates, self.best = 0, 0, {"top1": -1.0, "epoch": -1}
        fields = VISION_FIELDS + (["ema_test_top1"] if cfg.model_ema else [])
        self.log = MetricsLog(self.out, fields, "epoch", cfg.tensorboard) if self.env.is_main else None
        if cfg.resume:
            self._resume()

    def _set_warmup(self, updates: int) -> None:
        s = self.scheduler
        s.warmup_t = max(updates, 1)
        s.warmup_steps = [(v - s.warmup_lr_init) / s.warmup_t for v in s.base_values]
        s.update_groups(s.warmup_lr_init)

    # --- checkpoints -------------------------------------------------------------------------
    def _run_info(self) -> dict:
        return {"model": self.cfg.model, "model_kwargs": self.cfg.model_kwargs, "num_classes": self.num_classes,
                "in_chans": self.data.in_chans, "classes": list(self.data.classes), "img_size": self.cfg.img_size,
                "dataset": self.cfg.dataset, "config": dataclasses.asdict(self.cfg)}

    def _save(self, epoch: int, metrics: dict) -> None:
        model_state = full_state_dict(self.dist_model)
        optim_state = full_optimizer_state(self.dist_model, self.optimizer)
        if not self.env.is_main:
            return
        train_state = {
            "epoch": epoch, "num_updates": self.num_updates, "best": self.best, "optimizer": optim_state,
            "scheduler": self.scheduler.state_dict(), "scaler": self.scaler.state_dict() if self.scaler else None,
            "rng": rng_state(), "run": json.loads(json.dumps(self._run_info())), "metrics": metrics,
        }
        ema_state = self.ema.module.state_dict() if self.ema is not None else None
        save_checkpoint(self.ckpt_dir, epoch, model_state=model_state, ema_state=ema_state, train_state=train_state,
                        keep_last=self.cfg.keep_last)
        if metrics["top1"] >= self.best["top1"]:
            self.best = {"top1": metrics["top1"], "epoch": epoch}
            save_weights_atomic(model_state, self.out / "best.safetensors",
                                metadata={"epoch": str(epoch), "top1": f"{metrics['top1']:.6f}"})
        (self.out / "run.json").write_text(json.dumps(self._run_info(), indent=2))

    def _resume(self) -> None:
        source = self.ckpt_dir if self.cfg.resume == "auto" else pathlib.Path(self.cfg.resume)
        if self.cfg.resume == "auto" and latest_checkpoint(self.ckpt_dir) is None:
            return  # nothing to resume yet: a fresh run
        model_state, ema_state, state = load_checkpoint(source)
        run = state.get("run", {})
        if run.get("model") != self.cfg.model or run.get("num_classes") != self.num_classes:
            raise CheckpointError(f"--resume: checkpoint {source} holds model {run.get('model')!r} with "
                                  f"{run.get('num_classes')} classes, not {self.cfg.model!r} with {self.num_classes}")
        target = unwrap(self.model)
        missing, unexpected = set(target.state_dict()) - set(model_state), set(model_state) - set(target.state_dict())
        if missing or unexpected:
            raise CheckpointError(f"--resume: checkpoint {source} does not fit this model: missing "
                                  f"{sorted(missing)[:10]}, unexpected {sorted(unexpected)[:10]}")
        changes = self._check_changed_settings(run.get("config", {}), source)
        load_full_state(self.dist_model, self.optimizer, model_state, state["optimizer"])
        if self.ema is not None and ema_state is not None:
            self.ema.module.load_state_dict(ema_state)
        if self.scaler is not None and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        self.start_epoch, self.num_updates, self.best = state["epoch"] + 1, state["num_updates"], state["best"]
        if changes:  # the schedule is a function of the settings and the update count: this run's settings apply
            self.scheduler.step_update(num_updates=self.num_updates)
        else:
            self.scheduler.load_state_dict(state["scheduler"])
        set_rng_state(state["rng"])
        if self.log is not None:
            self.log.truncate_after(state["epoch"] + 1)  # CSV epochs count from 1
        if self.env.is_main:
            print(f"resumed from {source} (epoch {state['epoch']} done)", flush=True)
            if changes:
                print(f"resume: settings changed since the checkpoint, applied: {describe_changes(changes)}",
                      flush=True)

    def _check_changed_settings(self, saved: dict, source) -> dict:
        """Changed settings of a resumed run: those that define the model, data or optimizer state are refused;
        the others (schedule, regularisation, batch size, ...) are returned to be reported and applied."""
        changes = changed_settings(saved, self.cfg, ignore=_BOOKKEEPING)
        refused = {k: v for k, v in changes.items() if k in _FIXED_ON_RESUME}
        if refused:
            raise CheckpointError(f"--resume: {source} was trained with other settings that cannot change "
                                  f"mid-run: {describe_changes(refused)}; start a new run (another --output-dir)")
        return changes

    # --- the loop ----------------------------------------------------------------------------
    def train_epoch(self, epoch: int) -> float:
        cfg, env = self.cfg, self.env
        self.model.train()
        self.data.train_sampler.set_epoch(epoch)
        bar = progress_bar(self.steps_per_epoch, f"epoch {epoch + 1}/{cfg.epochs}", enabled=env.is_main,
                           refresh_every=cfg.log_every)
        started, images = time.perf_counter(), 0
        loss_sum = seen = skipped = 0.0
        self.optimizer.zero_grad(set_to_none=True)
        for step, batch in enumerate(self.data.train):
            if step >= self.steps_per_epoch:
                break
            x, y, n_skipped = unpack_batch(batch)
            skipped += n_skipped
            if x is None:
                continue
            x, y = prepare(x, y, env.device, self.data.gpu_transform, cfg.channels_last)
            target = y
            if self.mixup is not None:
                x, target = self.mixup(x, y)
            last_micro = (step + 1) % cfg.accum_steps == 0 or step + 1 == self.steps_per_epoch
            with no_sync_if(self.model, not last_micro):
                with autocast(env.device, self.amp_dtype):
                    loss = self.loss_fn(self.model(x), target)
                if not torch.isfinite(loss):
                    raise FloatingPointError(f"non-finite loss {loss.item()} at epoch {epoch} step {step}")
                backward(loss, self.scaler, cfg.accum_steps)
            if last_micro:
                self._optimizer_step()
            loss_sum += loss.item() * y.shape[0]
            seen += y.shape[0]
            images += y.shape[0] * env.world_size
            bar.set_postfix(loss=f"{loss.item():.4g}", lr=f"{self.optimizer.param_groups[0]['lr']:.3g}", refresh=False)
            bar.update()
        bar.close()
        self.throughput = images / max(time.perf_counter() - started, 1e-9)
        loss_sum, seen, skipped = all_reduce_sum([loss_sum, seen, skipped], env)
        if skipped and env.is_main:
            print(f"warning: skipped {int(skipped)} unreadable image(s) in epoch {epoch + 1}", flush=True)
        return loss_sum / max(seen, 1)

    def _optimizer_step(self) -> None:
        apply_gradients(self.model, self.optimizer, self.scaler, self.cfg.clip_grad)
        self.num_updates += 1
        self.scheduler.step_update(num_updates=self.num_updates)
        if self.ema is not None:
            self.ema.update(unwrap(self.model), step=self.num_updates)

    def _print_speed_estimate(self) -> None:
        """The run's header, part 2: the CPU features torch uses and the time this run will take, from a
        few timed steps on a copy of the model (skipped under torchrun and on resume past the last epoch)."""
        from ..core.hardware import cpu_summary, estimate_run_seconds, probe_step_seconds

        cfg, env = self.cfg, self.env
        print(cpu_summary() + ("" if env.device.type == "cpu" else f"; training on {env.device}"), flush=True)
        epochs = cfg.epochs - self.start_epoch
        if env.distributed or epochs <= 0:
            return
        probe_rng = torch.Generator(env.device).manual_seed(0)  # the run's own random stream stays untouched
        batch = torch.randn(cfg.batch_size, self.data.in_chans, cfg.img_size, cfg.img_size, device=env.device,
                            generator=probe_rng)
        if cfg.channels_last:
            batch = batch.contiguous(memory_format=torch.channels_last)
        train_s, eval_s = probe_step_seconds(unwrap(self.dist_model), batch, F.cross_entropy, self.num_classes,
                                             self.amp_dtype, steps=5)  # 2 steps read 0.5-1.2x the epoch rate
        train_rate, eval_rate = cfg.batch_size / train_s, cfg.batch_size / eval_s
        eval_images = len(self.data.val.dataset)
        if cfg.max_eval_batches:
            eval_images = min(eval_images, cfg.max_eval_batches * (cfg.eval_batch_size or cfg.batch_size))
        total = estimate_run_seconds(train_rate, eval_rate, self.steps_per_epoch * cfg.batch_size, eval_images, epochs)
        print(f"speed probe: {train_rate:,.0f} img/s training, {eval_rate:,.0f} img/s eval -> about "
              f"{total / 60:.1f} min for {epochs} epoch(s) (docs/benchmarks.md: img/s per CPU kind)", flush=True)

    def fit(self) -> dict:
        cfg, env = self.cfg, self.env
        if env.is_main:
            print(f"model {cfg.model} ({self.num_params / 1e6:.2f}M params) on {env.device} x{env.world_size}, "
                  f"{cfg.dataset}: {len(self.data.train.dataset)} train / {len(self.data.val.dataset)} test images, "
                  f"lr {self.lr:.2e}, {cfg.epochs} epochs", flush=True)
            self._print_speed_estimate()
        metrics = {}
        for epoch in range(self.start_epoch, cfg.epochs):
            start = time.perf_counter()
            train_loss = self.train_epoch(epoch)
            metrics = evaluate(self.model, self.data.val, env, cfg, self.data.eval_transform, self.amp_dtype,
                               self.num_classes, cfg.max_eval_batches)
            row = {"epoch": epoch + 1, "train_loss": train_loss, "test_loss": metrics["loss"],
                   "test_top1": metrics["top1"], "test_top5": metrics["top5"],
                   "lr": self.optimizer.param_groups[0]["lr"], "train_img_per_s": self.throughput,
                   "epoch_seconds": time.perf_counter() - start}
            if self.ema is not None:
                ema_metrics = evaluate(self.ema.module, self.data.val, env, cfg, self.data.eval_transform,
                                       self.amp_dtype, self.num_classes, cfg.max_eval_batches)
                row["ema_test_top1"] = ema_metrics["top1"]
            if env.is_main:
                self.log.log(row)
                print(f"epoch {epoch + 1}/{cfg.epochs}: train loss {train_loss:.4f}  test loss "
                      f"{metrics['loss']:.4f}  top-1 {metrics['top1']:.4f}  top-5 {metrics['top5']:.4f}  "
                      f"({row['epoch_seconds']:.0f} s)", flush=True)
            self._save(epoch, {k: metrics[k] for k in ("loss", "top1", "top5", "count")})
            barrier(env)
        if env.is_main:
            self._finish(metrics)
        return metrics

    def _finish(self, metrics: dict) -> None:
        plotted = plot_metrics(self.log.csv_path, self.out / "curves.png",
                               {"loss": ["train_loss", "test_loss"], "accuracy": ["test_top1", "test_top5"],
                                "learning rate": ["lr"]})
        self.log.close()
        print(f"checkpoints: {self.ckpt_dir}  best weights: {self.out / 'best.safetensors'}")
        print(f"logs: {self.log.csv_path}" + (f"  tensorboard: {self.out / 'tensorboard'}" if self.log.writer else "")
              + (f"  plots: {self.out / 'curves.png'}" if plotted else ""))
        if metrics:
            print(f"test accuracy: {metrics['top1']:.4f}")


def run(args: argparse.Namespace) -> int:
    cfg = config_from_args(VisionTrainConfig, args)
    with run_lock(cfg.output_dir):
        Trainer(cfg).fit()
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
    return 0
