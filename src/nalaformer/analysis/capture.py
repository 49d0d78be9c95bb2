"""Capture the queries and keys of every attention layer of a trained model, with hooks (no model edits).

Vision models (``KindAttention2d`` mixers): a pre-hook on each layer's core sees (q, k) as the kind mixes
them. Language models (``CausalAttention``): hooks on ``q_proj`` / ``k_proj`` see q and k before rotary
positions (the feature maps act on them; softmax layers included).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch

from ..layers.attention2d import KindAttention2d
from ..layers.causal_attention import CausalAttention
from ..layers.kinds import AttentionCore

__all__ = ["CapturedAttention", "capture_attention"]


@dataclass
class CapturedAttention:
    """One attention layer's inputs from one forward pass: q, k (B, N, H, D), detached."""

    name: str
    kind: str
    core: AttentionCore
    q: torch.Tensor
    k: torch.Tensor
    causal: bool


def _vision_hook(name: str, layer: KindAttention2d, out: list):
    def hook(core, args, kwargs):
        out.append(CapturedAttention(name, layer.kind, core, args[0].detach(), args[1].detach(),
                                     bool(kwargs.get("causal", False))))
    return layer.core.register_forward_pre_hook(hook, with_kwargs=True)


def _lm_hooks(name: str, layer: CausalAttention, out: list):
    pending = {}
    heads = (layer.num_heads, layer.head_dim)

    def on_q(module, args, result):
        pending["q"] = result.detach().unflatten(-1, heads)

    def on_k(module, args, result):
        out.append(CapturedAttention(name, layer.kind, layer.core, pending.pop("q"),
                                     result.detach().unflatten(-1, heads), True))
    return [layer.q_proj.register_forward_hook(on_q), layer.k_proj.register_forward_hook(on_k)]


@contextlib.contextmanager
def capture_attention(model: torch.nn.Module):
    """``with capture_attention(model) as layers: model(x)`` fills ``layers`` with one
    :class:`CapturedAttention` per attention call, in call order. Raises ValueError if the model has no
    attention layer this module knows."""
    captured: list[CapturedAttention] = []
    handles = []
    for name, module in model.named_modules():
        if isinstance(module, KindAttention2d):
            handles.append(_vision_hook(name, module, captured))
        elif isinstance(module, CausalAttention):
            handles.extend(_lm_hooks(name, module, captured))
    if not handles:
        raise ValueError(f"model: no attention layer to analyse in {type(model).__name__} "
                         "(expected NaLaFormer or NaLa language-model attention)")
    try:
        yield captured
    finally:
        for handle in handles:
            handle.remove()
