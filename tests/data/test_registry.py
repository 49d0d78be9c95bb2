"""The image-dataset registry: every dataset is one module; trainer, evaluator and predictor read it."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from nalaformer.data import registry
from nalaformer.train.core.distributed import DistEnv
from nalaformer.train.vision.config import VisionTrainConfig
from nalaformer.train.vision.data import build_vision_data
from nalaformer.train.vision.evaluate import _preprocess


def test_unknown_dataset_names_the_registered_ones():
    with pytest.raises(ValueError, match="--dataset: expected one of fashion-mnist, folder, got 'mnist'"):
        registry.get_dataset("mnist")


@pytest.mark.parametrize("name", registry.dataset_names())
def test_every_registered_dataset_declares_itself(name):
    spec = registry.get_dataset(name)
    assert spec.name == name and spec.in_chans in (1, 3) and callable(spec.load) and callable(spec.preprocess)
    x = spec.preprocess(Image.new("RGB", (40, 30), (200, 10, 10)), 32)
    assert x.shape == (1, spec.in_chans, 32, 32) and torch.isfinite(x).all()


def test_fashion_mnist_preprocess_is_its_eval_transform(fashion_dir):
    spec = registry.get_dataset("fashion-mnist")
    val = spec.load("val", VisionTrainConfig(data_dir=str(fashion_dir), img_size=32))
    image, _ = val.dataset[0]
    from_pil = spec.preprocess(Image.fromarray(image[0].numpy(), mode="L"), 32)
    torch.testing.assert_close(from_pil, val.batch_transform(image[None]))


def test_a_new_dataset_is_one_module(monkeypatch):
    monkeypatch.setitem(registry.DATASETS, "tiny-rgb", "tests.data.tiny_rgb")
    cfg = VisionTrainConfig(dataset="tiny-rgb", img_size=16, batch_size=4)
    data = build_vision_data(cfg, DistEnv())
    assert data.classes == ("dark", "light") and data.in_chans == 3
    x, y = next(iter(data.train))
    assert data.gpu_transform(x).shape == (4, 3, 16, 16) and y.shape == (4,)
    pixel = _preprocess(Image.new("RGB", (12, 12), (255, 0, 0)), {"dataset": "tiny-rgb", "img_size": 16})
    assert pixel.shape == (1, 3, 16, 16) and pixel[0, 0].min() == 1.0
