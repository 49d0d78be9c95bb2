"""``fashion_scenes``: dense prediction in miniature. The vision backbone through timm's ``features_only``,
a small FPN-style head, per-pixel cross-entropy over 11 classes; mIoU on test scenes. ``scenes_speed``: forward
throughput and peak memory of the same segmenter per kind at the sizes of ``speed_sizes``."""

from __future__ import annotations

import statistics
import time

import torch
import torch.nn.functional as F
from torch import nn

from ..data.fashion_scenes import NUM_SEG_CLASSES, FashionScenes, SceneSpec
from ..train.core.loop import fit_steps
from ..train.core.precision import autocast, resolve_amp
from ..train.core.seeding import seed_everything

__all__ = ["FPNSegmenter", "confusion_miou", "run_fashion_scenes", "run_scenes_speed"]


class FPNSegmenter(nn.Module):
    """Backbone features (strides 4..32) -> FPN top-down sum at ``dim`` channels -> logits at the input size.

    x (B, in_chans, H, W) -> (B, num_classes, H, W)."""

    def __init__(self, model: str, model_kwargs: dict, attention: str, num_classes: int = NUM_SEG_CLASSES,
                 dim: int = 64, in_chans: int = 1):
        import timm

        import nalaformer  # noqa: F401  (registers the NaLaFormer family with timm)

        super().__init__()
        kwargs = {k: v for k, v in model_kwargs.items() if k != "head_hidden_size"}  # no classifier head here
        self.backbone = timm.create_model(model, features_only=True, in_chans=in_chans, attn_types=attention,
                                          **kwargs)
        self.lateral = nn.ModuleList(nn.Conv2d(c, dim, 1) for c in self.backbone.feature_info.channels())
        self.smooth = nn.Sequential(nn.Conv2d(dim, dim, 3, padding=1), nn.BatchNorm2d(dim), nn.GELU())
        self.classify = nn.Conv2d(dim, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.backbone(x)
        top = self.lateral[-1](features[-1])
        for lateral, feature in zip(reversed(self.lateral[:-1]), reversed(features[:-1])):
            top = lateral(feature) + F.interpolate(top, size=feature.shape[-2:], mode="bilinear", align_corners=False)
        return F.interpolate(self.classify(self.smooth(top)), size=x.shape[-2:], mode="bilinear", align_corners=False)


def confusion_miou(confusion: torch.Tensor) -> float:
    """Mean IoU over the classes that occur in labels or predictions: confusion (C, C), rows = truth."""
    confusion = confusion.double()
    inter = confusion.diag()
    union = confusion.sum(0) + confusion.sum(1) - inter
    present = union > 0
    return (inter[present] / union[present]).mean().item() if present.any() else float("nan")


def _scenes(split: str, count: int, spec: SceneSpec, seed: int, data_dir) -> FashionScenes:
    from ..data.fashion_mnist import load_fashion_mnist

    items, classes = load_fashion_mnist(split, data_dir)
    return FashionScenes(items, classes, count, spec, seed=seed)


def _endless(loader):
    while True:
        yield from loader


@torch.no_grad()
def _miou(model, loader, device, amp_dtype) -> float:
    model.eval()
    confusion = torch.zeros(NUM_SEG_CLASSES, NUM_SEG_CLASSES, dtype=torch.int64)
    for images, labels in loader:
        with autocast(device, amp_dtype):
            pred = model(images.to(device)).argmax(1).cpu()
        confusion += torch.bincount(labels.flatten() * NUM_SEG_CLASSES + pred.flatten(),
                                    minlength=NUM_SEG_CLASSES ** 2).view(NUM_SEG_CLASSES, NUM_SEG_CLASSES)
    return confusion_miou(confusion)


@torch.no_grad()
def speed(model, size: int, batch: int, iters: int, device, amp_dtype) -> dict:
    """Forward images/s and peak memory (MiB, CUDA only; None on CPU) at ``size`` x ``size``."""
    model.eval()
    x = torch.randn(batch, 1, size, size, device=device)
    with autocast(device, amp_dtype):
        model(x)  # warm-up (kernel selection, caches)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    started = time.perf_counter()
    for _ in range(iters):
        with autocast(device, amp_dtype):
            model(x)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - started
    memory = torch.cuda.max_memory_allocated(device) / 2 ** 20 if device.type == "cuda" else None
    return {"img_per_s": batch * iters / seconds, "peak_mib": memory}


def run_fashion_scenes(cell) -> list[dict]:
    s = cell.settings
    seed_everything(cell.seed)
    device = torch.device(cell.device)
    size = s["img_size"]
    spec = SceneSpec(size=size, items=tuple(s["items"]), item_size=(max(size * 3 // 14, 8), size // 2))
    train = _scenes("train", s["train_scenes"], spec, cell.seed, s.get("data_dir"))
    test = _scenes("test", s["test_scenes"], spec, 99_991, s.get("data_dir"))  # the same test scenes every seed
    workers = s.get("workers", 0)
    loader = torch.utils.data.DataLoader(train, batch_size=s["batch_size"], shuffle=True, drop_last=True,
                                         num_workers=workers, generator=torch.Generator().manual_seed(cell.seed),
                                         persistent_workers=workers > 0)
    model = FPNSegmenter(s["model"], s["model_kwargs"], cell.attention, dim=s["fpn_dim"]).to(device)
    params = sum(p.numel() for p in model.parameters())
    amp_dtype, scaler = resolve_amp("auto", device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=s["lr"], weight_decay=0.05)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=s["lr"], total_steps=s["steps"], pct_start=0.1)

    def loss_fn(batch):
        images, labels = batch
        return F.cross_entropy(model(images.to(device)).float(), labels.to(device))

    started = time.perf_counter()
    fit_steps(model, optimizer, _endless(loader), loss_fn, s["steps"], device=device, amp_dtype=amp_dtype,
              scaler=scaler, clip=1.0, scheduler=schedule, desc=f"scenes {cell.attention}")
    wall = time.perf_counter() - started
    test_loader = torch.utils.data.DataLoader(test, batch_size=s["batch_size"], num_workers=workers)
    extra = dict(params=params, steps=s["steps"], img_size=size, wall_s=wall)
    return [cell.row("miou", _miou(model, test_loader, device, amp_dtype), **extra)]


def run_scenes_speed(cell) -> list[dict]:
    """Forward images/s and CUDA peak memory of the (untrained: speed does not depend on the weights) segmenter at
    each of ``speed_sizes``; the median of ``speed_repeats`` timings. Timed cells: the study runs them alone."""
    s = cell.settings
    seed_everything(cell.seed)
    device = torch.device(cell.device)
    model = FPNSegmenter(s["model"], s["model_kwargs"], cell.attention, dim=s["fpn_dim"]).to(device)
    params = sum(p.numel() for p in model.parameters())
    amp_dtype, _ = resolve_amp("auto", device)
    rows, started = [], time.perf_counter()
    for size in s["speed_sizes"]:
        runs = [speed(model, size, s["speed_batch"], s["speed_iters"], device, amp_dtype)
                for _ in range(s.get("speed_repeats", 3))]
        extra = dict(params=params, img_size=size, batch_size=s["speed_batch"], iters=s["speed_iters"],
                     repeats=len(runs), wall_s=time.perf_counter() - started)
        rows.append(cell.row("forward_img_per_s", statistics.median(r["img_per_s"] for r in runs), **extra))
        if runs[0]["peak_mib"] is not None:
            rows.append(cell.row("forward_peak_mib", max(r["peak_mib"] for r in runs), **extra))
    return rows
