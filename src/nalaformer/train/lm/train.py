"""``nalaformer train-lm``: train a NaLa causal language model on local text, offline.

Defaults train a ~3M-parameter byte-level model on the Python documentation sources (Debian's
``python3.11-doc``) for a few minutes on a CPU. Every flag can also come from a YAML recipe
(``--config configs/lm/....yaml``); torchrun gives DDP (or ``--distributed fsdp``):
``torchrun --nproc_per_node N -m nalaformer.train.lm ...``.

The loop: packed blocks, AdamW + warm-up/cosine, AMP, DDP/FSDP, exact resume.

Resuming is exact: the data order is a pure function of (seed, step), the learning rate a pure
function of the step, and the optimizer, scaler and RNG states are restored from the checkpoint.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import pathlib
import time

import torch

from ...data.text import PackedBlocks, block_order
from ...layers.lm_block import CausalDecoderBlock
from ...layers.lm_norm import RMSNorm
from ..core.distributed import (
    all_reduce_sum, apply_gradients, barrier, full_optimizer_state, full_state_dict, init_distributed, is_sharded,
    load_full_state, no_sync_if, unwrap, wrap_model,
)
from ..core.config import (add_dataclass_arguments, changed_settings, config_from_args, describe_changes,
                           validate_config)
from .config import LMTrainConfig
from .build import build_model, load_corpus_streams, load_tokenizer
from ..core.checkpoint import CheckpointError, find_checkpoint, load_train_state
from .checkpoint import RUN_FILE, save_lm_checkpoint, save_model_dir
from .evaluate import evaluate_perplexity
from .report import FIELDS, plot_lm_metrics
from ..core.loop import backward
from ..core.metrics import MetricsLog
from ..core.precision import autocast, resolve_amp
from ..core.progress import progress_bar
from ..core.rundir import claim_output_dir, run_lock
from ..core.seeding import rng_state, seed_everything, set_rng_state

HELP = "train a NaLa causal LM (default: byte-level, Python docs corpus, CPU-sized)"

__all__ = ["HELP", "add_arguments", "run", "train", "lr_at", "LMRun"]


def lr_at(step: int, cfg: LMTrainConfig) -> float:
    """Linear warm-up to ``lr``, then cosine down to ``lr * min_lr_ratio`` at ``steps``."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    floor = cfg.lr * cfg.min_lr_ratio
    return floor + (cfg.lr - floor) * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))


def _clean_name(name: str) -> str:
    return name.replace("_checkpoint_wrapped_module.", "")


def _optimizer(wrapped: torch.nn.Module, model: torch.nn.Module, cfg: LMTrainConfig) -> torch.optim.AdamW:
    """AdamW; no weight decay on norms and biases (decided by name)."""
    no_decay = {f"{m_name}.{p_name}".lstrip(".") for m_name, module in model.named_modules()
                for p_name, _ in module.named_parameters(recurse=False)
                if isinstance(module, RMSNorm) or p_name == "bias"}
    decay, plain = [], []
    for name, param in unwrap(wrapped).named_parameters():
        if param.requires_grad:
            (plain if _clean_name(name) in no_decay else decay).append(param)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": plain, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, cfg.beta2))


# settings that do not change a run's result (not reported on resume) / that a resumed run cannot change
_BOOKKEEPING = {"resume", "overwrite", "output_dir", "log_every", "tensorboard", "device", "distributed",
                "stop_after", "keep_last", "save_every", "sample_every", "sample_prompt", "sample_tokens"}
_FIXED_ON_RESUME = {"model", "model_overrides", "tokenizer"}


