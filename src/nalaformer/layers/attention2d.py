"""Token mixers of the NaLaFormer vision blocks (spec §5): NaLa attention and its softmax twin.

Both share one frame and differ only in how the heads mix tokens::

    [q, k, v, g] = Linear(C -> 4C)(x)            x: (B, H, W, C), channels last
    y = LayerNorm(mix(q, k, v) + lepe(v)) * SiLU(g)
    out = Linear(C -> C)(y)                      (B, H, W, C)

``lepe`` is a depthwise 5x5 convolution of v laid out as an image. The projection output
(B, H, W, 4C) splits into q, k, v, g views and reshapes to (B, N, heads, head_dim) without copies:
that is the layout :func:`nalaformer.ops.nala_attention` takes. Only the NaLa core runs in float32
(the op does that); the projections, lepe, norm and gate follow the autocast / parameter dtype.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..ops import apply_rotary, nala_attention
from ..ops.feature_maps import INHIBIT_MODES
from .rotary2d import rotary_tables_2d

__all__ = ["GatedLepeAttention2d", "NaLaAttention2d", "SoftmaxAttention2d", "ATTENTION_TYPES", "create_attention2d"]


class GatedLepeAttention2d(nn.Module):
    """Shared frame: qkvg projection, lepe, LayerNorm, SiLU gate and output projection.

    Subclasses implement :meth:`mix`: q, k, v (B, N, heads, head_dim) and the (H, W) grid ->
    (B, N, heads, head_dim). Input and output: (B, H, W, C).
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        *,
        lepe_kernel_size: int = 5,
        norm_eps: float = 1e-5,
        device=None,
        dtype=None,
    ):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"num_heads: expected a divisor of dim={dim}, got {num_heads}")
        if (dim // num_heads) % 4:
            raise ValueError(f"num_heads: 2-D rotary features need a head dim divisible by 4, "
                             f"got dim={dim} / num_heads={num_heads} = {dim / num_heads:g}")
        dd = {"device": device, "dtype": dtype}
        self.dim = dim
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.qkvg = nn.Linear(dim, 4 * dim, **dd)
        self.lepe = nn.Conv2d(dim, dim, lepe_kernel_size, padding=lepe_kernel_size // 2, groups=dim, **dd)
        self.norm = nn.LayerNorm(dim, eps=norm_eps, **dd)
        self.gate_act = nn.SiLU()
        self.proj = nn.Linear(dim, dim, **dd)

    def mix(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, height, width, channels = x.shape
        q, k, v, gate = self.qkvg(x).chunk(4, dim=-1)  # each (B, H, W, C), views of one buffer
        lepe = self.lepe(v.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        heads = (batch, height * width, self.num_heads, self.head_dim)
        mixed = self.mix(q.reshape(heads), k.reshape(heads), v.reshape(heads), (height, width))
        y = self.norm(mixed.reshape(batch, height, width, channels) + lepe) * self.gate_act(gate)
        return self.proj(y)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, num_heads={self.num_heads}"


class NaLaAttention2d(GatedLepeAttention2d):
    """Norm-aware linear attention over an image grid with 2-D rotary features (spec §3–§5).

    ``inhibit``: ``"relu"`` (released code) or ``"cosine"``; ``lam``, ``tau``, ``alpha``: the NaLa
    constants. Input and output: (B, H, W, C); O(N) in the number of tokens N = H * W.
    """

    def __init__(self, dim: int, num_heads: int, *, inhibit: str = "relu", lam: float = 3.0, tau: float = 0.5,
                 alpha: float = 20.0, **kwargs):
        if inhibit not in INHIBIT_MODES:
            raise ValueError(f"inhibit: expected one of {INHIBIT_MODES}, got {inhibit!r}")
        super().__init__(dim, num_heads, **kwargs)
        self.inhibit, self.lam, self.tau, self.alpha = inhibit, lam, tau, alpha

    def mix(self, q, k, v, grid):
        # the op's feature maps are float32 (float64 for float64 input): give it tables of that precision
        table_dtype = torch.float64 if q.dtype == torch.float64 else torch.float32
        rope = rotary_tables_2d(*grid, self.head_dim, device=q.device, dtype=table_dtype)
        # the op computes in float32 by itself, with autocast off inside
        return nala_attention(q, k, v, rope=rope, inhibit=self.inhibit, lam=self.lam, tau=self.tau,
                              alpha=self.alpha)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, inhibit={self.inhibit!r}"


class SoftmaxAttention2d(GatedLepeAttention2d):
    """Softmax attention with 2-D rotary q and k (the later NaLaFormer stages); same frame as NaLa.

    Runs ``F.scaled_dot_product_attention`` (scale 1/sqrt(head_dim)). Input and output: (B, H, W, C).
    """

    def mix(self, q, k, v, grid):
        sin, cos = rotary_tables_2d(*grid, self.head_dim, device=q.device, dtype=q.dtype)
        sin, cos = sin[:, None, :], cos[:, None, :]  # (N, 1, D): broadcast over heads
        q, k = apply_rotary(q, sin, cos), apply_rotary(k, sin, cos)
        out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
        return out.transpose(1, 2)


ATTENTION_TYPES = {"nala": NaLaAttention2d, "softmax": SoftmaxAttention2d}


def create_attention2d(attn_type: str, dim: int, num_heads: int, *, inhibit: str = "relu", **kwargs) -> nn.Module:
    """Build the token mixer named ``attn_type`` (``"nala"`` or ``"softmax"``)."""
    if attn_type not in ATTENTION_TYPES:
        raise ValueError(f"attn_type: expected one of {tuple(ATTENTION_TYPES)}, got {attn_type!r}")
    if attn_type == "nala":
        kwargs["inhibit"] = inhibit
    return ATTENTION_TYPES[attn_type](dim, num_heads, **kwargs)
