"""The image-dataset registry: one module per dataset says its name, shapes, classes and how to load it.

A dataset module defines ``DATASET = ImageDataset(...)`` and is listed in :data:`DATASETS`; the trainer,
evaluator and predictor find everything they need through :func:`get_dataset` (modules load lazily, so a
missing optional library only matters for the dataset that needs it).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Callable

import torch

__all__ = ["ImageDataset", "LoadedSplit", "DATASETS", "get_dataset", "dataset_names"]

# name -> module defining DATASET
DATASETS: dict[str, str] = {
    "fashion-mnist": "nalaformer.data.fashion_mnist",
    "folder": "nalaformer.data.image_folder",
}


@dataclass
class LoadedSplit:
    """One split ready for a DataLoader. ``batch_transform`` runs on whole batches on the device (in-memory
    uint8 data) or is None when the dataset transforms per sample; ``collate`` None means the default."""

    dataset: torch.utils.data.Dataset
    classes: tuple[str, ...]
    batch_transform: Callable[[torch.Tensor], torch.Tensor] | None = None
    collate: Callable | None = None


@dataclass(frozen=True)
class ImageDataset:
    """What a dataset module declares.

    ``load(split, options)``: ``split`` is "train" or "val"; ``options`` any object with the trainer's data
    fields (data_dir, download, img_size, shift, hflip, aa, reprob). ``preprocess(image, img_size)``: one PIL
    image -> (1, C, img_size, img_size), exactly as the eval split prepares it."""

    name: str
    in_chans: int
    classes: tuple[str, ...] | None  # None: found in the data (ImageFolder)
    image_size: int | None  # stored side length; None: varies per image
    load: Callable[[str, Any], LoadedSplit]
    preprocess: Callable[[Any, int], torch.Tensor]
    description: str = ""


def dataset_names() -> list[str]:
    return sorted(DATASETS)


def get_dataset(name: str) -> ImageDataset:
    """The registered dataset ``name`` (ValueError naming the valid ones otherwise)."""
    if name not in DATASETS:
        raise ValueError(f"--dataset: expected one of {', '.join(dataset_names())}, got {name!r}")
    return importlib.import_module(DATASETS[name]).DATASET
