"""The NaLaFormer block (spec §6) and its convolutional feed-forward network."""

from __future__ import annotations

import torch
from torch import nn

from .attention2d import create_attention2d
from .conv import DepthwiseConv2d

__all__ = ["ConvFFN", "NaLaBlock"]


def _depthwise3x3(dim: int, **dd) -> nn.Conv2d:
    return DepthwiseConv2d(dim, 3, **dd)


class ConvFFN(nn.Module):
    """Linear(C -> hidden) -> GELU -> h + DWConv3x3(h) -> Linear(hidden -> C). (B, H, W, C) -> (B, H, W, C)."""

    def __init__(self, dim: int, hidden_dim: int, act_layer: type[nn.Module] = nn.GELU, device=None, dtype=None):
        super().__init__()
        dd = {"device": device, "dtype": dtype}
        self.fc1 = nn.Linear(dim, hidden_dim, **dd)
        self.act = act_layer()
        self.dwconv = _depthwise3x3(hidden_dim, **dd)
        self.fc2 = nn.Linear(hidden_dim, dim, **dd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.act(self.fc1(x))
        h = h + self.dwconv(h.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        return self.fc2(h)


class NaLaBlock(nn.Module):
    """x += DWConv(x); x += γ1·DropPath(Attn(LN(x))); x += DWConv(x); x += γ2·DropPath(FFN(LN(x))).

    (B, C, H, W) -> (B, C, H, W). The attention and FFN branches work channels-last on the
    ``permute(0, 2, 3, 1)`` view, which costs nothing for channels_last tensors.

    Args:
        dim, num_heads: channels and attention heads (dim / num_heads divisible by 4).
        mlp_ratio: FFN hidden width = int(mlp_ratio * dim).
        attn_type: ``"nala"`` or ``"softmax"``; inhibit: NaLa's ``"relu"`` or ``"cosine"`` map.
        drop_path: stochastic-depth probability of both branches.
        ls_init_value: LayerScale start value, None for no LayerScale.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        attn_type: str = "nala",
        inhibit: str = "relu",
        drop_path: float = 0.0,
        ls_init_value: float | None = None,
        norm_eps: float = 1e-6,
        device=None,
        dtype=None,
    ):
        from timm.layers import DropPath, LayerScale  # the vision family needs timm; nalaformer.layers does not

        super().__init__()
        dd = {"device": device, "dtype": dtype}
        self.pos_conv1 = _depthwise3x3(dim, **dd)
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps, **dd)
        self.attn = create_attention2d(attn_type, dim, num_heads, inhibit=inhibit, **dd)
        self.ls1 = LayerScale(dim, ls_init_value, **dd) if ls_init_value is not None else nn.Identity()
        self.drop_path1 = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.pos_conv2 = _depthwise3x3(dim, **dd)
        self.norm2 = nn.LayerNorm(dim, eps=norm_eps, **dd)
        self.mlp = ConvFFN(dim, int(mlp_ratio * dim), **dd)
        self.ls2 = LayerScale(dim, ls_init_value, **dd) if ls_init_value is not None else nn.Identity()
        self.drop_path2 = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    @staticmethod
    def _branch(x: torch.Tensor, norm: nn.Module, mixer: nn.Module, scale: nn.Module, drop: nn.Module):
        """drop(scale(mixer(norm(x)))) computed channels-last, returned as (B, C, H, W)."""
        return drop(scale(mixer(norm(x.permute(0, 2, 3, 1))))).permute(0, 3, 1, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.pos_conv1(x)
        x = x + self._branch(x, self.norm1, self.attn, self.ls1, self.drop_path1)
        x = x + self.pos_conv2(x)
        return x + self._branch(x, self.norm2, self.mlp, self.ls2, self.drop_path2)
