"""An ImageFolder tree (``DIR/train/<class>/*.jpg``, ``DIR/val/<class>/*.jpg``) with timm's transforms;
unreadable images are skipped (and counted) rather than ending the run."""

from __future__ import annotations

from .images import build_image_folder, collate_skipping
from .registry import ImageDataset, LoadedSplit

__all__ = ["DATASET"]


def _transform(img_size: int, train: bool, options=None):
    from timm.data import DEFAULT_CROP_PCT, create_transform

    if train:
        return create_transform(img_size, is_training=True, auto_augment=options.aa or None, re_prob=options.reprob,
                                interpolation="bicubic")
    return create_transform(img_size, is_training=False, interpolation="bicubic", crop_pct=DEFAULT_CROP_PCT)


def load(split: str, options) -> LoadedSplit:
    if not options.data_dir:
        raise ValueError("--data-dir: required with --dataset folder (a tree with train/ and val/)")
    dataset = build_image_folder(options.data_dir, split, _transform(options.img_size, split == "train", options))
    return LoadedSplit(dataset, tuple(dataset.classes), None, collate_skipping)


def preprocess(image, img_size: int):
    return _transform(img_size, train=False)(image.convert("RGB"))[None]


DATASET = ImageDataset("folder", in_chans=3, classes=None, image_size=None, load=load, preprocess=preprocess,
                       description="ImageFolder tree with train/ and val/ (RGB, any size)")
