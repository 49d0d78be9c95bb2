"""The ``train-lm`` loop: packed blocks, AdamW + warm-up/cosine, AMP, DDP/FSDP, exact resume.

Resuming is exact: the data order is a pure function of (seed, step), the learning rate a pure
function of the step, and the optimizer, scaler and RNG states are restored from the checkpoint.
"""

from __future__ import annotations

import dataclasses
import math
import pathlib
import random
import time

import numpy as np
import torch

from ..data.text import PackedBlocks, block_order
from ..layers.lm_norm import RMSNorm
from .checkpoint import rng_state, set_rng_state
from .distributed import DistEnv, all_reduce_sum, barrier, full_state_dict, init_distributed, no_sync_if, unwrap, \
    wrap_model
from .lm import LMTrainConfig
from .lm_build import build_model, load_corpus_streams, load_tokenizer
from .lm_checkpoint import find_lm_checkpoint, load_train_state, save_lm_checkpoint, save_model_dir
from .lm_evaluate import evaluate_perplexity
from .lm_report import StepLog, plot_lm_metrics
from .reporting import Progress

__all__ = ["train", "lr_at"]


def lr_at(step: int, cfg: LMTrainConfig) -> float:
    """Linear warm-up to ``lr``, then cosine down to ``lr * min_lr_ratio`` at ``steps``."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    floor = cfg.lr * cfg.min_lr_ratio
    return floor + (cfg.lr - floor) * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))


def _amp(cfg: LMTrainConfig, device: torch.device):
    """(autocast dtype or None, GradScaler or None)."""
    amp = cfg.amp
    if amp == "auto":
        amp = ("bf16" if torch.cuda.is_bf16_supported() else "fp16") if device.type == "cuda" else "none"
    if amp not in ("none", "bf16", "fp16"):
        raise ValueError(f"--amp: expected 'auto', 'bf16', 'fp16' or 'none', got {cfg.amp!r}")
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(amp)
    return dtype, (torch.amp.GradScaler(device.type) if amp == "fp16" else None)


def _clean_name(name: str) -> str:
    return name.replace("_fsdp_wrapped_module.", "").replace("_checkpoint_wrapped_module.", "").removeprefix(
        "module.")


def _optimizer(wrapped: torch.nn.Module, model: torch.nn.Module, cfg: LMTrainConfig) -> torch.optim.AdamW:
    """AdamW; no weight decay on norms and biases (decided by name, so FSDP's flat views do not matter)."""
    no_decay = {f"{m_name}.{p_name}".lstrip(".") for m_name, module in model.named_modules()
                for p_name, _ in module.named_parameters(recurse=False)
                if isinstance(module, RMSNorm) or p_name == "bias"}
    decay, plain = [], []
    for name, param in wrapped.named_parameters():
        if param.requires_grad:
            (plain if _clean_name(name) in no_decay else decay).append(param)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": plain, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, cfg.beta2))


def _optim_state(wrapped, optimizer, load: dict | None = None):
    """Full optimizer state (FSDP gathers it); with ``load``, restore it instead."""
    from torch.distributed.fsdp import FullyShardedDataParallel as FSDP

    if isinstance(wrapped, FSDP):
        from torch.distributed.fsdp import FullOptimStateDictConfig, FullStateDictConfig, StateDictType

        with FSDP.state_dict_type(wrapped, StateDictType.FULL_STATE_DICT, FullStateDictConfig(offload_to_cpu=True),
                                  FullOptimStateDictConfig(offload_to_cpu=True, rank0_only=False)):
            if load is None:
                return FSDP.optim_state_dict(wrapped, optimizer)
            optimizer.load_state_dict(FSDP.optim_state_dict_to_load(wrapped, optimizer, load))
            return None
    if load is None:
        return optimizer.state_dict()
    optimizer.load_state_dict(load)
    return None


def _sample(wrapped, tokenizer, cfg: LMTrainConfig, env: DistEnv, step: int) -> str | None:
    """A seeded sample generation on rank 0 that leaves the training RNG untouched."""
    from torch.distributed.fsdp import FullyShardedDataParallel as FSDP

    model = unwrap(wrapped)
    context = FSDP.summon_full_params(wrapped, writeback=False) if isinstance(wrapped, FSDP) else _null()
    text = None
    with context, torch.random.fork_rng(devices=[env.device] if env.device.type == "cuda" else []):
        if env.is_main:
            torch.manual_seed(cfg.seed + step)
            model.eval()
            ids = tokenizer(cfg.sample_prompt, return_tensors="pt", add_special_tokens=False).input_ids
            with torch.no_grad():
                out = model.generate(ids.to(env.device), max_new_tokens=cfg.sample_tokens, do_sample=True,
                                     temperature=0.8, top_k=50, top_p=0.95, pad_token_id=tokenizer.pad_token_id)
            model.train()
            text = tokenizer.decode(out[0], skip_special_tokens=True)
    return text


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def _run_info(cfg: LMTrainConfig) -> dict:
    keys = ("corpus", "held_out", "seed", "seq_len", "packing", "tokenizer")
    return {k: getattr(cfg, k) for k in keys} | {"train_config": dataclasses.asdict(cfg)}


def train(cfg: LMTrainConfig) -> dict:
    """Run training; returns the final metrics (loss, held-out perplexity, throughput, paths)."""
    env = init_distributed(cfg.device)
    out_dir = pathlib.Path(cfg.output_dir)
    if cfg.packing not in ("documents", "concat"):
        raise ValueError(f"--packing: expected 'documents' or 'concat', got {cfg.packing!r}")
    random.seed(cfg.seed)
    np.random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)

    tokenizer = load_tokenizer(cfg.tokenizer)
    train_stream, held_stream = load_corpus_streams(cfg.corpus, tokenizer, cfg.held_out, cfg.seed)
    documents = cfg.packing == "documents"
    blocks = PackedBlocks(train_stream, cfg.seq_len, tokenizer.eos_token_id, documents)
    held = PackedBlocks(held_stream, cfg.seq_len, tokenizer.eos_token_id, documents) \
        if len(held_stream) >= cfg.seq_len else None

    resume_dir = find_lm_checkpoint(cfg.resume, out_dir) if cfg.resume else None
    from ..models.lm import NaLaForCausalLM, enable_gradient_checkpointing

    if resume_dir is not None:
        model = NaLaForCausalLM.from_pretrained(str(resume_dir), dtype=torch.float32)
    else:
        model = build_model(cfg.model, tokenizer, cfg.model_overrides)
    if cfg.gradient_checkpointing:
        enable_gradient_checkpointing(model)
    model.to(env.device).train()
    amp_dtype, scaler = _amp(cfg, env.device)
    wrapped = wrap_model(model, env, cfg.distributed)
    optimizer = _optimizer(wrapped, model, cfg)

    start_step = 0
    if resume_dir is not None:
        state = load_train_state(resume_dir)
        _optim_state(wrapped, optimizer, load=state["optimizer"])
        if scaler is not None and state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        set_rng_state(state["rng"][env.rank] if isinstance(state["rng"], list) else state["rng"])
        start_step = int(state["step"])
    log = StepLog(out_dir, tensorboard=cfg.tensorboard) if env.is_main else None
    if log is not None:
        log.truncate_after(start_step)
        params = sum(p.numel() for p in model.parameters())
        print(f"train-lm: {params / 1e6:.2f}M parameters, {len(blocks):,} train blocks x {cfg.seq_len} tokens, "
              f"{0 if held is None else len(held):,} held-out blocks, world size {env.world_size}, "
              f"{'resuming at step ' + str(start_step) if start_step else 'from scratch'}")

    micro, world = cfg.batch_size, env.world_size
    tokens_per_step = micro * world * cfg.grad_accum * cfg.seq_len
    end_step = cfg.steps if cfg.stop_after is None else min(cfg.steps, start_step + cfg.stop_after)
    progress = Progress(end_step - start_step, "train-lm", unit="tok", enabled=env.is_main, log_every=cfg.log_every)
    started = time.perf_counter()
    last_val = None
    for step in range(start_step, end_step):
        lr = lr_at(step, cfg)
        for group in optimizer.param_groups:
            group["lr"] = lr
        loss_sum = 0.0
        for m in range(cfg.grad_accum):
            first = ((step * cfg.grad_accum + m) * world + env.rank) * micro
            batch = {k: v.to(env.device) for k, v in blocks.batch(block_order(len(blocks), first, micro,
                                                                              cfg.seed)).items()}
            with no_sync_if(wrapped, m < cfg.grad_accum - 1), \
                    torch.autocast(env.device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
                loss = wrapped(**batch, use_cache=False).loss
            scaled = loss / cfg.grad_accum
            (scaler.scale(scaled) if scaler is not None else scaled).backward()
            loss_sum += loss.item()
        if scaler is not None:
            scaler.unscale_(optimizer)
        if cfg.grad_clip > 0:
            clip = getattr(wrapped, "clip_grad_norm_", None)
            clip(cfg.grad_clip) if clip is not None else torch.nn.utils.clip_grad_norm_(wrapped.parameters(),
                                                                                          cfg.grad_clip)
        if scaler is not None:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
        optimizer.zero_grad(set_to_none=True)

        train_loss = all_reduce_sum([loss_sum / cfg.grad_accum], env)[0] / world
        done = step + 1
        row = dict(step=done, tokens=done * tokens_per_step, train_loss=train_loss,
                   train_ppl=math.exp(min(train_loss, 50.0)), lr=lr)
        if held is not None and (done == cfg.steps or cfg.eval_every and done % cfg.eval_every == 0):
            last_val = evaluate_perplexity(wrapped, held, micro, env.device, amp_dtype=amp_dtype,
                                           max_batches=cfg.eval_batches, rank=env.rank, world_size=world,
                                           reduce=lambda xs: all_reduce_sum(xs, env))
            row.update(val_loss=last_val["loss"], val_ppl=last_val["ppl"])
        elapsed = time.perf_counter() - started
        row.update(tokens_per_s=(done - start_step) * tokens_per_step / max(elapsed, 1e-9), elapsed_s=elapsed)
        if log is not None:
            log.log(**row)
        progress.update(tokens_per_step // world, loss=train_loss, lr=lr,
                        **({"val_ppl": row["val_ppl"]} if "val_ppl" in row else {}))
        if cfg.sample_every and done % cfg.sample_every == 0:
            text = _sample(wrapped, tokenizer, cfg, env, done)
            if text is not None:
                print(f"\n--- sample at step {done} ---\n{text}\n---", flush=True)
                with (out_dir / "samples.txt").open("a") as f:
                    f.write(f"--- step {done} ---\n{text}\n")
        if done == end_step or cfg.save_every and done % cfg.save_every == 0:
            _checkpoint(wrapped, model, tokenizer, optimizer, scaler, cfg, env, done, out_dir)
    throughput = progress.close()

    result = {"step": end_step, "tokens_per_s": throughput, "output_dir": str(out_dir)}
    if end_step == cfg.steps:
        state_dict = full_state_dict(wrapped)
        if env.is_main:
            final_dir = save_model_dir(out_dir / "model", model, tokenizer, state_dict=state_dict,
                                       run_info=_run_info(cfg))
            result["model_dir"] = str(final_dir)
    if log is not None:
        rows = log.rows()
        result["train_loss"] = float(rows[-1]["train_loss"]) if rows else float("nan")
        if last_val is not None:
            result.update(val_loss=last_val["loss"], val_ppl=last_val["ppl"])
        log.close()
        if plot_lm_metrics(log.path, out_dir / "loss.png"):
            result["plot"] = str(out_dir / "loss.png")
        print(f"train-lm: step {end_step}/{cfg.steps}, train loss {result['train_loss']:.4f}"
              + (f", held-out perplexity {last_val['ppl']:.3f}" if last_val else "")
              + f", {throughput:,.0f} tokens/s; outputs in {out_dir}")
    barrier(env)
    return result


def _checkpoint(wrapped, model, tokenizer, optimizer, scaler, cfg, env: DistEnv, step: int, out_dir: pathlib.Path):
    """Gather weights/optimizer/RNG from every rank; rank 0 writes the checkpoint atomically."""
    state_dict = full_state_dict(wrapped)
    optim = _optim_state(wrapped, optimizer)
    rngs = [rng_state()]
    if env.distributed:
        import torch.distributed as dist

        gathered = [None] * env.world_size
        dist.all_gather_object(gathered, rngs[0])
        rngs = gathered
    if env.is_main:
        train_state = {"step": step, "optimizer": optim, "scaler": scaler.state_dict() if scaler else {},
                       "rng": rngs if env.distributed else rngs[0]}
        save_lm_checkpoint(out_dir / "checkpoints", step, model, tokenizer, state_dict=state_dict,
                           train_state=train_state, run_info=_run_info(cfg), keep_last=cfg.keep_last)
    barrier(env)
