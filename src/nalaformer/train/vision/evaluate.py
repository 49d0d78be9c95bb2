"""``nalaformer eval`` and ``nalaformer predict`` for runs written by ``nalaformer train``."""

from __future__ import annotations

import argparse
import json
import pathlib
import time

import torch
from safetensors.torch import load_file

from ..core.config import positive_int

HELP = "evaluate a trained run: top-1/top-5, per-class accuracy, confusion matrix, images/s"
PREDICT_HELP = "top-k labels for image files with a trained run"


def load_run(run_dir: str | pathlib.Path, weights: str | None = None, device: str = "cpu"):
    """Rebuild the model of a training run directory and load its best (or given) weights."""
    import timm

    import nalaformer  # noqa: F401  (registers the NaLaFormer family with timm)

    run_dir = pathlib.Path(run_dir)
    info_path = run_dir / "run.json"
    if not info_path.is_file():
        raise FileNotFoundError(f"--run: {run_dir} is not a training run (no run.json)")
    info = json.loads(info_path.read_text())
    model = timm.create_model(info["model"], num_classes=info["num_classes"], in_chans=info["in_chans"],
                              **info["model_kwargs"])
    path = pathlib.Path(weights) if weights else run_dir / "best.safetensors"
    if not path.is_file():
        raise FileNotFoundError(f"--weights: {path} not found")
    state = load_file(path)
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise RuntimeError(f"--weights: {path} does not fit {info['model']}: missing {missing[:10]}, "
                           f"unexpected {unexpected[:10]}")
    return model.to(device).eval(), info


def _eval_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--run", required=True, help="output directory of `nalaformer train`")
    parser.add_argument("--weights", default=None, help="weights file (default: RUN/best.safetensors)")
    parser.add_argument("--data-dir", default=None, help="dataset location (default: the run's)")
    parser.add_argument("--batch-size", type=positive_int, default=256)
    parser.add_argument("--device", default="auto")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    _eval_args(parser)


def _save_confusion(matrix: torch.Tensor, classes: list[str], path: pathlib.Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, ax = plt.subplots(figsize=(1 + 0.6 * len(classes), 1 + 0.55 * len(classes)))
    ax.imshow(matrix.numpy(), cmap="Blues")
    ax.set_xticks(range(len(classes)), classes, rotation=60, ha="right")
    ax.set_yticks(range(len(classes)), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for i in range(len(classes)):
        for j in range(len(classes)):
            ax.text(j, i, int(matrix[i, j]), ha="center", va="center", fontsize=7,
                    color="white" if matrix[i, j] > matrix.max() / 2 else "black")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def run(args: argparse.Namespace) -> int:
    from ..core.distributed import init_distributed
    from .config import VisionTrainConfig
    from .data import build_vision_data, prepare, unpack_batch

    env = init_distributed(args.device)
    model, info = load_run(args.run, args.weights, env.device)
    cfg = VisionTrainConfig(**{**info["config"], "data_dir": args.data_dir or info["config"]["data_dir"],
                               "eval_batch_size": args.batch_size, "workers": 0, "resume": None})
    data = build_vision_data(cfg, env)
    n = len(data.classes)
    confusion = torch.zeros(n, n, dtype=torch.int64)
    top5 = seen = 0
    start = time.perf_counter()
    with torch.no_grad():
        for batch in data.val:
            x, y, _ = unpack_batch(batch)
            if x is None:
                continue
            x, y = prepare(x, y, env.device, data.eval_transform, False)
            logits = model(x).float()
            top = logits.topk(min(5, n), -1).indices
            confusion += torch.bincount((y * n + top[:, 0]).cpu(), minlength=n * n).view(n, n)
            top5 += (top == y[:, None]).any(-1).sum().item()
            seen += y.numel()
    seconds = time.perf_counter() - start
    per_class = (confusion.diag() / confusion.sum(1).clamp_min(1)).tolist()
    result = {"top1": confusion.diag().sum().item() / max(seen, 1), "top5": top5 / max(seen, 1), "images": seen,
              "images_per_s": seen / seconds, "per_class": dict(zip(data.classes, per_class))}
    out = pathlib.Path(args.run)
    (out / "eval.json").write_text(json.dumps(result, indent=2))
    plotted = _save_confusion(confusion, list(data.classes), out / "confusion.png")
    print(f"top-1 {result['top1']:.4f}  top-5 {result['top5']:.4f}  on {seen} images  "
          f"({result['images_per_s']:,.0f} images/s on {env.device})")
    for name, acc in result["per_class"].items():
        print(f"  {name:>14}: {acc:.4f}")
    print(f"wrote {out / 'eval.json'}" + (f" and {out / 'confusion.png'}" if plotted else ""))
    return 0


class Predict:
    """The ``predict`` command, as a module-like object for the CLI dispatcher."""

    HELP = PREDICT_HELP

    @staticmethod
    def add_arguments(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("images", nargs="+", help="image files")
        parser.add_argument("--run", required=True, help="output directory of `nalaformer train`")
        parser.add_argument("--weights", default=None)
        parser.add_argument("--top-k", type=positive_int, default=3)
        parser.add_argument("--device", default="cpu")

    @staticmethod
    def run(args: argparse.Namespace) -> int:
        from PIL import Image

        from ...data.images import UNREADABLE_IMAGE_ERRORS

        model, info = load_run(args.run, args.weights, args.device)
        classes = info["classes"]
        for path in args.images:
            try:
                image = Image.open(path)
                image.load()
            except UNREADABLE_IMAGE_ERRORS as exc:
                raise ValueError(f"images: cannot read {path} ({exc})") from exc
            x = _preprocess(image, info).to(args.device)
            with torch.no_grad():
                probs = model(x).float().softmax(-1)[0]
            top = probs.topk(min(args.top_k, len(classes)))
            labels = ", ".join(f"{classes[i]} {p:.3f}" for p, i in zip(top.values.tolist(), top.indices.tolist()))
            print(f"{path}: {labels}")
        return 0


def _preprocess(image, info: dict) -> torch.Tensor:
    """One PIL image -> (1, C, S, S) exactly as the run's eval pipeline prepares it (the dataset says how)."""
    from ...data.registry import get_dataset

    return get_dataset(info["dataset"]).preprocess(image, info["img_size"])


predict = Predict()
