"""A registrable dataset module for the tests: 3-channel 12x12 noise images in two classes, in memory."""

from __future__ import annotations

import numpy as np
import torch

from nalaformer.data.images import TensorImageDataset
from nalaformer.data.registry import ImageDataset, LoadedSplit

CLASSES = ("dark", "light")


def load(split: str, options) -> LoadedSplit:
    g = torch.Generator().manual_seed(0 if split == "train" else 1)
    labels = torch.randint(0, 2, (16,), generator=g)
    images = (torch.rand(16, 3, 12, 12, generator=g) * 127 + 128 * labels[:, None, None, None]).to(torch.uint8)

    def transform(x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.interpolate(x.float() / 255, size=options.img_size, mode="bilinear")

    return LoadedSplit(TensorImageDataset(images, labels, CLASSES), CLASSES, transform)


def preprocess(image, img_size: int) -> torch.Tensor:
    x = torch.from_numpy(np.asarray(image.convert("RGB"), dtype=np.uint8).copy()).permute(2, 0, 1)[None]
    return torch.nn.functional.interpolate(x.float() / 255, size=img_size, mode="bilinear")


DATASET = ImageDataset("tiny-rgb", in_chans=3, classes=CLASSES, image_size=12, load=load, preprocess=preprocess)
