"""The tasks. Each ``run_TASK(cell) -> rows`` trains one model through the shared training core:
the vision trainer (``train.vision.train.Trainer``), the LM trainer (``train.lm.train.train``), or, for
tasks with their own data (MQAR), the core's ``fit_steps`` loop."""

from __future__ import annotations

import math
import time

import torch

from ..train.core.loop import fit_steps
from ..train.core.precision import autocast, resolve_amp
from ..train.core.seeding import seed_everything
from .entropy import entropy_rows

__all__ = ["TASKS", "TIMED", "run_fashion_mnist", "run_fashion_scenes", "run_scenes_speed", "run_python_docs_bytes",
           "run_mqar"]


def run_fashion_mnist(cell) -> list[dict]:
    """Top-1 on the Fashion-MNIST test set with the ``nalaformer train`` recipe, one attention kind throughout."""
    from ..train.vision.config import VisionTrainConfig
    from ..train.vision.data import prepare
    from ..train.vision.train import Trainer

    s = cell.settings
    cfg = VisionTrainConfig(
        model=s["model"], model_kwargs={**s["model_kwargs"], "attn_types": cell.attention}, img_size=s["img_size"],
        epochs=s["epochs"], batch_size=s["batch_size"], eval_batch_size=s["eval_batch_size"],
        max_train_batches=s["max_train_batches"], max_eval_batches=s["max_eval_batches"], seed=cell.seed,
        device=cell.device, output_dir=str(cell.work_dir / "train"), overwrite=True, tensorboard=False,
        keep_last=0, data_dir=s.get("data_dir"))
    started = time.perf_counter()
    trainer = Trainer(cfg)
    metrics = trainer.fit()
    wall = time.perf_counter() - started
    extra = dict(params=trainer.num_params, steps=trainer.num_updates, img_size=s["img_size"],
                 eval_images=metrics["count"], wall_s=wall)
    rows = [cell.row("top1", metrics["top1"], **extra)]
    x, y = next(iter(trainer.data.val))[:2]
    x, _ = prepare(x[:16], y[:16], trainer.env.device, trainer.data.eval_transform, False)
    return rows + entropy_rows(cell, trainer.model, x, "fashion_mnist", **extra)


def run_python_docs_bytes(cell) -> list[dict]:
    """Held-out bits per byte of a byte-level causal LM on the Python docs after the same number of tokens."""
    from ..models.lm import NaLaForCausalLM
    from ..train.lm.config import LMTrainConfig
    from ..train.lm.train import train

    s = cell.settings
    cfg = LMTrainConfig(model=s["model"], model_overrides={"attn_type": cell.attention}, seq_len=s["seq_len"],
                        steps=s["steps"], batch_size=s["batch_size"], eval_every=0, eval_batches=s["eval_batches"],
                        sample_every=0, save_every=0, seed=cell.seed, device=cell.device,
                        output_dir=str(cell.work_dir / "train"), overwrite=True, tensorboard=False,
                        corpus=s.get("corpus"), held_out=s.get("held_out", 0.05))
    started = time.perf_counter()
    result = train(cfg)
    wall = time.perf_counter() - started
    model = NaLaForCausalLM.from_pretrained(result["model_dir"])
    params = sum(p.numel() for p in model.parameters())
    tokens = s["steps"] * s["batch_size"] * s["seq_len"]
    extra = dict(params=params, steps=s["steps"], seq_len=s["seq_len"], train_tokens=tokens, wall_s=wall,
                 tokens_per_s=result["tokens_per_s"])
    rows = [cell.row("bits_per_byte", result["val_loss"] / math.log(2), **extra)]
    batch = {"input_ids": _held_out_text(cfg, min(s["seq_len"], 256))}
    return rows + entropy_rows(cell, model.to(cell.device), {k: v.to(cell.device) for k, v in batch.items()},
                               "python_docs_bytes", **extra)


def _held_out_text(cfg, length: int, rows: int = 2) -> torch.Tensor:
    """(rows, length) token ids of held-out documents (the training run's split): real text for the entropy study."""
    from ..train.lm.build import load_corpus_streams, load_tokenizer

    _, held = load_corpus_streams(cfg.corpus, load_tokenizer(cfg.tokenizer), cfg.held_out, cfg.seed)
    if len(held) < rows * length:
        raise ValueError(f"the held-out split has {len(held)} tokens, fewer than the {rows} x {length} the entropy "
                         "study reads: raise held_out or give a larger --corpus")
    return torch.as_tensor(held[: rows * length].astype("int64")).view(rows, length)


