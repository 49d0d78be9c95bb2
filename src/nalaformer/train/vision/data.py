"""Train/eval loaders for the vision trainer from the dataset registry (``nalaformer.data.registry``)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.utils.data import DataLoader, DistributedSampler, Sampler

from ...data.registry import get_dataset

__all__ = ["VisionData", "build_vision_data", "ShardSampler", "unpack_batch", "prepare"]


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
    """Loaders for the registered dataset ``cfg.dataset`` (see ``nalaformer.data.registry``)."""
    spec = get_dataset(cfg.dataset)
    train_split, val_split = spec.load("train", cfg), spec.load("val", cfg)
    if len(train_split.dataset) == 0:
        raise ValueError(f"--data-dir: the training set of {cfg.dataset} is empty")
    sampler = _sampler(train_split.dataset, cfg, env)
    pin = env.device.type == "cuda"
    train = DataLoader(train_split.dataset, batch_size=cfg.batch_size, sampler=sampler, num_workers=cfg.workers,
                       drop_last=True, pin_memory=pin, collate_fn=train_split.collate,
                       persistent_workers=cfg.workers > 0)
    val = DataLoader(val_split.dataset, batch_size=cfg.eval_batch_size or cfg.batch_size,
                     sampler=ShardSampler(len(val_split.dataset), env.rank, env.world_size), num_workers=cfg.workers,
                     pin_memory=pin, collate_fn=val_split.collate)
    return VisionData(train, val, sampler, train_split.classes, spec.in_chans, train_split.batch_transform,
                      val_split.batch_transform)


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
