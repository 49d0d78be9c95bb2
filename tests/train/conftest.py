"""Small, learnable stand-ins for real data, written in the real on-disk formats."""

from __future__ import annotations

import gzip
import pathlib

import numpy as np
import pytest


def write_idx(path: pathlib.Path, array: np.ndarray) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(s).to_bytes(4, "big") for s in array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def synthetic_fashion(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """28x28 uint8 stripe images: class = (period in {2, 3, 4, 6, 8}) x (horizontal or vertical), with a
    random phase and noise, so flips and shifts keep the class (as the trainer's augmentation assumes)."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, n)
    coords = np.arange(28)
    images = np.empty((n, 28, 28))
    for i, c in enumerate(labels):
        period = (2, 3, 4, 6, 8)[c % 5]
        wave = ((coords + rng.integers(0, period)) % period) < period / 2
        stripes = np.broadcast_to(wave[:, None] if c < 5 else wave[None, :], (28, 28))
        images[i] = 40 + 170 * stripes + rng.normal(0, 15, (28, 28))
    return images.clip(0, 255).astype(np.uint8), labels.astype(np.uint8)


@pytest.fixture(scope="session")
def fashion_dir(tmp_path_factory) -> pathlib.Path:
    """A Fashion-MNIST-format directory (idx.gz files) with 512 train and 128 test images."""
    root = tmp_path_factory.mktemp("fmnist")
    for split, n, seed in (("train", 512, 0), ("t10k", 128, 1)):
        images, labels = synthetic_fashion(n, seed)
        write_idx(root / f"{split}-images-idx3-ubyte.gz", images)
        write_idx(root / f"{split}-labels-idx1-ubyte.gz", labels)
    return root
