"""The NaLaFormer classifier head (spec §6)."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["NaLaClassifierHead", "POOL_TYPES"]

POOL_TYPES = ("avg", "")


def _check_pool(pool_type: str) -> str:
    if pool_type not in POOL_TYPES:
        raise ValueError(f"global_pool: expected 'avg' or '' (no pooling), got {pool_type!r}")
    return pool_type


class NaLaClassifierHead(nn.Module):
    """Linear(C -> hidden) -> BatchNorm -> SiLU -> global average pool -> Dropout -> Linear(hidden -> classes).

    Input (B, C, H, W). Output (B, classes); with ``pool_type=''`` the map stays spatial: (B, classes, H, W).
    ``hidden_size=None`` (or after ``reset(reset_other=True)``) drops the projection, BN and SiLU.
    ``num_classes=0`` drops the classifier: the output is the pre-logits features.
    """

    def __init__(self, in_features: int, num_classes: int = 1000, hidden_size: int | None = 1024,
                 pool_type: str = "avg", drop_rate: float = 0.0, device=None, dtype=None):
        super().__init__()
        dd = {"device": device, "dtype": dtype}
        self.in_features = in_features
        self.pool_type = _check_pool(pool_type)
        if hidden_size:
            self.proj = nn.Linear(in_features, hidden_size, **dd)
            self.norm = nn.BatchNorm2d(hidden_size, **dd)
            self.act = nn.SiLU()
            self.num_features = hidden_size
        else:
            self.proj = self.norm = self.act = None
            self.num_features = in_features
        self.drop = nn.Dropout(drop_rate)
        self.fc = self._classifier(num_classes, **dd)

    def _classifier(self, num_classes: int, **dd) -> nn.Module:
        return nn.Linear(self.num_features, num_classes, **dd) if num_classes > 0 else nn.Identity()

    def reset(self, num_classes: int, pool_type: str | None = None, reset_other: bool = False,
              in_features: int | None = None, device=None, dtype=None) -> None:
        """New classifier for ``num_classes`` (0 = none); ``reset_other`` also removes projection/BN/SiLU;
        ``in_features`` re-sizes the input (only without the projection)."""
        dd = {"device": device, "dtype": dtype}
        if pool_type is not None:
            self.pool_type = _check_pool(pool_type)
        if reset_other:
            self.proj = self.norm = self.act = None
            self.num_features = self.in_features
        if in_features is not None and in_features != self.in_features:
            if self.proj is not None:
                raise ValueError("in_features: the input width can only change once the projection is removed "
                                 "(reset_other=True)")
            self.in_features = self.num_features = in_features
        self.fc = self._classifier(num_classes, **dd)
        self.fc.train(self.training)

    def forward(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        if self.proj is not None:
            x = self.act(self.norm(self.proj(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)))
        pooled = self.pool_type == "avg"
        if pooled:
            x = x.mean((2, 3))
        x = self.drop(x)
        if pre_logits:
            return x
        return self.fc(x) if pooled else self.fc(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
