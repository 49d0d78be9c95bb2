"""Shared helpers for the NaLaFormer model tests."""

from __future__ import annotations

import torch

# the golden file's released constructor args, in our keywords
GOLDEN_CONFIG = dict(
    embed_dims=(16, 32, 64, 128), depths=(1, 1, 1, 1), num_heads=(1, 2, 2, 4), mlp_ratios=2,
    head_hidden_size=64, num_classes=10, layer_scale_init_values=(1, 1, 1, 1), drop_path_rate=0.0,
)


def to_our_kwargs(released: dict) -> dict:
    """Constructor args of the released code -> ours."""
    return dict(
        embed_dims=released["embed_dims"], depths=released["depths"], num_heads=released["num_heads"],
        mlp_ratios=released["mlp_ratios"], head_hidden_size=released["projection"],
        num_classes=released["num_classes"], drop_path_rate=released["drop_path_rate"],
        layer_scale_init_values=[v if on else None for v, on in zip(released["layer_init_values"],
                                                                     released["layerscales"], strict=True)],
    )


def tiny_model(name: str = "nalaformer_t", **overrides) -> torch.nn.Module:
    """The golden config (0.4M params): fast enough for every structural test."""
    import timm

    return timm.create_model(name, **dict(GOLDEN_CONFIG, **overrides))
