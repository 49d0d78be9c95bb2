"""``nalaformer eval-lm``: held-out perplexity of a causal LM directory (+ lm-evaluation-harness tasks).

The held-out split defaults to the one the model was trained with (read from the checkpoint's
``run.json``): same corpus, fraction, seed, sequence length and packing.
"""

from __future__ import annotations

import argparse
import json
import math
import pathlib

import torch

from ...data.text import PackedBlocks
from ..core.config import positive_int
from ..core.precision import autocast
from .checkpoint import RUN_FILE

HELP = "held-out perplexity of a trained causal LM (and optional lm-evaluation-harness tasks)"

__all__ = ["HELP", "add_arguments", "run", "evaluate_perplexity", "run_harness"]


@torch.no_grad()
def evaluate_perplexity(model, blocks: PackedBlocks, batch_size: int, device: torch.device, *,
                        amp_dtype: torch.dtype | None = None, max_batches: int = 0, rank: int = 0,
                        world_size: int = 1, reduce=None) -> dict:
    """Mean next-token loss (nats), perplexity and token count over ``blocks``.

    Batches are dealt round-robin to ranks; every rank runs the same number of forwards (FSDP needs
    lock-step), padding with a zero-weight batch. ``reduce`` sums a list of floats over ranks.
    """
    was_training = model.training
    model.eval()
    n_batches = math.ceil(len(blocks) / batch_size)
    if max_batches > 0:
        n_batches = min(n_batches, max_batches)
    loss_sum = count = 0.0
    for i in range(rank, math.ceil(n_batches / world_size) * world_size, world_size):
        weight = 1.0 if i < n_batches else 0.0
        j = i if i < n_batches else 0
        batch = blocks.batch(range(j * batch_size, min((j + 1) * batch_size, len(blocks))))
        batch = {k: v.to(device) for k, v in batch.items()}
        labels = batch.pop("labels")
        with autocast(device, amp_dtype):
            logits = model(**batch, use_cache=False).logits
        target = labels[:, 1:].flatten()
        nll = torch.nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1).float(), target, ignore_index=-100,
                                                reduction="sum")
        loss_sum += weight * nll.item()
        count += weight * (target != -100).sum().item()
    if reduce is not None:
        loss_sum, count = reduce([loss_sum, count])
    if was_training:
        model.train()
    loss = loss_sum / max(count, 1.0)
    return {"loss": loss, "ppl": math.exp(min(loss, 50.0)), "tokens": int(count)}


def run_harness(model_dir: str, tasks: list[str], *, include_path: str | None = None, limit: int | None = None,
                batch_size: int = 1, device: str = "cpu") -> dict:
    """lm-evaluation-harness ``hf`` model on ``tasks``; needs ``pip install lm-eval``."""
    try:
        import lm_eval
        from lm_eval.tasks import TaskManager
    except ImportError as exc:
        raise ImportError("--tasks: lm-evaluation-harness is not installed; `pip install lm-eval`") from exc
    from ...models.lm import register

    register()
    manager = TaskManager(include_path=include_path) if include_path else TaskManager()
    return lm_eval.simple_evaluate(model="hf", model_args=f"pretrained={model_dir},dtype=float32", tasks=tasks,
                                   task_manager=manager, limit=limit, batch_size=batch_size, device=device)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model_dir", help="a train-lm checkpoint / model directory (or any HF causal LM dir)")
    parser.add_argument("--corpus", nargs="*", default=None,
                        help="text files/dirs/globs (default: the corpus recorded in run.json, else the Python docs)")
    parser.add_argument("--held-out", type=float, default=None, help="held-out fraction (default: as trained)")
    parser.add_argument("--seed", type=int, default=None, help="split seed (default: as trained)")
    parser.add_argument("--seq-len", type=positive_int, default=None, help="block length (default: as trained)")
    parser.add_argument("--packing", choices=("documents", "concat"), default=None)
    parser.add_argument("--batch-size", type=positive_int, default=8)
    parser.add_argument("--max-batches", type=int, default=0, help="cap on eval batches (0 = all)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--tasks", default=None, help="comma-separated lm-evaluation-harness tasks (optional)")
    parser.add_argument("--include-path", default=None, help="directory of extra lm-eval task YAML files")
    parser.add_argument("--limit", type=int, default=None, help="lm-eval examples per task")
    parser.add_argument("--json", type=pathlib.Path, default=None, help="also write the results here")


def _trained_settings(model_dir: pathlib.Path) -> dict:
    path = model_dir / RUN_FILE
    return json.loads(path.read_text()) if path.is_file() else {}


def run(args: argparse.Namespace) -> int:
    from transformers import AutoModelForCausalLM

    from ...models.lm import register
    from .build import load_corpus_streams, load_tokenizer

    register()
    model_dir = pathlib.Path(args.model_dir)
    if not (model_dir / "config.json").is_file():
        raise FileNotFoundError(f"model_dir: {model_dir} is not a model directory (no config.json)")
    trained = _trained_settings(model_dir)
    corpus = args.corpus if args.corpus else trained.get("corpus")
    held_out = args.held_out if args.held_out is not None else trained.get("held_out", 0.05)
    seed = args.seed if args.seed is not None else trained.get("seed", 0)
    seq_len = args.seq_len or trained.get("seq_len", 256)
    packing = args.packing or trained.get("packing", "documents")
    device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device)

    tokenizer = load_tokenizer(str(model_dir))
    _, held = load_corpus_streams(corpus, tokenizer, held_out, seed)
    if len(held) < seq_len:
        raise ValueError(f"--held-out: the held-out split has {len(held)} tokens, fewer than one --seq-len block")
    blocks = PackedBlocks(held, seq_len, tokenizer.eos_token_id, documents=packing == "documents")
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32).to(device)
    result = evaluate_perplexity(model, blocks, args.batch_size, device, max_batches=args.max_batches)
    print(f"{model_dir}: held-out loss {result['loss']:.4f} nats/token, perplexity {result['ppl']:.3f} "
          f"over {result['tokens']:,} tokens (seq_len {seq_len}, packing {packing})")
    report = {"perplexity": result}
    if args.tasks:
        harness = run_harness(str(model_dir), [t.strip() for t in args.tasks.split(",") if t.strip()],
                              include_path=args.include_path, limit=args.limit, device=str(device))
        report["harness"] = harness["results"]
        for task, metrics in harness["results"].items():
            shown = ", ".join(f"{k} {v:.4f}" for k, v in metrics.items() if isinstance(v, float))
            print(f"  {task}: {shown}")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2, default=str))
    return 0


if __name__ == "__main__":
    import sys

    _parser = argparse.ArgumentParser(prog="nalaformer eval-lm", description=HELP)
    add_arguments(_parser)
    sys.exit(run(_parser.parse_args()))
