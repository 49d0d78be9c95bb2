"""A small autotuner: a handful of configs per kernel, keyed on (kernel, D, Dv, dtype), cached.

The first call of a shape class times each candidate once with ``triton.testing.do_bench`` (medians,
a few milliseconds each) and keeps the fastest, in memory and in a JSON file
(``$NALAFORMER_TRITON_CACHE_DIR`` or ``~/.cache/nalaformer``; set it to an empty string to keep the
results in memory only). ``NALAFORMER_TRITON_AUTOTUNE=0`` skips timing and takes the first candidate.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
import time

import torch

__all__ = ["choose", "timings"]

_MEM: dict[str, dict] = {}
_DISK: dict[str, dict] | None = None
_TIMINGS: list[dict] = []  # what the tuner measured in this process (for the benchmark report)


def _cache_file() -> str | None:
    root = os.environ.get("NALAFORMER_TRITON_CACHE_DIR")
    if root is None:
        root = os.path.join(os.path.expanduser("~"), ".cache", "nalaformer")
    return os.path.join(root, "triton_autotune.json") if root else None


def _disk() -> dict:
    global _DISK
    if _DISK is None:
        _DISK = {}
        path = _cache_file()
        if path and os.path.exists(path):
            try:
                with open(path) as f:
                    _DISK = json.load(f)
            except (OSError, ValueError):
                _DISK = {}
    return _DISK


def _save(full: str, cfg: dict) -> None:
    path = _cache_file()
    if not path:
        return
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        data = dict(_disk())
        if os.path.exists(path):  # merge what other processes wrote meanwhile
            try:
                with open(path) as f:
                    data.update(json.load(f))
            except (OSError, ValueError):
                pass
        data[full] = cfg
        fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), suffix=".tmp")
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=1, sort_keys=True)
        os.replace(tmp, path)
        _disk()[full] = cfg
    except OSError:
        pass


def _tag(device: torch.device) -> str:
    import triton

    return f"{torch.cuda.get_device_name(device)}|triton-{triton.__version__}"


def timings() -> list[dict]:
    return list(_TIMINGS)


def choose(name: str, key: tuple, candidates: list[dict], run, device: torch.device) -> tuple[dict, bool]:
    """Return ``(config, tuned)``; ``tuned`` means ``run`` was called (outputs may hold sums of trials)."""
    if len(candidates) == 1 or os.environ.get("NALAFORMER_TRITON_AUTOTUNE", "1") == "0" or device.type != "cuda":
        return candidates[0], False
    full = f"{_tag(device)}|{name}|{key}"
    hit = _MEM.get(full) or _disk().get(full)
    if hit in candidates:
        _MEM[full] = hit
        return hit, False
    from triton.testing import do_bench

    best, best_t, t0 = None, math.inf, time.perf_counter()
    for cfg in candidates:
        try:
            ms = do_bench(lambda cfg=cfg: run(cfg), warmup=2, rep=10, return_mode="median")
        except Exception as err:  # noqa: BLE001  (out of resources etc.: skip this config)
            _TIMINGS.append({"kernel": name, "key": str(key), "config": cfg, "error": type(err).__name__})
            continue
        _TIMINGS.append({"kernel": name, "key": str(key), "config": cfg, "ms": ms})
        if ms < best_t:
            best, best_t = cfg, ms
    if best is None:  # nothing ran: let the caller run the first config and raise its error
        return candidates[0], False
    _TIMINGS.append({"kernel": name, "key": str(key), "best": best, "tune_s": time.perf_counter() - t0})
    _MEM[full] = best
    _save(full, best)
    return best, True
