"""Multi-query associative recall (MQAR; Arora et al., "Zoology", 2023): synthetic recall sequences.

A sequence opens with ``num_kv_pairs`` key-value pairs, then repeats the keys at random later even positions
(gaps drawn from a power law, so most queries come soon after the context); the model must emit each key's
value right after the key reappears. Everything else is filler: random tokens (or 0)::

    context:  k1 v1 k2 v2 ... kK vK | query region: .. k2 .. .. k1 .. kK ..
    labels:   -100 everywhere except at each repeated key, where the label is its value

Keys come from ``[1, vocab/2)``, values from ``[vocab/2, vocab)``, distinct within a sequence. Generation is
a pure function of ``seed`` (torch's CPU generator), vectorised and chunked so 100K sequences take seconds.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["IGNORE_INDEX", "MQARSpec", "make_mqar", "mqar_accuracy"]

IGNORE_INDEX = -100
_CHUNK = 4096  # sequences generated at once (bounds the (chunk, vocab/2) random-key buffer)


@dataclass(frozen=True)
class MQARSpec:
    """One MQAR setting. ``power_a`` shapes the query-gap law p(g) ~ g^(power_a - 1), g = 1..space."""

    seq_len: int = 64
    num_kv_pairs: int = 8
    vocab_size: int = 8192
    power_a: float = 0.01
    random_non_queries: bool = True

    def __post_init__(self):
        for name in ("seq_len", "num_kv_pairs", "vocab_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}: expected a positive int, got {value!r}")
        if self.seq_len % 2:
            raise ValueError(f"seq_len: expected an even length (keys and values alternate), got {self.seq_len}")
        if 4 * self.num_kv_pairs > self.seq_len:
            raise ValueError(f"num_kv_pairs: {self.num_kv_pairs} pairs need seq_len >= {4 * self.num_kv_pairs} "
                             f"(context plus one query slot each), got seq_len={self.seq_len}")
        if self.vocab_size // 2 - 1 < self.num_kv_pairs:
            raise ValueError(f"vocab_size: {self.vocab_size} leaves {self.vocab_size // 2 - 1} keys, fewer than "
                             f"num_kv_pairs={self.num_kv_pairs}")
        if not (isinstance(self.power_a, (int, float)) and 0 < self.power_a <= 1):
            raise ValueError(f"power_a: expected a number in (0, 1], got {self.power_a!r}")


def _distinct(count: int, low: int, high: int, k: int, generator: torch.Generator) -> torch.Tensor:
    """(count, k) int64: per row, k distinct values of [low, high), uniformly (random-key sort)."""
    return torch.rand(count, high - low, generator=generator).argsort(dim=1)[:, :k] + low


def _chunk(spec: MQARSpec, count: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    k, length, vocab = spec.num_kv_pairs, spec.seq_len, spec.vocab_size
    context = 2 * k
    keys = _distinct(count, 1, vocab // 2, k, generator)
    values = _distinct(count, vocab // 2, vocab, k, generator)
    space = (length - context) // 2  # query slots: even offsets of the region after the context
    weights = spec.power_a * torch.arange(1, space + 1, dtype=torch.float64) ** (spec.power_a - 1)
    slots = torch.multinomial(weights.expand(count, space), k, replacement=False, generator=generator)

    tokens = torch.zeros(count, length, dtype=torch.int64)
    tokens[:, 0:context:2], tokens[:, 1:context:2] = keys, values
    query_pos = context + 2 * slots
    tokens.scatter_(1, query_pos, keys)
    labels = torch.full((count, length), IGNORE_INDEX, dtype=torch.int64)
    labels.scatter_(1, query_pos, values)  # predicted at the query position: the next token is its value
    if spec.random_non_queries:
        filler = torch.randint(vocab, (count, length), generator=generator)
        tokens = torch.where(tokens == 0, filler, tokens)
    return tokens, labels


def make_mqar(spec: MQARSpec, num_examples: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """``(inputs, labels)``, each (num_examples, seq_len) int64; labels are IGNORE_INDEX off the queries.

    Position t's label is the token the model must predict after reading inputs[:, :t+1] (the usual
    causal-LM shift is already applied): a query key at t has its value as label.
    """
    if isinstance(num_examples, bool) or not isinstance(num_examples, int) or num_examples < 1:
        raise ValueError(f"num_examples: expected a positive int, got {num_examples!r}")
    generator = torch.Generator().manual_seed(int(seed))
    parts = [_chunk(spec, min(_CHUNK, num_examples - start), generator) for start in range(0, num_examples, _CHUNK)]
    return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])


def mqar_accuracy(logits: torch.Tensor, labels: torch.Tensor) -> tuple[int, int]:
    """(correct, total) over the labelled positions: logits (..., L, V), labels (..., L)."""
    mask = labels != IGNORE_INDEX
    correct = (logits.argmax(dim=-1) == labels) & mask
    return int(correct.sum()), int(mask.sum())
