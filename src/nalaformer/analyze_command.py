"""``nalaformer analyze``: entropy vs query norm for every attention layer of a trained model.

The analysis itself (:func:`nalaformer.analysis.analyze_model`) takes a model and a batch; this module is
only the glue that loads them from what the trainers write, and is the one place that knows where the
trainers' loaders live (``_vision_model_and_batch``, ``_lm_model_and_batch``).
"""

from __future__ import annotations

import argparse
import pathlib

import torch

HELP = "per-layer attention row entropy vs |q| (with the softmax reference) of a trained vision run or LM"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("target", help="a `nalaformer train` run directory (run.json) or an LM model directory "
                                       "(config.json, e.g. written by `nalaformer train-lm`)")
    parser.add_argument("--out", default=None, help="output directory (default: TARGET/analysis)")
    parser.add_argument("--batch-size", type=int, default=4, help="images or text blocks in the batch")
    parser.add_argument("--data-dir", default=None, help="vision: dataset location (default: the run's)")
    parser.add_argument("--corpus", nargs="*", default=None, help="LM: text files (default: the run's corpus)")
    parser.add_argument("--seq-len", type=int, default=None, help="LM: block length (default: as trained)")
    parser.add_argument("--bins", type=int, default=10, help="query-norm bins per layer")
    parser.add_argument("--max-queries", type=int, default=256, help="query rows per image (vision layers)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto")


def _vision_model_and_batch(run_dir: pathlib.Path, args, device: torch.device):
    """The run's model (best weights) and one validation batch, preprocessed as the evaluator does."""
    from .train.core.distributed import init_distributed
    from .train.vision.config import VisionTrainConfig
    from .train.vision.data import build_vision_data, prepare, unpack_batch
    from .train.vision.evaluate import load_run

    env = init_distributed(str(device))
    model, info = load_run(run_dir, None, env.device)
    cfg = VisionTrainConfig(**{**info["config"], "data_dir": args.data_dir or info["config"]["data_dir"],
                               "eval_batch_size": args.batch_size, "workers": 0, "resume": None})
    data = build_vision_data(cfg, env)
    for batch in data.val:
        x, y, _ = unpack_batch(batch)
        if x is not None:
            return model, prepare(x, y, env.device, data.eval_transform, False)[0]
    raise ValueError(f"--data-dir: the validation split of {cfg.data_dir} is empty")


def _lm_model_and_batch(model_dir: pathlib.Path, args, device: torch.device):
    """The model directory's LM and ``--batch-size`` held-out blocks of its corpus (as eval-lm splits it)."""
    import json

    from transformers import AutoModelForCausalLM

    from .data.text import PackedBlocks
    from .models.lm import register
    from .train.lm.build import load_corpus_streams, load_tokenizer
    from .train.lm.checkpoint import RUN_FILE

    register()
    run_file = model_dir / RUN_FILE
    trained = json.loads(run_file.read_text()) if run_file.is_file() else {}
    tokenizer = load_tokenizer(str(model_dir))
    _, held = load_corpus_streams(args.corpus or trained.get("corpus"), tokenizer, trained.get("held_out", 0.05),
                                  trained.get("seed", 0))
    blocks = PackedBlocks(held, args.seq_len or trained.get("seq_len", 256), tokenizer.eos_token_id, documents=False)
    batch = blocks.batch(range(min(args.batch_size, len(blocks))))
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32).to(device)
    return model, {"input_ids": batch["input_ids"].to(device), "use_cache": False}


def run(args: argparse.Namespace) -> int:
    from .analysis import analyze_model

    target = pathlib.Path(args.target)
    device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device)
    if (target / "config.json").is_file():
        model, batch = _lm_model_and_batch(target, args, device)
    elif (target / "run.json").is_file():
        model, batch = _vision_model_and_batch(target, args, device)
    else:
        raise FileNotFoundError(f"target: {target} is neither a training run (run.json) nor a model directory "
                                "(config.json)")
    out = pathlib.Path(args.out) if args.out else target / "analysis"
    summary = analyze_model(model, batch, out, bins=args.bins, max_queries=args.max_queries, seed=args.seed)
    print(f"{'layer':<34} {'kind':<12} {'slope':>8} {'softmax':>8}   (slope of row entropy vs log|q|)")
    for row in summary:
        print(f"{row['name']:<34} {row['kind']:<12} {row['slope']:8.3f} {row['softmax_slope']:8.3f}   {row['unit']}")
    print(f"wrote {out / 'summary.csv'} and {len(summary)} per-layer CSV/PNG files under {out / 'layers'}")
    return 0
