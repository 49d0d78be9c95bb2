"""``relu_linear`` and ``elu_linear``: normalised linear attention with a fixed element-wise feature map.

relu_linear: phi(x) = relu(x).   elu_linear: phi(x) = elu(x) + 1 (Katharopoulos et al., ICML 2020).
"""

from __future__ import annotations

import torch.nn.functional as F

from .base import LinearAttentionCore, as_compute

__all__ = ["ReluLinearCore", "EluLinearCore"]


class ReluLinearCore(LinearAttentionCore):
    """o_i = sum_j relu(q_i).relu(k_j) v_j / sum_j relu(q_i).relu(k_j) (mean-normalised, + eps)."""

    name = "relu_linear"

    @staticmethod
    def feature_maps(q, k, **params):
        return F.relu(as_compute(q)).unsqueeze(-2), F.relu(as_compute(k))


class EluLinearCore(LinearAttentionCore):
    """phi(x) = elu(x) + 1 > 0: every pair interacts, no query row is ever empty."""

    name = "elu_linear"

    @staticmethod
    def feature_maps(q, k, **params):
        return (F.elu(as_compute(q)) + 1).unsqueeze(-2), F.elu(as_compute(k)) + 1