def _changed_settings(resume_dir: pathlib.Path, cfg: LMTrainConfig) -> dict:
    """Settings changed since the checkpoint: model and tokenizer changes are refused; the rest (steps, lr,
    schedule, data, ...) apply, since the schedule and the data order are functions of the settings and step."""
    info_file = resume_dir / RUN_FILE
    saved = json.loads(info_file.read_text()).get("train_config", {}) if info_file.is_file() else {}
    changes = changed_settings(saved, cfg, ignore=_BOOKKEEPING)
    refused = {k: v for k, v in changes.items() if k in _FIXED_ON_RESUME}
    if refused:
        raise CheckpointError(f"--resume: {resume_dir} was trained with other settings that cannot change "
                              f"mid-run: {describe_changes(refused)}; start a new run (another --output-dir)")
    return changes


def _run_info(cfg: LMTrainConfig) -> dict:
    keys = ("corpus", "held_out", "seed", "seq_len", "packing", "tokenizer")
    return {k: getattr(cfg, k) for k in keys} | {"train_config": dataclasses.asdict(cfg)}



class LMRun:
    """Everything one training run holds; ``train`` drives it step by step."""

    def __init__(self, cfg: LMTrainConfig):
        validate_config(cfg)
        if cfg.packing not in ("documents", "concat"):
            raise ValueError(f"--packing: expected 'documents' or 'concat', got {cfg.packing!r}")
        self.cfg, self.env, self.out_dir = cfg, init_distributed(cfg.device), pathlib.Path(cfg.output_dir)
        if self.env.is_main or not cfg.overwrite:
            claim_output_dir(self.out_dir, resume=cfg.resume, overwrite=cfg.overwrite)
        seed_everything(cfg.seed)
        self.tokenizer = load_tokenizer(cfg.tokenizer)
        self.blocks, self.held = self._data()
        resume_dir = find_checkpoint(cfg.resume, self.out_dir / "checkpoints") if cfg.resume else None
        changes = _changed_settings(resume_dir, cfg) if resume_dir is not None else {}
        if changes and self.env.is_main:
            print(f"resume: settings changed since the checkpoint, applied: {describe_changes(changes)}", flush=True)
        self.model = self._model(resume_dir)
        self.num_params = sum(p.numel() for p in self.model.parameters())  # before FSDP shards them
        self.amp_dtype, self.scaler = resolve_amp(cfg.amp, self.env.device)
        self.wrapped = wrap_model(self.model, self.env, cfg.distributed, shard_units=(CausalDecoderBlock,))
        self.optimizer = _optimizer(self.wrapped, self.model, cfg)
        self.start_step = self._restore(resume_dir) if resume_dir is not None else 0
        self.log = (MetricsLog(self.out_dir, FIELDS, key="step", tensorboard=cfg.tensorboard)
                    if self.env.is_main else None)
        if self.log is not None:
            self.log.truncate_after(self.start_step)

    def _data(self) -> tuple[PackedBlocks, PackedBlocks | None]:
        cfg, eos = self.cfg, self.tokenizer.eos_token_id
        train_stream, held_stream = load_corpus_streams(cfg.corpus, self.tokenizer, cfg.held_out, cfg.seed)
        documents = cfg.packing == "documents"
        held = PackedBlocks(held_stream, cfg.seq_len, eos, documents) if len(held_stream) >= cfg.seq_len else None
        return PackedBlocks(train_stream, cfg.seq_len, eos, documents), held

    def _model(self, resume_dir) -> torch.nn.Module:
        from ...models.lm import NaLaForCausalLM, enable_gradient_checkpointing

        if resume_dir is not None:  # the checkpoint's config wins over --model
            model = NaLaForCausalLM.from_pretrained(str(resume_dir), dtype=torch.float32)
        else:
            model = build_model(self.cfg.model, self.tokenizer, self.cfg.model_overrides)
        if self.cfg.gradient_checkpointing:
            enable_gradient_checkpointing(model)
        return model.to(self.env.device).train()

    def _restore(self, resume_dir: pathlib.Path) -> int:
        """Optimizer, scaler and RNG state of a checkpoint; returns its step."""
        state = load_train_state(resume_dir)
        load_full_state(self.wrapped, self.optimizer, optimizer_state=state["optimizer"])
        if self.scaler is not None and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        rng = state["rng"]
        set_rng_state(rng[self.env.rank % len(rng)] if isinstance(rng, list) else rng)
        return int(state["step"])

    @property
    def tokens_per_step(self) -> int:
        return self.cfg.batch_size * self.env.world_size * self.cfg.grad_accum * self.cfg.seq_len

    def describe(self) -> str:
        params = self.num_params
        held = 0 if self.held is None else len(self.held)
        start = f"resuming at step {self.start_step}" if self.start_step else "from scratch"
        return (f"train-lm: {params / 1e6:.2f}M parameters, {len(self.blocks):,} train blocks x {self.cfg.seq_len} "
                f"tokens, {held:,} held-out blocks, world size {self.env.world_size}, {start}")

    def train_step(self, step: int) -> float:
        """One optimizer step (with accumulation); returns the mean loss over micro-steps and ranks."""
        cfg, env, micro = self.cfg, self.env, self.cfg.batch_size
        lr = lr_at(step, cfg)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        loss_sum = 0.0
        for m in range(cfg.grad_accum):
            first = ((step * cfg.grad_accum + m) * env.world_size + env.rank) * micro
            indices = block_order(len(self.blocks), first, micro, cfg.seed)
            batch = {k: v.to(env.device) for k, v in self.blocks.batch(indices).items()}
            with no_sync_if(self.wrapped, m < cfg.grad_accum - 1), autocast(env.device, self.amp_dtype):
                loss = self.wrapped(**batch, use_cache=False).loss
            backward(loss, self.scaler, cfg.grad_accum)
            loss_sum += loss.item()
        self._apply_gradients()
        return all_reduce_sum([loss_sum / cfg.grad_accum], env)[0] / env.world_size

    def _apply_gradients(self) -> None:
        clip = self.cfg.grad_clip if self.cfg.grad_clip > 0 else None
        apply_gradients(self.wrapped, self.optimizer, self.scaler, clip)

    def evaluate(self) -> dict:
        env = self.env
        return evaluate_perplexity(self.wrapped, self.held, self.cfg.batch_size, env.device, amp_dtype=self.amp_dtype,
                                   max_batches=self.cfg.eval_batches, rank=env.rank, world_size=env.world_size,
                                   reduce=lambda xs: all_reduce_sum(xs, env))

    def sample(self, step: int) -> str | None:
        """A seeded sample generation on rank 0 that leaves the training RNG untouched."""
        cfg, env, model = self.cfg, self.env, unwrap(self.wrapped)
        text = None
        # FSDP2 gathers each block's weights inside its forward: every rank generates in lock-step (same seed)
        generating = env.is_main or is_sharded(self.wrapped)
        with torch.random.fork_rng(devices=[env.device] if env.device.type == "cuda" else []):
            if generating:
                torch.manual_seed(cfg.seed + step)
                model.eval()
                ids = self.tokenizer(cfg.sample_prompt, return_tensors="pt", add_special_tokens=False).input_ids
                with torch.no_grad():
                    out = model.generate(ids.to(env.device), max_new_tokens=cfg.sample_tokens, do_sample=True,
                                         temperature=0.8, top_k=50, top_p=0.95,
                                         pad_token_id=self.tokenizer.pad_token_id)
                model.train()
                text = self.tokenizer.decode(out[0], skip_special_tokens=True)
        if env.is_main:
            print(f"\n--- sample at step {step} ---\n{text}\n---", flush=True)
            with (self.out_dir / "samples.txt").open("a") as f:
                f.write(f"--- step {step} ---\n{text}\n")
        return text if env.is_main else None

    def checkpoint(self, step: int) -> None:
        """Gather weights/optimizer/RNG from every rank; rank 0 writes the checkpoint atomically."""
        env = self.env
        state_dict = full_state_dict(self.wrapped)
        optim = full_optimizer_state(self.wrapped, self.optimizer)
        rngs = [rng_state()]
        if env.distributed:
            import torch.distributed as dist

            rngs = [None] * env.world_size
            dist.all_gather_object(rngs, rng_state())
        if env.is_main:
            train_state = {"step": step, "optimizer": optim, "rng": rngs if env.distributed else rngs[0],
                           "scaler": self.scaler.state_dict() if self.scaler is not None else {}}
            save_lm_checkpoint(self.out_dir / "checkpoints", step, self.model, self.tokenizer, state_dict=state_dict,
                               train_state=train_state, run_info=_run_info(self.cfg), keep_last=self.cfg.keep_last)
        barrier(env)

    def save_final_model(self) -> pathlib.Path | None:
        state_dict = full_state_dict(self.wrapped)
        if not self.env.is_main:
            return None
        return save_model_dir(self.out_dir / "model", self.model, self.tokenizer, state_dict=state_dict,
                              run_info=_run_info(self.cfg))


