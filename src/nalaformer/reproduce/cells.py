"""One cell = (task, attention kind, seed): the context every task function gets and the rows it returns."""

from __future__ import annotations

import dataclasses
import pathlib
import platform

import torch

__all__ = ["Cell", "versions"]


def versions() -> dict:
    import timm
    import transformers

    import nalaformer

    return {"torch": torch.__version__, "timm": timm.__version__, "transformers": transformers.__version__,
            "nalaformer": getattr(nalaformer, "__version__", "dev"), "python": platform.python_version()}


@dataclasses.dataclass
class Cell:
    """Where and how one cell runs; ``row`` stamps a metric with the cell's identity and settings."""

    task: str
    attention: str
    seed: int
    size: str  # "quick" or "full"
    settings: dict
    device: str
    work_dir: pathlib.Path

    def row(self, metric: str, value: float, **extra) -> dict:
        return {"task": self.task, "attention": self.attention, "seed": self.seed, "metric": metric,
                "value": float(value), "size": self.size, "device": self.device, **extra}
