"""Attention rows made explicit, to measure how spiky they are.

Linear attention never forms its N x N matrix; for analysis we form it on small inputs, for any kind
of the registry (:data:`nalaformer.layers.KINDS`): row i holds the weights query i gives every key.
"""

from __future__ import annotations

import torch

from ..layers.kinds import get_kind

__all__ = ["attention_weights", "attention_entropy", "row_entropy", "entropy_vs_query_norm"]

KINDS = ("nala", "relu_linear", "softmax")  # the demo's comparison


def attention_weights(q: torch.Tensor, k: torch.Tensor, kind: str = "nala", *, causal: bool = False,
                      **params) -> torch.Tensor:
    """Explicit attention rows of ``kind``: q (..., Nq, D), k (..., Nk, D) -> (..., Nq, Nk).

    Rows sum to 1 (the linear kinds: den / (den + eps), so 1 up to their epsilon, and 0 for a query
    with no feature mass). ``polarity`` returns its same-sign and opposite-sign maps stacked on a new
    dim -3: (..., 2, Nq, Nk). ``params``: the kind's parameters (NaLa: inhibit, lam, tau, alpha, eps,
    norm_eps; focused: power, scale; polarity: power, scale; softmax: scale; linear kinds: eps).
    ``causal`` masks keys after each query (Nq == Nk). Unknown kinds raise ValueError.
    """
    return get_kind(kind).rows(q, k, causal=causal, **params)


def attention_entropy(weights: torch.Tensor) -> torch.Tensor:
    """Shannon entropy (nats) of each attention row: (..., Nk) -> (...)."""
    return -(weights * weights.clamp_min(1e-30).log()).sum(-1)


def row_entropy(weights: torch.Tensor) -> torch.Tensor:
    """Entropy of rows renormalised to sum 1 (rows of the linear kinds sum to 1 only up to eps):
    (..., Nk) -> (...); an all-zero row has entropy 0."""
    total = weights.sum(-1, keepdim=True)
    return attention_entropy(weights / total.clamp_min(1e-300))


def entropy_vs_query_norm(norms, *, num_keys: int = 256, head_dim: int = 32, seed: int = 0,
                          kinds=KINDS) -> dict[str, list[float]]:
    """Mean row entropy of one random query direction scaled to each norm, against random keys."""
    g = torch.Generator().manual_seed(seed)
    k = torch.randn(num_keys, head_dim, generator=g, dtype=torch.float64)
    u = torch.randn(64, head_dim, generator=g, dtype=torch.float64)
    u = u / u.norm(dim=-1, keepdim=True)
    return {kind: [attention_entropy(attention_weights(u * n, k, kind)).mean().item() for n in norms]
            for kind in kinds}