def _mqar_model(s: dict, attention: str):
    """The same backbone for every kind: only ``attn_type`` differs. ``short_conv_size`` / ``short_conv_on``
    (a causal depthwise conv on q, k and v, as in Zoology's MQAR models) give every kind, position-free
    ones included, the token before each key; without it only the kinds with rotary positions can bind a
    value to its key."""
    from ..models.lm import NaLaConfig, NaLaForCausalLM

    longest = max(s["eval_seq_lens"] + s["train_seq_lens"])
    config = NaLaConfig(vocab_size=s["vocab_size"], hidden_size=s["hidden_size"],
                        intermediate_size=2 * s["hidden_size"], num_hidden_layers=s["layers"],
                        num_attention_heads=s["heads"], max_position_embeddings=longest, attn_type=attention,
                        short_conv_size=s.get("short_conv_size", 0), short_conv_on=s.get("short_conv_on", "v"))
    return NaLaForCausalLM(config)


def _mqar_spec(s: dict, seq_len: int, num_kv_pairs: int):
    from ..data.mqar import MQARSpec

    return MQARSpec(seq_len=seq_len, num_kv_pairs=num_kv_pairs, vocab_size=s["vocab_size"],
                    random_non_queries=s.get("random_non_queries", True))


def _mqar_batches(s: dict, seed: int):
    """An endless stream of (inputs, labels), cycling through the training (seq_len, kv) settings."""
    from ..data.mqar import make_mqar

    specs = [_mqar_spec(s, n, k) for n in s["train_seq_lens"] for k in s["train_kv"] if 4 * k <= n]
    step = 0
    while True:
        spec = specs[step % len(specs)]
        yield make_mqar(spec, s["batch_size"], seed=seed * 1_000_003 + step)
        step += 1


def run_mqar(cell) -> list[dict]:
    """Multi-query associative recall: one model per kind trained on a mix of settings, accuracy per
    (seq_len, num_kv_pairs) on held-out sequences (seeds disjoint from training)."""
    from ..data.mqar import make_mqar, mqar_accuracy

    s = cell.settings
    seed_everything(cell.seed)
    device = torch.device(cell.device)
    model = _mqar_model(s, cell.attention).to(device)
    params = sum(p.numel() for p in model.parameters())
    amp_dtype, scaler = resolve_amp("auto", device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=s["lr"], weight_decay=s.get("weight_decay", 0.1))
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=s["lr"], total_steps=s["steps"], pct_start=0.1)

    def loss_fn(batch):
        inputs, labels = (t.to(device) for t in batch)
        logits = model(input_ids=inputs).logits.float()
        return torch.nn.functional.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=-100)

    started = time.perf_counter()
    fit_steps(model, optimizer, _mqar_batches(s, cell.seed), loss_fn, s["steps"], device=device,
              amp_dtype=amp_dtype, scaler=scaler, clip=1.0, scheduler=schedule, desc=f"mqar {cell.attention}")
    wall = time.perf_counter() - started
    rows = []
    model.eval()
    for n in s["eval_seq_lens"]:
        for k in s["eval_kv"]:
            if 4 * k > n:
                continue
            inputs, labels = make_mqar(_mqar_spec(s, n, k), s["eval_examples"],
                                       seed=10_000_019 + 7 * n + k + 1000 * cell.seed)
            correct = total = 0
            with torch.no_grad():
                for i in range(0, len(inputs), 64):
                    with autocast(device, amp_dtype):
                        logits = model(input_ids=inputs[i:i + 64].to(device)).logits
                    c, t = mqar_accuracy(logits.float().cpu(), labels[i:i + 64])
                    correct, total = correct + c, total + t
            rows.append(cell.row("accuracy", correct / max(total, 1), params=params, steps=s["steps"], seq_len=n,
                                 num_kv_pairs=k, hidden_size=s["hidden_size"], wall_s=wall))
    return rows


def run_fashion_scenes(cell) -> list[dict]:
    """mIoU of an FPN segmenter on Fashion scenes (see ``scenes``)."""
    from .scenes import run_fashion_scenes as run

    return run(cell)


def run_scenes_speed(cell) -> list[dict]:
    """Forward throughput / peak memory of the scenes segmenter at 224 and 448 px (see ``scenes``)."""
    from .scenes import run_scenes_speed as run

    return run(cell)


TASKS = {"fashion_mnist": run_fashion_mnist, "fashion_scenes": run_fashion_scenes, "scenes_speed": run_scenes_speed,
         "python_docs_bytes": run_python_docs_bytes, "mqar": run_mqar}
TIMED = frozenset({"scenes_speed"})
"""Tasks that measure speed: one cell per kind (seed 0; speed does not depend on the seed), run after every other
cell and alone (``--jobs`` runs them in the parent once the workers are done)."""
