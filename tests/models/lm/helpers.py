"""Tiny NaLa language models shared by the LM tests."""

from __future__ import annotations

import torch

from nalaformer.models.lm import NaLaForCausalLM, output_cache, preset_config

VARIANTS = {
    "nala": dict(),
    "hybrid-conv": dict(softmax_layers=[1], short_conv_size=3),
    "cosine": dict(inhibit="cosine"),
}


def tiny_model(variant: str = "nala", seed: int = 0, **overrides) -> NaLaForCausalLM:
    torch.manual_seed(seed)
    config = preset_config("nala-tiny", eos_token_id=256, pad_token_id=257, bos_token_id=256,
                           **{**VARIANTS[variant], **overrides})
    return NaLaForCausalLM(config).eval()


def random_ids(*shape: int, seed: int = 1) -> torch.Tensor:
    return torch.randint(0, 256, shape, generator=torch.Generator().manual_seed(seed))


def cache_of(output):
    """The cache of an output, whatever this transformers release calls it."""
    return output_cache(output)
