"""Image datasets for training: in-memory tensors (Fashion-MNIST) and ImageFolder trees."""

from __future__ import annotations

import os
import pathlib
import warnings

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

__all__ = ["TensorImageDataset", "SkipCorrupt", "UNREADABLE_IMAGE_ERRORS",
           "collate_skipping", "build_image_folder", "augment_batch"]


class TensorImageDataset(Dataset):
    """uint8 images (N, C, H, W) and int64 labels held in memory; augmentation happens per batch."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, classes: tuple[str, ...]):
        self.images, self.labels, self.classes = images, labels, classes

    def __len__(self) -> int:
        return self.labels.shape[0]

    def __getitem__(self, i):
        return self.images[i], self.labels[i]


def augment_batch(images: torch.Tensor, *, size: int, train: bool, mean: float, std: float, pad: int = 4,
                  flip: bool = True) -> torch.Tensor:
    """uint8 (B, C, h, w) -> float (B, C, size, size): centre-pad to ``size``; when training a random
    translation by up to ``pad`` pixels and a random horizontal flip. Uses the global torch RNG."""
    x = images.float().div_(255.0)
    h, w = x.shape[-2:]
    top, left = (size - h) // 2, (size - w) // 2
    x = F.pad(x, (left, size - w - left, top, size - h - top))
    if train:
        b = x.shape[0]
        x = F.pad(x, (pad, pad, pad, pad))
        dy = torch.randint(0, 2 * pad + 1, (b,)).tolist()
        dx = torch.randint(0, 2 * pad + 1, (b,)).tolist()
        x = torch.stack([x[i, :, dy[i]:dy[i] + size, dx[i]:dx[i] + size] for i in range(b)])
        if flip:
            flips = torch.rand(b) < 0.5
            x[flips] = x[flips].flip(-1)
    return (x - mean) / std


def _unreadable_image_errors() -> tuple[type[BaseException], ...]:
    """What PIL raises for truncated/corrupt files, plus its decompression-bomb guard (not an OSError)."""
    try:
        from PIL import Image
    except ImportError:
        return OSError, ValueError, SyntaxError
    return OSError, ValueError, SyntaxError, Image.DecompressionBombError


UNREADABLE_IMAGE_ERRORS = _unreadable_image_errors()


class SkipCorrupt(Dataset):
    """Wrap a dataset so an unreadable sample becomes ``None`` (dropped by :func:`collate_skipping`)."""

    def __init__(self, dataset: Dataset):
        self.dataset = dataset
        self.classes = getattr(dataset, "classes", None)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i):
        try:
            return self.dataset[i]
        except UNREADABLE_IMAGE_ERRORS as exc:
            path = getattr(self.dataset, "samples", [(f"#{i}",)])[i][0]
            warnings.warn(f"skipping unreadable image {path}: {exc}", RuntimeWarning, stacklevel=2)
            return None


def collate_skipping(batch):
    """Default collation of the readable samples plus the count of skipped ones: (x, y, skipped)."""
    kept = [item for item in batch if item is not None]
    skipped = len(batch) - len(kept)
    if not kept:
        return None, None, skipped
    x, y = torch.utils.data.default_collate(kept)
    return x, y, skipped


def build_image_folder(root: str | os.PathLike, split: str, transform) -> Dataset:
    """torchvision ImageFolder of ``root/split`` with unreadable images skipped (and counted)."""
    from torchvision.datasets import ImageFolder

    path = pathlib.Path(root) / split
    if not path.is_dir():
        raise FileNotFoundError(f"--data-dir: expected a folder {path} with one sub-folder per class")
    try:
        dataset = ImageFolder(str(path), transform=transform)
    except FileNotFoundError as exc:  # no class folders / no images
        raise FileNotFoundError(f"--data-dir: {path} holds no images in class sub-folders ({exc})") from exc
    return SkipCorrupt(dataset)
