"""Attention rows made explicit, to measure how spiky they are.

Linear attention never forms its N x N matrix; for analysis we form it on small inputs:
row i is w_ij = phi(q_i).phi(k_j) / sum_j phi(q_i).phi(k_j) (NaLa, relu-kernel linear
attention) or softmax(q_i.k_j / sqrt(d)).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..ops.feature_maps import nala_feature_maps

__all__ = ["attention_weights", "attention_entropy", "entropy_vs_query_norm"]

KINDS = ("nala", "relu_linear", "softmax")


def attention_weights(q: torch.Tensor, k: torch.Tensor, kind: str = "nala", **nala_kwargs) -> torch.Tensor:
    """Rows of attention, (..., Nq, D) x (..., Nk, D) -> (..., Nq, Nk), each row summing to 1."""
    if kind == "nala":
        phq, phk = nala_feature_maps(q, k, **nala_kwargs)
        scores = phq @ phk.transpose(-1, -2)
    elif kind == "relu_linear":
        scores = F.relu(q.double()) @ F.relu(k.double()).transpose(-1, -2)
    elif kind == "softmax":
        return torch.softmax(q.double() @ k.double().transpose(-1, -2) / q.shape[-1] ** 0.5, dim=-1)
    else:
        raise ValueError(f"kind: expected one of {KINDS}, got {kind!r}")
    return scores / scores.sum(-1, keepdim=True).clamp_min(1e-30)


def attention_entropy(weights: torch.Tensor) -> torch.Tensor:
    """Shannon entropy (nats) of each attention row: (..., Nk) -> (...)."""
    return -(weights * weights.clamp_min(1e-30).log()).sum(-1)


def entropy_vs_query_norm(norms, *, num_keys: int = 256, head_dim: int = 32, seed: int = 0,
                          kinds=KINDS) -> dict[str, list[float]]:
    """Mean row entropy of one random query direction scaled to each norm, against random keys."""
    g = torch.Generator().manual_seed(seed)
    k = torch.randn(num_keys, head_dim, generator=g, dtype=torch.float64)
    u = torch.randn(64, head_dim, generator=g, dtype=torch.float64)
    u = u / u.norm(dim=-1, keepdim=True)
    return {kind: [attention_entropy(attention_weights(u * n, k, kind)).mean().item() for n in norms]
            for kind in kinds}
