"""``NaLaModel`` and ``NaLaForCausalLM``: Llama-style decoders with causal NaLa attention.

Inputs follow transformers' conventions: ``input_ids`` (B, N), a 2-D padding ``attention_mask``
((B, N) or (B, past + N)), ``position_ids``, a cache passed as ``past_key_values`` (transformers 5.17)
or ``cache`` (later 5.x), plus ``cu_seqlens`` for packed documents. Padded tokens are removed before
attention, so a left- or right-padded batch equals each row run alone; with a cache, positions
continue from each row's count of real tokens.
"""

from __future__ import annotations

import dataclasses
import warnings

import torch
import torch.nn.functional as F
from torch import nn
from transformers import GenerationMixin, PreTrainedModel
from transformers import initialization as hf_init
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import BaseModelOutputWithPast, CausalLMOutputWithPast

from ...layers.causal_attention import CausalAttention
from ...layers.causal_conv import ShortConv
from ...layers.causal_layout import TokenLayout, build_layout
from ...layers.kinds import AttentionCore
from ...layers.lm_block import CausalDecoderBlock
from ...layers.lm_norm import RMSNorm
from .cache import NaLaCache
from .configuration import NaLaConfig

__all__ = ["NaLaDecoderLayer", "NaLaPreTrainedModel", "NaLaModel", "NaLaForCausalLM", "output_cache",
           "enable_gradient_checkpointing"]


def _field_of(output_cls) -> str:
    return "cache" if "cache" in {f.name for f in dataclasses.fields(output_cls)} else "past_key_values"


# transformers 5.17 names the output cache ``past_key_values``; later 5.x releases ``cache``. Looked up once
# here (torch.compile cannot trace dataclasses.fields on an output class).
_CACHE_FIELDS = {cls: _field_of(cls) for cls in (BaseModelOutputWithPast, CausalLMOutputWithPast)}


def _cache_field(output_cls) -> str:
    field = _CACHE_FIELDS.get(output_cls)
    return field if field is not None else _field_of(output_cls)


def _with_cache(output_cls, cache, **fields):
    return output_cls(**fields, **{_cache_field(output_cls): cache})


def output_cache(output) -> NaLaCache | None:
    """The cache of a model output, under whichever name this transformers release uses."""
    return getattr(output, _cache_field(type(output)))


def enable_gradient_checkpointing(model: PreTrainedModel) -> None:
    """Activation checkpointing of every decoder block (``activation_checkpointing_enable`` where it exists)."""
    enable = getattr(model, "activation_checkpointing_enable", None) or model.gradient_checkpointing_enable
    enable()


class NaLaDecoderLayer(GradientCheckpointingLayer, CausalDecoderBlock):
    """The decoder block as a transformers layer: ``activation_checkpointing_enable(every_n_layers=k)`` (and
    ``gradient_checkpointing_enable``) switch checkpointing on per block. Same signature and weights as
    :class:`CausalDecoderBlock`; under checkpointing in training it builds no new state."""


class NaLaPreTrainedModel(PreTrainedModel):
    config_class = NaLaConfig
    base_model_prefix = "model"
    supports_gradient_checkpointing = True
    _no_split_modules = ["NaLaDecoderLayer"]
    _supports_sdpa = True
    _is_stateful = True  # the recurrent cache cannot be rolled back: no assisted decoding

    @classmethod
    def _supports_default_dynamic_cache(cls) -> bool:
        return False  # the model builds its own NaLaCache

    def _init_weights(self, module: nn.Module) -> None:
        if isinstance(module, ShortConv):  # identity: the conv starts as a no-op
            identity = torch.zeros_like(module.weight)
            identity[:, -1] = 1.0
            hf_init.copy_(module.weight, identity)
        elif isinstance(module, RMSNorm):
            hf_init.ones_(module.weight)
        elif isinstance(module, AttentionCore):  # learned per-channel values of some kinds start at zero
            for param in module.parameters(recurse=False):
                hf_init.zeros_(param)
        else:
            super()._init_weights(module)


