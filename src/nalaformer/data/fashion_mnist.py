"""Fashion-MNIST from its idx files: Debian's ``dataset-fashion-mnist``, a user path, or a download."""

from __future__ import annotations

import gzip
import os
import pathlib

import numpy as np
import torch

from .images import TensorImageDataset, augment_batch
from .registry import ImageDataset, LoadedSplit

__all__ = ["CLASSES", "DEBIAN_DIR", "MEAN", "STD", "IMAGE_SIZE", "find_fashion_mnist", "load_fashion_mnist", "DATASET"]

CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
           "Ankle boot")
MEAN, STD = 0.2860, 0.3530  # of the training images, scaled to [0, 1]
IMAGE_SIZE = 28
DEBIAN_DIR = pathlib.Path("/usr/share/datasets/fashion-mnist")
FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
         "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
HOW_TO_GET = ("Fashion-MNIST not found. Get it with one of:\n"
              "  apt-get install dataset-fashion-mnist   (Debian/Ubuntu: /usr/share/datasets/fashion-mnist)\n"
              "  --data-dir DIR  holding train-images-idx3-ubyte[.gz] and the other three idx files\n"
              "  --download      (needs internet; uses torchvision's downloader)")


def _idx_path(directory: pathlib.Path, stem: str) -> pathlib.Path | None:
    for candidate in (directory / stem, directory / f"{stem}.gz", directory / "FashionMNIST" / "raw" / stem,
                      directory / "FashionMNIST" / "raw" / f"{stem}.gz"):
        if candidate.is_file():
            return candidate
    return None


def find_fashion_mnist(data_dir: str | os.PathLike | None = None, download: bool = False) -> pathlib.Path:
    """Directory with the four idx files: ``data_dir``, else Debian's, else a torchvision download."""
    candidates = [pathlib.Path(data_dir)] if data_dir else [DEBIAN_DIR]
    for directory in candidates:
        if all(_idx_path(directory, stem) for pair in FILES.values() for stem in pair):
            return directory
    if data_dir and not pathlib.Path(data_dir).exists():
        raise FileNotFoundError(f"--data-dir: {data_dir} does not exist.\n{HOW_TO_GET}")
    if download:
        from torchvision.datasets import FashionMNIST

        root = pathlib.Path(data_dir or pathlib.Path.home() / ".cache" / "nalaformer")
        try:
            for train in (True, False):
                FashionMNIST(str(root), train=train, download=True)
        except Exception as exc:  # offline, blocked, ...
            raise FileNotFoundError(f"download failed ({exc}).\n{HOW_TO_GET}") from exc
        return root
    raise FileNotFoundError(HOW_TO_GET)


def _read_idx(path: pathlib.Path) -> np.ndarray:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    magic = int.from_bytes(data[:4], "big")
    if magic >> 8 != 0x08:  # 0x08 = unsigned byte payload
        raise ValueError(f"{path}: not an idx file of unsigned bytes (magic {magic:#x})")
    ndim = magic & 0xFF
    shape = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    payload = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if payload.size != int(np.prod(shape)):
        raise ValueError(f"{path}: truncated idx file ({payload.size} bytes for shape {shape})")
    return payload.reshape(shape)


def load_fashion_mnist(split: str, data_dir: str | os.PathLike | None = None, download: bool = False
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """Return ``(images uint8 (N, 1, 28, 28), labels int64 (N,))`` of split 'train' or 'test'."""
    if split not in FILES:
        raise ValueError(f"split: expected 'train' or 'test', got {split!r}")
    directory = find_fashion_mnist(data_dir, download)
    images_stem, labels_stem = FILES[split]
    images = torch.from_numpy(_read_idx(_idx_path(directory, images_stem)).copy())
    labels = torch.from_numpy(_read_idx(_idx_path(directory, labels_stem)).astype(np.int64))
    if images.shape[0] != labels.shape[0]:
        raise ValueError(f"Fashion-MNIST {split}: {images.shape[0]} images but {labels.shape[0]} labels")
    return images.unsqueeze(1), labels


def load(split: str, options) -> LoadedSplit:
    """The split in memory (uint8); augmentation and normalisation run per batch on the device."""
    images, labels = load_fashion_mnist("train" if split == "train" else "test", options.data_dir, options.download)

    def transform(x: torch.Tensor) -> torch.Tensor:
        return augment_batch(x, size=options.img_size, train=split == "train", mean=MEAN, std=STD,
                             pad=options.shift, flip=options.hflip)

    return LoadedSplit(TensorImageDataset(images, labels, CLASSES), CLASSES, transform, None)


def preprocess(image, img_size: int) -> torch.Tensor:
    """One PIL image -> (1, 1, img_size, img_size): grayscale at the stored 28x28, then the eval transform."""
    gray = np.asarray(image.convert("L").resize((IMAGE_SIZE, IMAGE_SIZE)), dtype=np.uint8)
    return augment_batch(torch.from_numpy(gray.copy())[None, None], size=img_size, train=False, mean=MEAN, std=STD)


DATASET = ImageDataset("fashion-mnist", in_chans=1, classes=CLASSES, image_size=IMAGE_SIZE, load=load,
                       preprocess=preprocess, description="Fashion-MNIST idx files (28x28 grayscale, 10 classes)")
