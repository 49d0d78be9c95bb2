"""The two sizes of the study. Every attention kind gets exactly the same settings (no per-kind tuning).

``QUICK``: CPU smoke scale (every cell, one seed, minutes). ``FULL``: every cell with three seeds on one H200
in about 24 minutes with ``--jobs 12`` (90 of its 91 cells in 23 min 43 s, docs/reproduction.md).

MQAR recipe (measured on CPU, docs/reproduction.md): Zoology's backbone gives every mixer a short causal
conv before it; here every kind alike gets ``short_conv_size=4`` on q, k and v (``short_conv_on="qkv"``).
Without it softmax did not learn recall in 800 steps at L=64 (accuracy 1/kv, any value of the context),
nor did relu_linear with the conv on v only; with it softmax reaches 1.0 in 500 steps of 32. The filler between
queries is 0 (``random_non_queries=False``, as in Zoology's configs): with a small vocabulary, random filler
repeats keys and plants false pairs.
"""

from __future__ import annotations

from ..train.vision.config import SMALL_NALAFORMER

__all__ = ["QUICK", "FULL", "size_settings"]

QUICK = {
    "fashion_mnist": dict(model="nalaformer_xt", model_kwargs=SMALL_NALAFORMER, img_size=32, epochs=1,
                          batch_size=64, max_train_batches=60, max_eval_batches=10, eval_batch_size=256),
    "python_docs_bytes": dict(model="nala-tiny", steps=40, batch_size=8, seq_len=128, eval_batches=8),
    "mqar": dict(hidden_size=64, layers=2, heads=2, vocab_size=128, steps=500, batch_size=32, lr=3e-3,
                 short_conv_size=4, short_conv_on="qkv", random_non_queries=False,
                 train_seq_lens=[64], train_kv=[4, 8], eval_seq_lens=[64, 128], eval_kv=[4, 8, 16],
                 eval_examples=128),
    "fashion_scenes": dict(model="nalaformer_xt", model_kwargs=SMALL_NALAFORMER, img_size=64, items=(1, 3),
                           train_scenes=512, test_scenes=32, steps=120, batch_size=8, lr=3e-3, fpn_dim=32),
    "scenes_speed": dict(model="nalaformer_xt", model_kwargs=SMALL_NALAFORMER, fpn_dim=32, speed_sizes=[64],
                         speed_batch=2, speed_iters=2, speed_repeats=1),
    "seeds": 1,
}

FULL = {
    "fashion_mnist": dict(model="nalaformer_xt", model_kwargs=SMALL_NALAFORMER, img_size=32, epochs=4,
                          batch_size=128, max_train_batches=None, max_eval_batches=None, eval_batch_size=1000),
    "python_docs_bytes": dict(model="nala-small", steps=600, batch_size=32, seq_len=512, eval_batches=0),
    "mqar": dict(hidden_size=128, layers=2, heads=2, vocab_size=1024, steps=2000, batch_size=64, lr=3e-3,
                 short_conv_size=4, short_conv_on="qkv", random_non_queries=False,
                 train_seq_lens=[64, 128, 256], train_kv=[4, 8, 16, 32, 64],
                 eval_seq_lens=[64, 128, 256, 512], eval_kv=[4, 8, 16, 32, 64], eval_examples=512),
    "fashion_scenes": dict(model="nalaformer_xt", model_kwargs=SMALL_NALAFORMER, img_size=224, items=(2, 6),
                           train_scenes=4000, test_scenes=500, steps=1000, batch_size=32, lr=2e-3, fpn_dim=64),
    "scenes_speed": dict(model="nalaformer_xt", model_kwargs=SMALL_NALAFORMER, fpn_dim=64, speed_sizes=[224, 448],
                         speed_batch=64, speed_iters=10, speed_repeats=3),
    "seeds": 3,
}


def size_settings(quick: bool) -> dict:
    return QUICK if quick else FULL
