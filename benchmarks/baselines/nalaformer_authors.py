"""The authors' NaLaFormer, re-created from the spec (§5, §6) as a benchmark baseline.

It follows the released code's layout and parameter names, so that
``nalaformer.models.vision.nalaformer.checkpoint_filter_fn`` maps its weights onto ours. Deliberately eager:
permutes around every LayerNorm / FFN, q, k, v, g split through a (B, N, 4, C) permute, rotary tables rebuilt
every forward, four separate rotations, and the attention core in float32.

Not part of the installed package: ``nalaformer bench vision`` loads it from a checkout
(``benchmarks/baselines/``) and says what it needs when it is absent.
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["AuthorsNaLaFormer"]


def _island(fp32: bool, device_type: str):
    """The attention core's precision: autocast off (a real fp32 island) or left as the caller set it."""
    return torch.autocast(device_type, enabled=False) if fp32 else contextlib.nullcontext()


def _rotate(x, sin, cos):
    pairs = torch.stack([-x[..., 1::2], x[..., ::2]], dim=-1).flatten(-2)
    return x * cos + pairs * sin


class _RoPE(nn.Module):
    def __init__(self, head_dim: int):
        super().__init__()
        angle = 1.0 / 10000 ** torch.linspace(0, 1, head_dim // 4)
        self.register_buffer("angle", angle.repeat_interleave(2))

    def forward(self, height: int, width: int):
        rows = torch.arange(height, device=self.angle.device, dtype=self.angle.dtype)[:, None] * self.angle
        cols = torch.arange(width, device=self.angle.device, dtype=self.angle.dtype)[:, None] * self.angle
        angles = torch.cat([rows[:, None].expand(-1, width, -1), cols[None].expand(height, -1, -1)], -1)
        angles = angles.flatten(0, 1)
        return angles.sin(), angles.cos()


class _LayerNorm2d(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.norm = nn.LayerNorm(dim, eps=1e-6)

    def forward(self, x):
        return self.norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class _AuthorsAttention(nn.Module):
    def __init__(self, dim: int, heads: int, softmax: bool, fp32_island: bool):
        super().__init__()
        self.heads, self.softmax, self.fp32_island = heads, softmax, fp32_island
        self.qkvg = nn.Linear(dim, 4 * dim)
        self.lepe = nn.Conv2d(dim, dim, 5, 1, 2, groups=dim)
        self.out_proj = nn.Linear(dim, dim)
        self.ln = nn.LayerNorm(dim)
        self.act = nn.SiLU()

    def _nala(self, q, k, v, sin, cos):
        n = q.shape[-2]
        k = k ** 3
        q_norm = q.norm(dim=-1, keepdim=True)
        power = 3 * (0.5 + torch.tanh(q_norm))
        q1, q2 = (torch.relu(q) / q_norm) ** power, (torch.relu(-q) / q_norm) ** power
        k1, k2 = torch.relu(k), torch.relu(-k)
        q_rot = torch.cat([_rotate(q1, sin, cos), _rotate(q2, sin, cos)], -1)
        k_rot = torch.cat([_rotate(k1, sin, cos), _rotate(k2, sin, cos)], -1)
        q_cat, k_cat = torch.cat([q1, q2], -1), torch.cat([k1, k2], -1)
        z = 1 / (q_cat @ k_cat.mean(dim=-2, keepdim=True).transpose(-2, -1) + 1e-6)
        kv = (k_rot.transpose(-2, -1) * n ** -0.5) @ (v * n ** -0.5)
        return q_rot @ kv * z

    def _softmax(self, q, k, v, sin, cos):
        q, k = _rotate(q, sin, cos), _rotate(k, sin, cos)
        attn = torch.softmax(q.shape[-1] ** -0.5 * q @ k.transpose(-1, -2), dim=-1)
        return attn @ v

    def forward(self, x, sin, cos):
        b, c, h, w = x.shape
        n = h * w
        qkvg = self.qkvg(x.reshape(b, c, n).transpose(-1, -2)).reshape(b, n, 4, c).permute(2, 0, 1, 3)
        to_image = lambda t: t.reshape(b, h, w, c).permute(0, 3, 1, 2)  # noqa: E731
        if self.softmax:  # the released softmax attention computes lepe before its fp32 casts
            lepe = self.lepe(to_image(qkvg[2])).permute(0, 2, 3, 1).reshape(b, n, c)
        with _island(self.fp32_island, x.device.type):
            if not self.softmax:  # the released NaLa casts q, k, v, g, then computes lepe from the fp32 v
                qkvg = qkvg.float()
                lepe = self.lepe(to_image(qkvg[2])).permute(0, 2, 3, 1).reshape(b, n, c)
            q, k, v, g = qkvg[0], qkvg[1], qkvg[2], qkvg[3]
            split = lambda t: t.reshape(b, n, self.heads, c // self.heads).permute(0, 2, 1, 3).float()  # noqa: E731
            core = self._softmax if self.softmax else self._nala
            o = core(split(q), split(k), split(v), sin, cos).transpose(1, 2).reshape(b, n, c)
            y = self.ln(o + lepe.float()) * self.act(g.float() if self.fp32_island else g)
        return self.out_proj(y).reshape(b, h, w, c).permute(0, 3, 1, 2)


class _AuthorsFFN(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(dim, hidden), nn.Linear(hidden, dim)
        self.dwconv = nn.Conv2d(hidden, hidden, 3, 1, 1, groups=hidden)

    def forward(self, x):
        b, c, h, w = x.shape
        t = F.gelu(self.fc1(x.contiguous().reshape(b, c, h * w).permute(0, 2, 1)))
        img = t.reshape(b, h, w, -1).permute(0, 3, 1, 2)
        t = (img + self.dwconv(img)).reshape(b, -1, h * w).permute(0, 2, 1)
        return self.fc2(t).reshape(b, h, w, c).permute(0, 3, 1, 2)


class _AuthorsBlock(nn.Module):
    def __init__(self, dim, heads, mlp_ratio, softmax, ls_init, fp32_island):
        super().__init__()
        self.cpe1 = nn.Conv2d(dim, dim, 3, 1, 1, groups=dim)
        self.norm1 = _LayerNorm2d(dim)
        self.attn = _AuthorsAttention(dim, heads, softmax, fp32_island)
        self.gamma_1 = nn.Parameter(ls_init * torch.ones(1, dim, 1, 1))
        self.cpe2 = nn.Conv2d(dim, dim, 3, 1, 1, groups=dim)
        self.norm2 = _LayerNorm2d(dim)
        self.ffn = _AuthorsFFN(dim, int(mlp_ratio * dim))
        self.gamma_2 = nn.Parameter(ls_init * torch.ones(1, dim, 1, 1))

    def forward(self, x, sin, cos):
        x = x + self.cpe1(x)
        x = x + self.gamma_1 * self.attn(self.norm1(x), sin, cos)
        x = x + self.cpe2(x)
        return x + self.gamma_2 * self.ffn(self.norm2(x))


class _AuthorsDownsample(nn.Module):
    def __init__(self, dim, out_dim):
        super().__init__()
        self.reduction, self.norm = nn.Conv2d(dim, out_dim, 3, 2, 1), nn.BatchNorm2d(out_dim)

    def forward(self, x):
        return self.norm(self.reduction(x))


class _AuthorsStage(nn.Module):
    def __init__(self, dim, out_dim, depth, heads, mlp_ratio, softmax, ls_init, fp32_island):
        super().__init__()
        self.RoPE = _RoPE(dim // heads)
        self.blocks = nn.ModuleList(
            [_AuthorsBlock(dim, heads, mlp_ratio, softmax, ls_init, fp32_island) for _ in range(depth)])
        self.downsample = _AuthorsDownsample(dim, out_dim) if out_dim else None

    def forward(self, x):
        sin, cos = self.RoPE(x.shape[2], x.shape[3])
        for block in self.blocks:
            x = block(x, sin, cos)
        return self.downsample(x) if self.downsample is not None else x


class AuthorsNaLaFormer(nn.Module):
    """The released network's computation and state-dict layout (eval-equivalent; no stochastic depth)."""

    def __init__(self, embed_dims, depths, num_heads, mlp_ratios, layer_scale_init_values, num_classes=1000,
                 projection=1024, fp32_island=True):
        super().__init__()
        d0 = embed_dims[0]
        conv_bn = lambda i, o, s: [nn.Conv2d(i, o, 3, s, 1), nn.BatchNorm2d(o)]  # noqa: E731
        self.patch_embed = nn.Module()
        self.patch_embed.proj = nn.Sequential(*conv_bn(3, d0 // 2, 2), nn.GELU(), *conv_bn(d0 // 2, d0 // 2, 1),
                                              nn.GELU(), *conv_bn(d0 // 2, d0 // 2, 1), nn.GELU(),
                                              *conv_bn(d0 // 2, d0, 2))
        self.layers = nn.ModuleList([
            _AuthorsStage(embed_dims[i], embed_dims[i + 1] if i < 3 else None, depths[i], num_heads[i],
                          mlp_ratios[i], i >= 2, layer_scale_init_values[i], fp32_island)
            for i in range(4)
        ])
        self.proj = nn.Linear(embed_dims[-1], projection)
        self.norm = nn.BatchNorm2d(projection)
        self.head = nn.Conv2d(projection, num_classes, 1)

    def forward(self, x):
        x = self.patch_embed.proj(x)
        for layer in self.layers:
            x = layer(x)
        b, c, h, w = x.shape
        x = self.proj(x.reshape(b, c, -1).permute(0, 2, 1)).reshape(b, h, w, -1).permute(0, 3, 1, 2)
        x = F.silu(self.norm(x)).mean((2, 3), keepdim=True)
        return self.head(x).flatten(1)
