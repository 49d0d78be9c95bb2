"""The FPN segmenter's shapes and the mIoU from a confusion matrix."""

from __future__ import annotations

import pytest
import torch

from nalaformer.reproduce.scenes import FPNSegmenter, confusion_miou

from .conftest import TINY_VISION


def test_confusion_miou_known_values():
    confusion = torch.tensor([[3, 1, 0], [1, 1, 0], [0, 0, 0]])  # class 2 absent everywhere: left out
    assert confusion_miou(confusion) == pytest.approx((3 / 5 + 1 / 3) / 2)
    assert confusion_miou(torch.eye(4, dtype=torch.int64) * 7) == 1.0


@pytest.mark.parametrize("kind", ["nala", "softmax"])
def test_segmenter_logits_at_input_size_same_params_across_kinds(kind, one_thread):
    model = FPNSegmenter("nalaformer_xt", TINY_VISION, kind, dim=8)
    assert model(torch.randn(2, 1, 48, 40)).shape == (2, 11, 48, 40)
    reference = FPNSegmenter("nalaformer_xt", TINY_VISION, "relu_linear", dim=8)
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert abs(count(model) - count(reference)) <= 0.002 * count(reference)
