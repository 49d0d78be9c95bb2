"""Independent float64 re-statements of spec §4-§5, written the way the released code lays them out
((B, heads, N, d) with permutes), to test the layers against."""

from __future__ import annotations

import torch


def rotate_pairs(x, sin, cos):
    """(x0, x1) -> (x0 cos - x1 sin, x1 cos + x0 sin) on interleaved pairs of the last dim."""
    x0, x1 = x[..., ::2], x[..., 1::2]
    rotated = torch.stack([-x1, x0], dim=-1).flatten(-2)
    return x * cos + rotated * sin


def rope_tables(height, width, head_dim):
    a = 1.0 / 10000 ** torch.linspace(0, 1, head_dim // 4, dtype=torch.float64)
    a = a.repeat_interleave(2)
    rows = torch.arange(height, dtype=torch.float64)[:, None, None] * a
    cols = torch.arange(width, dtype=torch.float64)[None, :, None] * a
    angles = torch.cat([rows.expand(height, width, -1), cols.expand(height, width, -1)], -1).reshape(-1, head_dim)
    return angles.sin(), angles.cos()


def nala_core(q, k, v, sin, cos, lam=3.0, tau=0.5, eps=1e-6):
    """Non-causal NaLa, relu mode; q, k, v (B, heads, N, d) -> (B, heads, N, d)."""
    n = q.shape[-2]
    norm = q.norm(dim=-1, keepdim=True)
    power = lam * (tau + torch.tanh(norm))
    u = q / norm
    phq = torch.cat([torch.relu(u) ** power, torch.relu(-u) ** power], -1)
    phk = torch.cat([torch.relu(k) ** lam, torch.relu(-k) ** lam], -1)
    d = q.shape[-1]
    rq = torch.cat([rotate_pairs(phq[..., :d], sin, cos), rotate_pairs(phq[..., d:], sin, cos)], -1)
    rk = torch.cat([rotate_pairs(phk[..., :d], sin, cos), rotate_pairs(phk[..., d:], sin, cos)], -1)
    s = rk.transpose(-1, -2) @ v / n
    m = phk.mean(-2, keepdim=True)
    return (rq @ s) / ((phq * m).sum(-1, keepdim=True) + eps)


def softmax_core(q, k, v, sin, cos):
    q, k = rotate_pairs(q, sin, cos), rotate_pairs(k, sin, cos)
    attn = torch.softmax(q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5, dim=-1)
    return attn @ v


def gated_lepe_attention(module, x, core):
    """Spec §5 on x (B, C, H, W) with the weights of ``module``; returns (B, C, H, W)."""
    b, c, h, w = x.shape
    heads = module.num_heads
    t = x.flatten(2).transpose(1, 2)  # (B, N, C)
    q, k, v, g = module.qkvg(t).reshape(b, h * w, 4, c).permute(2, 0, 1, 3)
    lepe = module.lepe(v.transpose(1, 2).reshape(b, c, h, w)).flatten(2).transpose(1, 2)
    split = lambda z: z.reshape(b, h * w, heads, c // heads).permute(0, 2, 1, 3)  # noqa: E731
    sin, cos = rope_tables(h, w, c // heads)
    o = core(split(q), split(k), split(v), sin, cos).permute(0, 2, 1, 3).reshape(b, h * w, c)
    y = module.proj(module.norm(o + lepe) * torch.nn.functional.silu(g))
    return y.transpose(1, 2).reshape(b, c, h, w)
