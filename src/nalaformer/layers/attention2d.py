"""Token mixers of the NaLaFormer vision blocks (spec §5): NaLa attention, its softmax twin, and every
other attention kind of the registry (:mod:`nalaformer.layers.kinds`).

All share one frame and differ only in how the heads mix tokens (the kind's core)::

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
from torch import nn

from ..ops import NaLaParams
from .conv import DepthwiseConv2d
from .kinds import check_kind, get_kind
from .rotary2d import rotary_tables_2d

__all__ = ["GatedLepeAttention2d", "KindAttention2d", "NaLaAttention2d", "SoftmaxAttention2d", "ATTENTION_TYPES",
           "create_attention2d"]


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
        self.lepe = DepthwiseConv2d(dim, lepe_kernel_size, **dd)  # nn.Conv2d's state dict; dense on tiny CPU images
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


class KindAttention2d(GatedLepeAttention2d):
    """The frame around the core of any registered attention kind (:mod:`nalaformer.layers.kinds`).

    ``kind``: a registry key; ``params``: a :class:`NaLaParams` for the NaLa kinds. Kinds that use rotary
    positions get 2-D tables for the grid; kinds with ``vision_dwc`` (focused, polarity) add their per-head
    depthwise conv of v to the mixed output, as their papers' vision layers do. Input and output: (B, H, W, C).
    """

    def __init__(self, dim: int, num_heads: int, *, kind: str = "nala", params: NaLaParams | None = None, **kwargs):
        core_cls = get_kind(kind, "attn_type")
        super().__init__(dim, num_heads, **kwargs)
        dd = {"device": kwargs.get("device"), "dtype": kwargs.get("dtype")}
        self.kind = kind
        self.core = core_cls(num_heads, self.head_dim, **({"params": params} if params is not None else {})).to(**dd)
        size = core_cls.vision_dwc
        self.dwc = nn.Conv2d(self.head_dim, self.head_dim, size, padding=size // 2, groups=self.head_dim,
                             **dd) if size else None

    def mix(self, q, k, v, grid):
        rope = None
        if self.core.uses_rope:
            rope = rotary_tables_2d(*grid, self.head_dim, device=q.device, dtype=self.core.rope_dtype(q.dtype))
        out = self.core(q, k, v, rope=rope)
        if self.dwc is not None:  # (B, N, heads, d) -> (B * heads, d, H, W), one conv shared by the heads
            b, n, h, d = v.shape
            local = self.dwc(v.permute(0, 2, 3, 1).reshape(b * h, d, *grid))
            out = out + local.reshape(b, h, d, n).permute(0, 3, 1, 2)
        return out

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, kind={self.kind!r}"


class NaLaAttention2d(KindAttention2d):
    """Norm-aware linear attention over an image grid with 2-D rotary features (spec §3–§5).

    ``inhibit``: ``"relu"`` (released code) or ``"cosine"``; ``lam``, ``tau``, ``alpha``: the NaLa
    constants. Input and output: (B, H, W, C); O(N) in the number of tokens N = H * W.
    """

    def __init__(self, dim: int, num_heads: int, *, inhibit: str = "relu", lam: float = 3.0, tau: float = 0.5,
                 alpha: float = 20.0, **kwargs):
        params = NaLaParams(inhibit=inhibit, lam=lam, tau=tau, alpha=alpha)
        super().__init__(dim, num_heads, kind="nala", params=params, **kwargs)

    @property
    def inhibit(self) -> str:
        return self.core.params.inhibit

    def extra_repr(self) -> str:
        return f"dim={self.dim}, num_heads={self.num_heads}, inhibit={self.inhibit!r}"


class SoftmaxAttention2d(KindAttention2d):
    """Softmax attention with 2-D rotary q and k (the later NaLaFormer stages); same frame as NaLa.

    Runs ``F.scaled_dot_product_attention`` (scale 1/sqrt(head_dim)). Input and output: (B, H, W, C).
    """

    def __init__(self, dim: int, num_heads: int, **kwargs):
        super().__init__(dim, num_heads, kind="softmax", **kwargs)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, num_heads={self.num_heads}"


# the mixer classes (timm registers them as torch.fx leaves); every registry kind builds through them
ATTENTION_TYPES = {"nala": NaLaAttention2d, "softmax": SoftmaxAttention2d, "kind": KindAttention2d}


def create_attention2d(attn_type: str, dim: int, num_heads: int, *, inhibit: str = "relu", **kwargs) -> nn.Module:
    """Build the token mixer of kind ``attn_type`` (any key of :data:`nalaformer.layers.kinds.KINDS`);
    ``inhibit`` applies to ``"nala"``."""
    check_kind(attn_type, "attn_type")
    if attn_type == "nala":
        return NaLaAttention2d(dim, num_heads, inhibit=inhibit, **kwargs)
    if attn_type == "softmax":
        return SoftmaxAttention2d(dim, num_heads, **kwargs)
    return KindAttention2d(dim, num_heads, kind=attn_type, **kwargs)