def train(cfg: LMTrainConfig) -> dict:
    """Run training; returns the final metrics (loss, held-out perplexity, throughput, paths)."""
    run = LMRun(cfg)
    main = run.env.is_main
    if main:
        print(run.describe())
    end_step = cfg.steps if cfg.stop_after is None else min(cfg.steps, run.start_step + cfg.stop_after)
    bar = progress_bar(end_step - run.start_step, "train-lm", enabled=main, refresh_every=cfg.log_every)
    started, last_val = time.perf_counter(), None
    for step in range(run.start_step, end_step):
        loss = run.train_step(step)
        done = step + 1
        row = dict(step=done, tokens=done * run.tokens_per_step, train_loss=loss,
                   train_ppl=math.exp(min(loss, 50.0)), lr=lr_at(step, cfg))
        if run.held is not None and (done == cfg.steps or cfg.eval_every and done % cfg.eval_every == 0):
            last_val = run.evaluate()
            row.update(val_loss=last_val["loss"], val_ppl=last_val["ppl"])
        elapsed = time.perf_counter() - started
        row.update(tokens_per_s=(done - run.start_step) * run.tokens_per_step / max(elapsed, 1e-9), elapsed_s=elapsed)
        if run.log is not None:
            run.log.log(row)
        bar.set_postfix(loss=f"{loss:.4g}", lr=f"{row['lr']:.3g}", refresh=False,
                        **({"val_ppl": f"{row['val_ppl']:.4g}"} if "val_ppl" in row else {}))
        bar.update()
        if cfg.sample_every and done % cfg.sample_every == 0:
            run.sample(done)
        if done == end_step or cfg.save_every and done % cfg.save_every == 0:
            run.checkpoint(done)
    bar.close()
    tokens_per_process = (end_step - run.start_step) * (run.tokens_per_step // run.env.world_size)
    throughput = tokens_per_process / max(time.perf_counter() - started, 1e-9)

    result = {"step": end_step, "tokens_per_s": throughput, "output_dir": str(run.out_dir)}
    if end_step == cfg.steps:
        final_dir = run.save_final_model()
        if final_dir is not None:
            result["model_dir"] = str(final_dir)
    if run.log is not None:
        rows = run.log.rows()
        result["train_loss"] = float(rows[-1]["train_loss"]) if rows else float("nan")
        if last_val is not None:
            result.update(val_loss=last_val["loss"], val_ppl=last_val["ppl"])
        run.log.close()
        if plot_lm_metrics(run.log.csv_path, run.out_dir / "loss.png"):
            result["plot"] = str(run.out_dir / "loss.png")
        print(f"train-lm: step {end_step}/{cfg.steps}, train loss {result['train_loss']:.4f}"
              + (f", held-out perplexity {last_val['ppl']:.3f}" if last_val else "")
              + f", {throughput:,.0f} tokens/s; outputs in {run.out_dir}")
    barrier(run.env)
    return result


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_dataclass_arguments(parser, LMTrainConfig)


def run(args: argparse.Namespace) -> int:
    cfg = config_from_args(LMTrainConfig, args)
    with run_lock(cfg.output_dir):
        train(cfg)
    return 0
