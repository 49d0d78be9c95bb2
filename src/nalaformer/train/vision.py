"""``nalaformer train``: train a timm image model (NaLaFormer by default) on Fashion-MNIST or ImageFolder.

Built from timm's parts (transforms, Mixup/CutMix, soft-target and label-smoothing losses,
``create_optimizer_v2`` with layer decay, ``create_scheduler_v2``, ``ModelEmaV3``, repeated
augmentation); AMP, accumulation, clipping, channels_last, torch.compile, grad checkpointing;
torchrun DDP/FSDP; atomic checkpoints and exact resume.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import pathlib
import random
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from .checkpoint import (CheckpointError, latest_checkpoint, load_checkpoint, rng_state, save_checkpoint,
                         save_weights_atomic, set_rng_state)
from .config import add_dataclass_arguments, config_from_args
from .distributed import (
    all_reduce_sum, apply_gradients, barrier, DistEnv, full_state_dict, init_distributed, no_sync_if, unwrap,
    wrap_model,
)
from .reporting import MetricsLog, Progress, plot_metrics
from .vision_data import build_vision_data, prepare, unpack_batch

HELP = "train a vision model (default: a small NaLaFormer on Fashion-MNIST)"

VISION_FIELDS = ["epoch", "train_loss", "test_loss", "test_top1", "test_top5", "lr", "train_img_per_s",
                 "epoch_seconds"]

# A ~1M-parameter NaLaFormer for 32x32 inputs: the built-in default of `make run`.
SMALL_NALAFORMER = dict(embed_dims=[32, 64, 128, 256], depths=[1, 1, 2, 1], num_heads=[1, 2, 4, 8],
                        mlp_ratios=[2, 2, 2, 2], head_hidden_size=256)


def _opt(default=None, help=""):
    return field(default=default, metadata={"help": help})


@dataclass
class VisionTrainConfig:
    # model
    model: str = _opt("nalaformer_xt", "timm model name")
    model_kwargs: dict = field(default_factory=lambda: dict(SMALL_NALAFORMER),
                               metadata={"help": "extra create_model keywords (JSON)"})
    pretrained_file: str | None = _opt(None, "initial weights (a released checkpoint or ours)")
    drop_path: float | None = _opt(None, "stochastic depth rate (model default if unset)")
    # data
    dataset: str = _opt("fashion-mnist", "'fashion-mnist' or 'folder' (ImageFolder train/ and val/)")
    data_dir: str | None = _opt(None, "dataset location (Fashion-MNIST: Debian's files by default)")
    download: bool = _opt(False, "download Fashion-MNIST with torchvision if not found")
    img_size: int = _opt(32, "input resolution")
    workers: int = _opt(0, "data-loader worker processes")
    # schedule and optimisation
    epochs: int = _opt(2, "training epochs")
    batch_size: int = _opt(128, "batch size per process")
    eval_batch_size: int | None = _opt(None, "eval batch size per process")
    accum_steps: int = _opt(1, "gradient accumulation steps")
    lr: float | None = _opt(None, "peak learning rate (default: lr_base * global_batch / lr_base_size)")
    lr_base: float = _opt(2e-3, "learning rate at lr_base_size")
    lr_base_size: int = _opt(128, "global batch size lr_base refers to")
    opt: str = _opt("adamw", "timm optimizer name")
    weight_decay: float = _opt(0.05, "weight decay")
    layer_decay: float | None = _opt(None, "layer-wise lr decay (uses the model's group_matcher)")
    sched: str = _opt("cosine", "timm scheduler name")
    warmup_epochs: float = _opt(0.3, "warm-up epochs")
    warmup_lr: float = _opt(1e-6, "warm-up start lr")
    min_lr: float = _opt(1e-5, "final lr")
    clip_grad: float | None = _opt(None, "gradient norm clipping")
    # regularisation / augmentation
    smoothing: float = _opt(0.0, "label smoothing")
    mixup: float = _opt(0.0, "mixup alpha")
    cutmix: float = _opt(0.0, "cutmix alpha")
    shift: int = _opt(0, "random translation in pixels (Fashion-MNIST)")
    hflip: bool = _opt(False, "random horizontal flips (Fashion-MNIST)")
    aa: str | None = _opt(None, "timm auto-augment policy, e.g. rand-m9-mstd0.5-inc1 (ImageFolder)")
    reprob: float = _opt(0.0, "random erasing probability (ImageFolder)")
    repeated_aug: int = _opt(1, "repeated augmentation repeats (>1 enables timm's RepeatAugSampler)")
    model_ema: bool = _opt(False, "keep an EMA of the weights (ModelEmaV3)")
    model_ema_decay: float = _opt(0.9998, "EMA decay")
    # performance
    amp: str = _opt("auto", "'auto' (bf16 on GPU, off on CPU), 'bf16', 'fp16' or 'none'")
    channels_last: bool = _opt(True, "channels_last memory format")
    compile: bool = _opt(False, "torch.compile the model")
    grad_checkpointing: bool = _opt(False, "activation checkpointing (less memory)")
    device: str = _opt("auto", "'auto', 'cpu' or 'cuda'")
    distributed: str = _opt("ddp", "'ddp' or 'fsdp' under torchrun")
    # bookkeeping
    output_dir: str = _opt("runs/fashion-mnist", "where checkpoints, logs and plots go")
    resume: str | None = _opt(None, "'auto' (latest in output_dir) or a checkpoint directory")
    keep_last: int = _opt(2, "checkpoints to keep (plus best.safetensors)")
    seed: int = _opt(0, "random seed")
    log_every: int = _opt(50, "progress lines when not on a terminal")
    tensorboard: bool = _opt(True, "also log to TensorBoard (when installed)")
    max_train_batches: int | None = _opt(None, "cap batches per epoch (smoke tests)")
    max_eval_batches: int | None = _opt(None, "cap eval batches (smoke tests)")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_dataclass_arguments(parser, VisionTrainConfig)


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _autocast(cfg: VisionTrainConfig, device: torch.device):
    amp = cfg.amp
    if amp == "auto":
        amp = "bf16" if device.type == "cuda" else "none"
    if amp not in ("none", "bf16", "fp16"):
        raise ValueError(f"--amp: expected 'auto', 'bf16', 'fp16' or 'none', got {cfg.amp!r}")
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(amp)
    return dtype, (torch.amp.GradScaler(device.type) if amp == "fp16" else None)


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
        with torch.autocast(env.device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
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


class Trainer:
    """One training run: setup, the epoch loop, checkpoints and reports."""

    def __init__(self, cfg: VisionTrainConfig):
        from timm.data import Mixup
        from timm.optim import create_optimizer_v2
        from timm.scheduler import create_scheduler_v2
        from timm.utils import ModelEmaV3

        self.cfg = cfg
        self.env = init_distributed(cfg.device)
        _seed_everything(cfg.seed)
        self.out = pathlib.Path(cfg.output_dir)
        self.ckpt_dir = self.out / "checkpoints"
        self.data = build_vision_data(cfg, self.env)
        self.num_classes = len(self.data.classes)
        model = build_model(cfg, self.num_classes, self.data.in_chans)
        if cfg.grad_checkpointing:
            model.set_grad_checkpointing(True)
        model.to(self.env.device)
        if cfg.channels_last:
            model.to(memory_format=torch.channels_last)
        self.model_name = cfg.model
        self.ema = None
        if cfg.model_ema:
            if cfg.distributed == "fsdp" and self.env.distributed:
                raise ValueError("--model-ema: not supported with --distributed fsdp (sharded weights); use ddp")
            self.ema = ModelEmaV3(model, decay=cfg.model_ema_decay)
        self.num_params = sum(p.numel() for p in model.parameters())  # before FSDP shards them
        global_batch = cfg.batch_size * cfg.accum_steps * self.env.world_size
        self.lr = cfg.lr if cfg.lr is not None else cfg.lr_base * global_batch / cfg.lr_base_size
        # dist_model: the DDP/FSDP-wrapped model (state dicts, FSDP APIs); model: what runs (compiled or not)
        self.dist_model = wrap_model(model, self.env, cfg.distributed)
        self.model = torch.compile(self.dist_model) if cfg.compile else self.dist_model
        self.optimizer = create_optimizer_v2(unwrap(self.dist_model) if cfg.distributed == "ddp" else self.dist_model,
                                             opt=cfg.opt, lr=self.lr, weight_decay=cfg.weight_decay,
                                             layer_decay=cfg.layer_decay)
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
        self.amp_dtype, self.scaler = _autocast(cfg, self.env.device)
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

    def _optimizer_state(self) -> dict:
        from torch.distributed.fsdp import FullyShardedDataParallel as FSDP

        if isinstance(self.dist_model, FSDP):
            return FSDP.optim_state_dict(self.dist_model, self.optimizer)
        return self.optimizer.state_dict()

    def _save(self, epoch: int, metrics: dict) -> None:
        model_state = full_state_dict(self.dist_model)
        optim_state = self._optimizer_state()
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
        from torch.distributed.fsdp import FullyShardedDataParallel as FSDP

        if isinstance(self.dist_model, FSDP):
            from torch.distributed.fsdp import FullStateDictConfig, StateDictType

            with FSDP.state_dict_type(self.dist_model, StateDictType.FULL_STATE_DICT, FullStateDictConfig()):
                self.dist_model.load_state_dict(model_state)
            self.optimizer.load_state_dict(FSDP.optim_state_dict_to_load(self.dist_model, self.optimizer,
                                                                         state["optimizer"]))
        else:
            target.load_state_dict(model_state)
            self.optimizer.load_state_dict(state["optimizer"])
        if self.ema is not None and ema_state is not None:
            self.ema.module.load_state_dict(ema_state)
        self.scheduler.load_state_dict(state["scheduler"])
        if self.scaler is not None and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        self.start_epoch, self.num_updates, self.best = state["epoch"] + 1, state["num_updates"], state["best"]
        set_rng_state(state["rng"])
        if self.log is not None:
            self.log.truncate_after(state["epoch"] + 1)  # CSV epochs count from 1
        if self.env.is_main:
            print(f"resumed from {source} (epoch {state['epoch']} done)", flush=True)

    # --- the loop ----------------------------------------------------------------------------
    def train_epoch(self, epoch: int) -> float:
        cfg, env = self.cfg, self.env
        self.model.train()
        self.data.train_sampler.set_epoch(epoch)
        progress = Progress(self.steps_per_epoch, f"epoch {epoch + 1}/{cfg.epochs}", enabled=env.is_main,
                            log_every=cfg.log_every)
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
                with torch.autocast(env.device.type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None):
                    loss = self.loss_fn(self.model(x), target)
                if not torch.isfinite(loss):
                    raise FloatingPointError(f"non-finite loss {loss.item()} at epoch {epoch} step {step}")
                scaled = loss / cfg.accum_steps
                (self.scaler.scale(scaled) if self.scaler else scaled).backward()
            if last_micro:
                self._optimizer_step()
            loss_sum += loss.item() * y.shape[0]
            seen += y.shape[0]
            progress.update(y.shape[0] * env.world_size, loss=loss.item(),
                            lr=self.optimizer.param_groups[0]["lr"])
        self.throughput = progress.close()
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
        from .hardware import cpu_summary, estimate_run_seconds, probe_step_seconds

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
        train_s, eval_s = probe_step_seconds(unwrap(self.dist_model), batch, self.loss_fn, self.num_classes,
                                             self.amp_dtype)
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
    Trainer(cfg).fit()
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
    return 0
