"""torch.export is the tested export contract of every NaLaFormer variant (TorchScript is not supported).

Each registered ``nalaformer_*`` model is exported with a dynamic batch dimension, the exported program
runs, and its outputs equal the eager model's (the op's PyTorch path on CPU).
"""

from __future__ import annotations

import pytest
import timm
import torch

import nalaformer.models.vision.nalaformer  # noqa: F401  registers the timm models

VARIANTS = sorted(timm.list_models("nalaformer_*"))
LARGE = {"nalaformer_b", "nalaformer_l"}  # the same blocks as the others, deeper and wider: slower to trace


@pytest.fixture(autouse=True)
def _single_thread(one_thread):
    yield


def test_every_variant_is_covered():
    assert {"nalaformer_xt", "nalaformer_t", "nalaformer_s", "nalaformer_b", "nalaformer_l",
            "nalaformer_t_paper"} <= set(VARIANTS)


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n in LARGE else n for n in VARIANTS])
def test_export_runs_and_matches_eager(name):
    torch.manual_seed(0)
    model = timm.create_model(name, num_classes=7).eval()
    x = torch.randn(2, 3, 64, 64)
    batch = torch.export.Dim("batch", min=1, max=64)
    program = torch.export.export(model, (x,), dynamic_shapes=({0: batch},))
    exported = program.module()
    with torch.no_grad():
        for inputs in (x, torch.randn(3, 3, 64, 64)):  # the traced batch size and another one
            want = model(inputs)
            got = exported(inputs)
            assert got.shape == want.shape == (inputs.shape[0], 7)
            assert torch.isfinite(got).all()
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
