"""Fashion scenes: dense prediction in miniature, composed from Fashion-MNIST items.

Each scene is a square canvas with a few Fashion-MNIST items, each scaled, placed at random and pasted over
the earlier ones (later items occlude earlier ones). The per-pixel label is the class of the item on top
(1..10, the Fashion-MNIST class + 1) or 0 for background, where no item's pixel is brighter than
``threshold``. Train scenes use train items, test scenes test items. A scene is a pure function of
(seed, index), so a dataset needs no storage and every worker and epoch sees the same scenes.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

__all__ = ["BACKGROUND", "NUM_SEG_CLASSES", "SceneSpec", "FashionScenes", "compose_scene"]

BACKGROUND = 0
NUM_SEG_CLASSES = 11  # background + the 10 Fashion-MNIST classes


@dataclass(frozen=True)
class SceneSpec:
    """Canvas size, items per scene (inclusive range), item side in pixels (inclusive range), mask threshold."""

    size: int = 224
    items: tuple[int, int] = (3, 7)
    item_size: tuple[int, int] = (48, 112)
    threshold: float = 0.1

    def __post_init__(self):
        if isinstance(self.size, bool) or not isinstance(self.size, int) or self.size < 28:
            raise ValueError(f"size: expected an int >= 28, got {self.size!r}")
        for name in ("items", "item_size"):
            low, high = getattr(self, name)
            if not (isinstance(low, int) and isinstance(high, int) and 1 <= low <= high):
                raise ValueError(f"{name}: expected (low, high) ints with 1 <= low <= high, got {getattr(self, name)}")
        if self.item_size[1] > self.size:
            raise ValueError(f"item_size: items up to {self.item_size[1]} px do not fit a {self.size} px canvas")
        if not 0 <= self.threshold < 1:
            raise ValueError(f"threshold: expected a number in [0, 1), got {self.threshold!r}")


def compose_scene(items: torch.Tensor, classes: torch.Tensor, spec: SceneSpec, generator: torch.Generator
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """One scene from a pool: items uint8 (P, 1, 28, 28), classes int64 (P,) ->
    (image float32 (1, size, size) in [0, 1], labels int64 (size, size) in [0, 10])."""
    image = torch.zeros(1, spec.size, spec.size)
    labels = torch.full((spec.size, spec.size), BACKGROUND, dtype=torch.int64)
    count = int(torch.randint(spec.items[0], spec.items[1] + 1, (), generator=generator))
    for pick in torch.randint(len(items), (count,), generator=generator).tolist():
        side = int(torch.randint(spec.item_size[0], spec.item_size[1] + 1, (), generator=generator))
        top, left = (int(torch.randint(spec.size - side + 1, (), generator=generator)) for _ in range(2))
        patch = items[pick].float().div(255).unsqueeze(0)
        patch = F.interpolate(patch, size=(side, side), mode="bilinear", align_corners=False)[0].clamp_(0, 1)
        mask = patch[0] > spec.threshold
        region = (slice(top, top + side), slice(left, left + side))
        image[0][region] = torch.where(mask, patch[0], image[0][region])
        labels[region] = torch.where(mask, classes[pick] + 1, labels[region])
    return image, labels


class FashionScenes(torch.utils.data.Dataset):
    """``num_scenes`` scenes from an item pool (images uint8 (P, 1, 28, 28), classes (P,)).

    ``dataset[i]`` -> (image (1, size, size) float32, labels (size, size) int64), the same for the same
    (seed, i). ``transform`` (optional) maps the image tensor, e.g. normalisation.
    """

    def __init__(self, items: torch.Tensor, classes: torch.Tensor, num_scenes: int, spec: SceneSpec = SceneSpec(),
                 seed: int = 0, transform=None):
        if items.ndim != 4 or items.shape[1:] != (1, 28, 28) or items.dtype != torch.uint8:
            raise ValueError(f"items: expected uint8 (P, 1, 28, 28) Fashion-MNIST images, got "
                             f"{items.dtype} {tuple(items.shape)}")
        if classes.shape != items.shape[:1]:
            raise ValueError(f"classes: expected shape ({len(items)},), got {tuple(classes.shape)}")
        if isinstance(num_scenes, bool) or not isinstance(num_scenes, int) or num_scenes < 1:
            raise ValueError(f"num_scenes: expected a positive int, got {num_scenes!r}")
        self.items, self.classes, self.num_scenes = items, classes.long(), num_scenes
        self.spec, self.seed, self.transform = spec, int(seed), transform

    def __len__(self) -> int:
        return self.num_scenes

    def __getitem__(self, index: int):
        if not -self.num_scenes <= index < self.num_scenes:
            raise IndexError(f"index {index} out of range for {self.num_scenes} scenes")
        index %= self.num_scenes
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + index)
        image, labels = compose_scene(self.items, self.classes, self.spec, generator)
        return (self.transform(image) if self.transform is not None else image), labels
