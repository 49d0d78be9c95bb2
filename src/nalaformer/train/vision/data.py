"""Build train/eval loaders for the vision trainer (Fashion-MNIST in memory, or an ImageFolder tree)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.utils.data import DataLoader, DistributedSampler, Sampler

from ...data.fashion_mnist import CLASSES, load_fashion_mnist
from ...data.images import TensorImageDataset, augment_batch, build_image_folder, collate_skipping

__all__ = ["VisionData", "build_vision_data", "ShardSampler", "FMNIST_MEAN", "FMNIST_STD"]

FMNIST_MEAN, FMNIST_STD = 0.2860, 0.3530


class ShardSampler(Sampler):
    """Every ``world``-th index from ``rank``: an exact, unpadded split of an eval set."""

    def __init__(self, length: int, rank: int, world: int):
        self.indices = list(range(rank, length, world))

    def __iter__(self):
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


@dataclass
class VisionData:
    train: DataLoader
    val: DataLoader
    train_sampler: Sampler
    classes: tuple[str, ...]
    in_chans: int
    # batch-level transform for in-memory uint8 data (None when the loader already transforms)
    gpu_transform: object = None
    eval_transform: object = None


def _sampler(dataset, cfg, env):
    if cfg.repeated_aug > 1:
        from timm.data.distributed_sampler import RepeatAugSampler

        return RepeatAugSampler(dataset, num_replicas=env.world_size, rank=env.rank, num_repeats=cfg.repeated_aug)
    return DistributedSampler(dataset, num_replicas=env.world_size, rank=env.rank, shuffle=True, seed=cfg.seed,
                              drop_last=True)


def build_vision_data(cfg, env) -> VisionData:
    """Loaders for ``cfg.dataset``: 'fashion-mnist' (default) or 'folder' (``cfg.data_dir``/{train,val})."""
    if cfg.dataset == "fashion-mnist":
        sets = {split: TensorImageDataset(*load_fashion_mnist(split, cfg.data_dir, cfg.download), CLASSES)
                for split in ("train", "test")}

        def transform(train: bool):
            return lambda x: augment_batch(x, size=cfg.img_size, train=train, mean=FMNIST_MEAN, std=FMNIST_STD,
                                           pad=cfg.shift, flip=cfg.hflip)

        train_set, val_set, classes, in_chans, collate = sets["train"], sets["test"], CLASSES, 1, None
        gpu_train, gpu_eval = transform(True), transform(False)
    elif cfg.dataset == "folder":
        if not cfg.data_dir:
            raise ValueError("--data-dir: required with --dataset folder (a tree with train/ and val/)")
        from timm.data import DEFAULT_CROP_PCT, create_transform

        train_tf = create_transform(cfg.img_size, is_training=True, auto_augment=cfg.aa or None,
                                    re_prob=cfg.reprob, interpolation="bicubic")
        eval_tf = create_transform(cfg.img_size, is_training=False, interpolation="bicubic",
                                   crop_pct=DEFAULT_CROP_PCT)
        train_set = build_image_folder(cfg.data_dir, "train", train_tf)
        val_set = build_image_folder(cfg.data_dir, "val", eval_tf)
        classes, in_chans, collate = tuple(train_set.classes), 3, collate_skipping
        gpu_train = gpu_eval = None
    else:
        raise ValueError(f"--dataset: expected 'fashion-mnist' or 'folder', got {cfg.dataset!r}")
    if len(train_set) == 0:
        raise ValueError(f"--data-dir: the training set of {cfg.dataset} is empty")
    sampler = _sampler(train_set, cfg, env)
    pin = env.device.type == "cuda"
    train = DataLoader(train_set, batch_size=cfg.batch_size, sampler=sampler, num_workers=cfg.workers,
                       drop_last=True, pin_memory=pin, collate_fn=collate, persistent_workers=cfg.workers > 0)
    val = DataLoader(val_set, batch_size=cfg.eval_batch_size or cfg.batch_size,
                     sampler=ShardSampler(len(val_set), env.rank, env.world_size), num_workers=cfg.workers,
                     pin_memory=pin, collate_fn=collate)
    return VisionData(train, val, sampler, classes, in_chans, gpu_train, gpu_eval)


def unpack_batch(batch):
    """(x, y) or (x, y, skipped) -> (x, y, skipped)."""
    if len(batch) == 3:
        return batch
    x, y = batch
    return x, y, 0


def prepare(x: torch.Tensor, y: torch.Tensor, device, transform, channels_last: bool):
    x = x.to(device, non_blocking=True)
    y = y.to(device, non_blocking=True)
    if transform is not None:
        x = transform(x)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    return x, y
