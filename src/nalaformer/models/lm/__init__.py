"""NaLa causal language models for Hugging Face transformers.

``register()`` adds ``model_type="nala"`` to AutoConfig, AutoModel, AutoModelForCausalLM and
AutoTokenizer (the byte tokenizer); it is idempotent and runs on import of this module.
"""

from __future__ import annotations

from .cache import NaLaCache
from .configuration import PRESETS, NaLaConfig, preset_config
from .graph_decode import GraphedDecoder
from .modeling import NaLaForCausalLM, NaLaModel, NaLaPreTrainedModel, enable_gradient_checkpointing, output_cache
from .tokenizer import NaLaByteTokenizer

__all__ = ["NaLaConfig", "NaLaModel", "NaLaForCausalLM", "NaLaPreTrainedModel", "NaLaCache", "NaLaByteTokenizer",
           "PRESETS", "preset_config", "output_cache", "enable_gradient_checkpointing", "GraphedDecoder", "register"]


def register() -> None:
    """Register the NaLa family with transformers' Auto classes (safe to call any number of times)."""
    from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoTokenizer

    AutoConfig.register(NaLaConfig.model_type, NaLaConfig, exist_ok=True)
    AutoModel.register(NaLaConfig, NaLaModel, exist_ok=True)
    AutoModelForCausalLM.register(NaLaConfig, NaLaForCausalLM, exist_ok=True)
    AutoTokenizer.register(NaLaConfig, tokenizer_class=NaLaByteTokenizer, exist_ok=True)


register()
