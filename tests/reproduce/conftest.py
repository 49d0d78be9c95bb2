"""Tiny settings for reproduce's cells, and the synthetic Fashion-MNIST of the training tests."""

from __future__ import annotations

import pathlib

import pytest

from nalaformer.reproduce.cells import Cell
from nalaformer.train.vision.config import SMALL_NALAFORMER
from tests.train.conftest import fashion_dir  # noqa: F401  (a fixture)

TINY_VISION = dict(SMALL_NALAFORMER, embed_dims=[8, 16, 16, 32], num_heads=[1, 1, 1, 2], head_hidden_size=16)
TINY = {
    "fashion_mnist": dict(model="nalaformer_xt", model_kwargs=TINY_VISION, img_size=32, epochs=1, batch_size=32,
                          max_train_batches=2, max_eval_batches=1, eval_batch_size=64),
    "python_docs_bytes": dict(model="nala-tiny", steps=2, batch_size=2, seq_len=32, eval_batches=1, held_out=0.2),
    "mqar": dict(hidden_size=16, layers=1, heads=1, vocab_size=64, steps=3, batch_size=4, lr=1e-3,
                 short_conv_size=2, short_conv_on="qkv", random_non_queries=False,
                 train_seq_lens=[32], train_kv=[2, 4], eval_seq_lens=[32, 64], eval_kv=[2, 16], eval_examples=8),
    "fashion_scenes": dict(model="nalaformer_xt", model_kwargs=TINY_VISION, img_size=32, items=(1, 2),
                           train_scenes=8, test_scenes=4, steps=2, batch_size=4, lr=1e-3, fpn_dim=8),
    "scenes_speed": dict(model="nalaformer_xt", model_kwargs=TINY_VISION, fpn_dim=8, speed_sizes=[32, 64],
                         speed_batch=1, speed_iters=1, speed_repeats=2),
}


@pytest.fixture
def corpus(tmp_path) -> pathlib.Path:
    """A few small text documents (the LM trainer's corpus format: a directory of files)."""
    root = tmp_path / "corpus"
    root.mkdir()
    for i in range(6):
        (root / f"doc{i}.txt").write_text(f"def f{i}(x):\n    return x * {i} + 1\n" * 20)
    return root


@pytest.fixture
def make_cell(tmp_path, fashion_dir, corpus):  # noqa: F811
    def make(task: str, attention: str = "nala", seed: int = 0) -> Cell:
        settings = dict(TINY[task])
        if task in ("fashion_mnist", "fashion_scenes"):
            settings["data_dir"] = str(fashion_dir)
        if task == "python_docs_bytes":
            settings["corpus"] = str(corpus)
        return Cell(task, attention, seed, "quick", settings, "cpu", tmp_path / "cells" / f"{task}-{attention}")
    return make
