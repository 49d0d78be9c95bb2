"""Shared test helpers: float64 comparisons and seeded random inputs."""

from __future__ import annotations

import os
import pathlib

import pytest
import torch

# Triton fixes compiled vs interpreted for its own library functions (tl.minimum, tl.sigmoid, ...) when it
# is first imported, and other tests import it early (torch._dynamo does, through timm/torchvision). Without
# CUDA the kernel tests run in the interpreter, so the whole test process must import Triton in that mode.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

# Under pytest-xdist (`make test` runs one worker per core) each worker gets its share of the cores; tests
# that start subprocesses pass it on through OMP_NUM_THREADS. Oversubscribed OpenMP threads spin and slow
# everything down several times on a 2-core machine.
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
if _WORKERS > 1:
    _SHARE = max(1, (os.cpu_count() or 1) // _WORKERS)
    os.environ["OMP_NUM_THREADS"] = str(_SHARE)
    torch.set_num_threads(_SHARE)

GOLDEN_DIR = pathlib.Path(__file__).resolve().parents[1].parent / "shared" / "golden"


def rel_err(actual: torch.Tensor, expected: torch.Tensor) -> float:
    """max |a - e| / max |e| in float64; NaN anywhere in ``actual`` gives inf."""
    actual, expected = actual.double(), expected.double()
    if not torch.isfinite(actual).all():
        return float("inf")
    return ((actual - expected).abs().max() / expected.abs().max().clamp_min(1e-30)).item()


@pytest.fixture
def one_thread():
    """Tiny models run fastest single-threaded (and suffer least from a busy machine)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def golden_path() -> pathlib.Path:
    path = GOLDEN_DIR / "official_a.safetensors"
    if not path.exists():
        pytest.skip(f"golden tensors not found at {path}")
    return path
