"""What the run's machine is and how long the run will take: the CPU features torch's kernels use, and a
short timed probe of the training step, printed before training so that a slow machine explains itself."""

from __future__ import annotations

import copy
import os
import pathlib
import platform
import time
from collections.abc import Callable

import torch

__all__ = ["cpu_features", "cpu_summary", "estimate_run_seconds", "probe_step_seconds"]

# the environment variables that lower the instruction set torch's CPU kernels use (docs/benchmarks.md)
ISA_OVERRIDES = ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "MKL_ENABLE_INSTRUCTIONS")


def _cpu_name() -> str:
    cpuinfo = pathlib.Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text(errors="replace").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine() or "unknown CPU"


def cpu_features() -> dict:
    """The CPU as torch sees it: name, threads, the vector capability aten's kernels dispatch to
    (``torch.backends.cpu.get_cpu_capability()``: DEFAULT, AVX2, AVX512, ...) and the hardware's AVX2,
    AVX-512, AVX512-BF16 and AMX support (torch.cpu's probes; False where this torch lacks a probe)."""
    def probe(name: str) -> bool:
        fn = getattr(torch.cpu, name, None)
        return bool(fn()) if callable(fn) else False

    return {"name": _cpu_name(), "threads": torch.get_num_threads(), "cores": os.cpu_count(),
            "capability": torch.backends.cpu.get_cpu_capability(), "avx2": probe("_is_avx2_supported"),
            "avx512": probe("_is_avx512_supported"), "avx512_bf16": probe("_is_avx512_bf16_supported"),
            "amx": probe("_is_amx_tile_supported"),
            "overrides": {k: os.environ[k] for k in ISA_OVERRIDES if os.environ.get(k)}}


def cpu_summary(features: dict | None = None) -> str:
    """One line, e.g. ``cpu: AMD EPYC, 2 threads (2 cores); torch kernels AVX2; hardware AVX2 yes, AVX-512 no,
    AVX512-BF16 no, AMX no``."""
    f = features or cpu_features()
    yes = {True: "yes", False: "no"}
    threads = f"{f['threads']} thread" + ("s" if f["threads"] != 1 else "")
    line = (f"cpu: {f['name']}, {threads} ({f['cores']} cores); torch kernels {f['capability']}; "
            f"hardware AVX2 {yes[f['avx2']]}, AVX-512 {yes[f['avx512']]}, AVX512-BF16 {yes[f['avx512_bf16']]}, "
            f"AMX {yes[f['amx']]}")
    if f["overrides"]:
        line += " (lowered by " + ", ".join(f"{k}={v}" for k, v in f["overrides"].items()) + ")"
    return line


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def probe_step_seconds(model: torch.nn.Module, batch: torch.Tensor, loss_fn: Callable, num_classes: int,
                       amp_dtype: torch.dtype | None = None, steps: int = 2) -> tuple[float, float]:
    """Median seconds of one training forward+backward and of one eval forward on ``batch`` (B, C, H, W).

    Runs on a copy of ``model`` (its weights, BatchNorm statistics and gradients stay as they were) and under
    ``torch.random.fork_rng`` (the run's random stream is unchanged), after one untimed warm-up step.
    """
    if steps < 1:
        raise ValueError(f"steps: expected >= 1, got {steps}")
    device = batch.device
    probe = copy.deepcopy(model)
    train_times, eval_times = [], []
    devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices, device_type=device.type):
        target = torch.randint(0, num_classes, (batch.shape[0],), device=device)
        for i in range(steps + 1):
            probe.train()
            _sync(device)
            start = time.perf_counter()
            with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                loss = loss_fn(probe(batch), target)
            loss.backward()
            _sync(device)
            mid = time.perf_counter()
            probe.eval()
            with torch.no_grad(), torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                probe(batch)
            _sync(device)
            if i:  # the first step warms up (allocations, oneDNN primitive creation)
                train_times.append(mid - start)
                eval_times.append(time.perf_counter() - mid)
    return sorted(train_times)[len(train_times) // 2], sorted(eval_times)[len(eval_times) // 2]


def estimate_run_seconds(train_img_per_s: float, eval_img_per_s: float, train_images: int, eval_images: int,
                         epochs: int) -> float:
    """Seconds for ``epochs`` epochs of ``train_images`` trained and ``eval_images`` evaluated images at the
    given rates (compute only; the data pipeline and checkpoints add a few percent)."""
    if min(train_img_per_s, eval_img_per_s) <= 0:
        raise ValueError(f"train_img_per_s, eval_img_per_s: expected > 0, got {train_img_per_s}, {eval_img_per_s}")
    return epochs * (train_images / train_img_per_s + eval_images / eval_img_per_s)
