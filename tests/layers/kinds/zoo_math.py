"""Independent float64 statements of every attention kind as explicit N x N matrices (the oracle).

Written from the papers' formulas, one (N, D) head at a time, without the library's feature-map code.
"""

from __future__ import annotations

import math

import torch

EPS = 1e-6


def _normalised(scores: torch.Tensor, v: torch.Tensor, causal: bool) -> torch.Tensor:
    """o_i = (sum_j s_ij v_j / n_i) / (sum_j s_ij / n_i + eps); scores (N, N), v (N, E)."""
    n = scores.shape[0]
    if causal:
        scores = scores * torch.ones(n, n, dtype=scores.dtype).tril()
        count = torch.arange(1, n + 1, dtype=scores.dtype)[:, None]
    else:
        count = torch.full((n, 1), float(n), dtype=scores.dtype)
    a = (scores / count) / ((scores / count).sum(-1, keepdim=True) + EPS)
    return a @ v


def softmax(q, k, v, causal, **_):
    logits = q @ k.T / math.sqrt(q.shape[-1])
    if causal:
        logits = logits.masked_fill(torch.ones_like(logits, dtype=torch.bool).triu(1), float("-inf"))
    return torch.softmax(logits, -1) @ v


def relu_linear(q, k, v, causal, **_):
    return _normalised(torch.relu(q) @ torch.relu(k).T, v, causal)


def elu_linear(q, k, v, causal, **_):
    phi = lambda x: torch.where(x > 0, x + 1, torch.exp(x))  # noqa: E731  elu(x) + 1
    return _normalised(phi(q) @ phi(k).T, v, causal)


def focused(q, k, v, causal, scale, power=3.0, **_):
    def phi(x):
        r = (torch.relu(x) + 1e-6) / scale
        rp = r ** power
        return r.norm(dim=-1, keepdim=True) * rp / rp.norm(dim=-1, keepdim=True)

    return _normalised(phi(q) @ phi(k).T, v, causal)


def polarity(q, k, v, causal, scale, power, **_):
    qs, ks = q / scale, k / scale
    qp, qn, kp, kn = (torch.relu(t) ** power for t in (qs, -qs, ks, -ks))
    same = qp @ kp.T + qn @ kn.T
    opposite = qn @ kp.T + qp @ kn.T
    half = v.shape[-1] // 2
    return torch.cat([_normalised(same, v[:, :half], causal), _normalised(opposite, v[:, half:], causal)], -1)


def nala(q, k, v, causal, inhibit="relu", lam=3.0, tau=0.5, alpha=20.0, **_):
    norm = q.norm(dim=-1, keepdim=True)
    u = q / norm.clamp_min(1e-6)
    p = lam * (tau + torch.tanh(norm))
    if inhibit == "relu":
        phq = torch.cat([torch.relu(u) ** p, torch.relu(-u) ** p], -1)
        phk = torch.cat([torch.relu(k) ** lam, torch.relu(-k) ** lam], -1)
    else:  # the spec's form: m * [cos(theta), sin(theta)], theta = pi/4 tanh(alpha x_dir)
        kd = k / k.norm(dim=-1, keepdim=True).clamp_min(1e-6)
        tq, tk = math.pi / 4 * torch.tanh(alpha * u), math.pi / 4 * torch.tanh(alpha * kd)
        mq, mk = u.abs() ** p, k.abs() ** lam
        phq = torch.cat([mq * torch.cos(tq), mq * torch.sin(tq)], -1)
        phk = torch.cat([mk * torch.cos(tk), mk * torch.sin(tk)], -1)
    return _normalised(phq @ phk.T, v, causal)


def nala_cosine(q, k, v, causal, **kw):
    return nala(q, k, v, causal, inhibit="cosine", **kw)


ORACLES = {f.__name__: f for f in (softmax, relu_linear, elu_linear, focused, polarity, nala, nala_cosine)}


def attention(kind: str, q, k, v, causal: bool, **params) -> torch.Tensor:
    """q, k (B, N, H, D), v (B, N, H, Dv) float64 -> (B, N, H, Dv); params broadcast per head as (H, D)."""
    b, _, h, _ = q.shape
    out = []
    for bi in range(b):
        heads = []
        for hi in range(h):
            per_head = {key: (val[hi] if isinstance(val, torch.Tensor) and val.dim() == 2 else val)
                        for key, val in params.items()}
            heads.append(ORACLES[kind](q[bi, :, hi], k[bi, :, hi], v[bi, :, hi], causal, **per_head))
        out.append(torch.stack(heads, 1))
    return torch.stack(out)


def rotate(phi, sin, cos, head_dim):
    """Rotate interleaved pairs (2m, 2m+1) of every head_dim chunk of phi (N, F) by the angles of sin, cos
    (N, head_dim / 2)."""
    x = phi.unflatten(-1, (-1, head_dim // 2, 2))
    s, c = sin[:, None, :], cos[:, None, :]
    r0 = x[..., 0] * c - x[..., 1] * s
    r1 = x[..., 1] * c + x[..., 0] * s
    return torch.stack([r0, r1], -1).flatten(1)


def normalised_rotary(num_scores, den_scores, v, causal):
    """o_i = (sum_j a_ij v_j / n_i) / (sum_j s_ij / n_i + eps): a the rotated numerator scores, s the plain ones."""
    n = den_scores.shape[0]
    if causal:
        keep = torch.ones(n, n, dtype=v.dtype).tril()
        num_scores, den_scores = num_scores * keep, den_scores * keep
        count = torch.arange(1, n + 1, dtype=v.dtype)[:, None]
    else:
        count = torch.full((n, 1), float(n), dtype=v.dtype)
    return (num_scores / count) @ v / ((den_scores / count).sum(-1, keepdim=True) + EPS)


def relu_linear_rotary(q, k, v, causal, sin, cos, **_):
    phq, phk = torch.relu(q), torch.relu(k)
    d = q.shape[-1]
    return normalised_rotary(rotate(phq, sin, cos, d) @ rotate(phk, sin, cos, d).T, phq @ phk.T, v, causal)


def polarity_rotary(q, k, v, causal, sin, cos, scale, power, **_):
    """Features [pos, neg] (2D wide); each D-half rotated alike; same-sign / opposite-sign on the v halves."""
    d = q.shape[-1]
    qs, ks = q / scale, k / scale
    qp, qn, kp, kn = (torch.relu(t) ** power for t in (qs, -qs, ks, -ks))
    fk = torch.cat([kp, kn], -1)
    half = v.shape[-1] // 2
    outs = []
    for fq, vh in ((torch.cat([qp, qn], -1), v[:, :half]), (torch.cat([qn, qp], -1), v[:, half:])):
        outs.append(normalised_rotary(rotate(fq, sin, cos, d) @ rotate(fk, sin, cos, d).T, fq @ fk.T, vh, causal))
    return torch.cat(outs, -1)