class NaLaModel(NaLaPreTrainedModel):
    """Embeddings, decoder blocks, final RMSNorm. Returns hidden states (B, N, C)."""

    def __init__(self, config: NaLaConfig):
        super().__init__(config)
        self.padding_idx = config.pad_token_id
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size, config.pad_token_id)
        self.layers = nn.ModuleList(self._block(config, i) for i in range(config.num_hidden_layers))
        self.norm = RMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.gradient_checkpointing = False
        self.post_init()

    @staticmethod
    def _block(config: NaLaConfig, idx: int) -> NaLaDecoderLayer:
        attention = CausalAttention(
            config.hidden_size, config.num_attention_heads, kind=config.attention_kind(idx), head_dim=config.head_dim,
            params=config.nala_params(), rope_theta=config.rope_theta, short_conv_size=config.short_conv_size,
            short_conv_on=config.short_conv_on,
            rms_norm_eps=config.rms_norm_eps, backend=config.attn_backend)
        return NaLaDecoderLayer(config.hidden_size, config.intermediate_size, config.rms_norm_eps, attention)

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embed_tokens

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.embed_tokens = value

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        past_key_values: NaLaCache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        use_cache: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        cu_seqlens: torch.Tensor | None = None,
        cache: NaLaCache | None = None,
        **kwargs,
    ):
        cache = cache if cache is not None else past_key_values
        hidden = self._embed(input_ids, inputs_embeds)
        batch, length = hidden.shape[:2]
        if cache is not None and not isinstance(cache, NaLaCache):
            raise TypeError(f"past_key_values: expected a NaLaCache (or None), got {type(cache).__name__}")
        if use_cache is None:  # training builds no cache unless asked to
            use_cache = self.config.use_cache and not self.training
        if use_cache and self.gradient_checkpointing and self.training and torch.is_grad_enabled():
            warnings.warn("use_cache=True is incompatible with gradient checkpointing; not caching", stacklevel=2)
            use_cache = False
        valid = self._padding_mask(attention_mask, batch, length, cache)
        layout = build_layout(batch, length, device=hidden.device, valid=valid, position_ids=position_ids,
                              cu_seqlens=cu_seqlens, past_counts=None if cache is None else cache.seen)
        use_cache = use_cache and layout.rows_are_sequences  # packed documents leave no per-row state
        if use_cache and cache is None:
            cache = NaLaCache(len(self.layers))

        if output_hidden_states is None:
            output_hidden_states = self.config.output_hidden_states
        hidden, all_hidden = self._run_layers(hidden, layout, cache, use_cache, output_hidden_states)
        hidden = self._carry_into_trailing_padding(self.norm(hidden), layout)
        if output_hidden_states:
            all_hidden.append(hidden)
        if use_cache:
            real = torch.full((batch,), length, device=hidden.device) if layout.valid is None else layout.valid.sum(1)
            cache.advance(real.long(), length)
        out = _with_cache(BaseModelOutputWithPast, cache if use_cache else None, last_hidden_state=hidden,
                          hidden_states=tuple(all_hidden) if output_hidden_states else None)
        return out if return_dict is not False else out.to_tuple()

    def _run_layers(self, hidden: torch.Tensor, layout: TokenLayout, cache: NaLaCache | None, use_cache: bool,
                    output_hidden_states: bool) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Decoder blocks in order; each continues its cached state and, with ``use_cache``, replaces it."""
        all_hidden = []
        for idx, layer in enumerate(self.layers):
            if output_hidden_states:
                all_hidden.append(hidden)
            state = cache.states[idx] if cache is not None else None
            hidden, new_state = layer(hidden, layout, state, use_cache=use_cache)  # checkpointed if enabled
            if use_cache:
                cache.states[idx] = new_state
        return hidden, all_hidden

    def _embed(self, input_ids, inputs_embeds) -> torch.Tensor:
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("input_ids, inputs_embeds: give exactly one of them")
        if inputs_embeds is not None:
            if inputs_embeds.dim() != 3:
                raise ValueError(f"inputs_embeds: expected (batch, length, hidden), got {tuple(inputs_embeds.shape)}")
            return inputs_embeds
        if input_ids.dim() != 2 or input_ids.numel() == 0:
            raise ValueError(f"input_ids: expected a non-empty (batch, length) tensor, got {tuple(input_ids.shape)}")
        # (a data check, one sync: done in eager calls, skipped while torch.compile traces or a CUDA graph captures)
        tracing = torch.compiler.is_compiling() or (input_ids.is_cuda and torch.cuda.is_current_stream_capturing())
        if not tracing and bool(((input_ids < 0) | (input_ids >= self.config.vocab_size)).any()):
            low, high = int(input_ids.min()), int(input_ids.max())
            raise ValueError(f"input_ids: token ids must lie in [0, vocab_size={self.config.vocab_size}), "
                             f"got values in [{low}, {high}]")
        return self.embed_tokens(input_ids)

    @staticmethod
    def _padding_mask(attention_mask, batch: int, length: int, cache: NaLaCache | None) -> torch.Tensor | None:
        """(B, N) bool of real tokens from a (B, N) or (B, past + N) 0/1 mask."""
        if attention_mask is None:
            return None
        past = 0 if cache is None else cache.get_seq_length()
        widths = sorted({length, past + length})
        if attention_mask.dim() != 2 or attention_mask.shape[0] != batch or attention_mask.shape[1] not in widths:
            raise ValueError(f"attention_mask: expected a 2-D padding mask of shape (batch={batch}, length) with "
                             f"length in {widths} (current tokens, or cached + current), got "
                             f"{tuple(attention_mask.shape)}")
        return attention_mask[:, -length:].bool()

    @staticmethod
    def _carry_into_trailing_padding(hidden: torch.Tensor, layout: TokenLayout) -> torch.Tensor:
        """Give padded positions the hidden state of their row's last real token before them.

        The last column then predicts each row's next token even for right-padded rows, so
        ``generate`` continues them exactly (their padding never entered any state).
        """
        if layout.valid is None:
            return hidden
        idx = torch.arange(layout.length, device=hidden.device).expand(layout.batch, -1)
        last_real = torch.where(layout.valid, idx, torch.zeros_like(idx)).cummax(1).values
        return hidden.gather(1, last_real[..., None].expand_as(hidden))


class NaLaForCausalLM(NaLaPreTrainedModel, GenerationMixin):
    """NaLaModel + LM head. ``labels`` (B, N) give the mean next-token cross-entropy (-100 = ignored)."""

    _tied_weights_keys = {"lm_head.weight": "model.embed_tokens.weight"}

    def __init__(self, config: NaLaConfig):
        super().__init__(config)
        self.model = NaLaModel(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.model.embed_tokens

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.model.embed_tokens = value

    def get_output_embeddings(self) -> nn.Linear:
        return self.lm_head

    def set_output_embeddings(self, value: nn.Linear) -> None:
        self.lm_head = value

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        past_key_values: NaLaCache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        cu_seqlens: torch.Tensor | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        cache: NaLaCache | None = None,
        num_items_in_batch: int | torch.Tensor | None = None,
        **kwargs,
    ):
        out = self.model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                         past_key_values=past_key_values, cache=cache, inputs_embeds=inputs_embeds,
                         use_cache=use_cache, output_hidden_states=output_hidden_states, return_dict=True,
                         cu_seqlens=cu_seqlens)
        hidden = out.last_hidden_state
        keep = slice(-logits_to_keep, None) if isinstance(logits_to_keep, int) else logits_to_keep
        logits = self.lm_head(hidden[:, keep])
        loss = None if labels is None else self.causal_lm_loss(logits, labels, num_items_in_batch)
        result = _with_cache(CausalLMOutputWithPast, output_cache(out), loss=loss, logits=logits,
                             hidden_states=out.hidden_states)
        return result if return_dict is not False else result.to_tuple()

    @staticmethod
    def causal_lm_loss(logits: torch.Tensor, labels: torch.Tensor, num_items_in_batch=None) -> torch.Tensor:
        """Next-token cross-entropy in float32: logits[:, t] predicts labels[:, t + 1]."""
        if labels.shape != logits.shape[:2]:
            raise ValueError(f"labels: expected shape {tuple(logits.shape[:2])} like the logits' (batch, length), "
                             f"got {tuple(labels.shape)}")
        pred = logits[:, :-1].flatten(0, 1).float()
        target = labels[:, 1:].flatten().to(pred.device)
        if num_items_in_batch is None:
            return F.cross_entropy(pred, target, ignore_index=-100)
        return F.cross_entropy(pred, target, ignore_index=-100, reduction="sum") / num_items_in_batch
