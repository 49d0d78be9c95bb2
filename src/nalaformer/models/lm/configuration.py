"""``NaLaConfig``: a Llama-style decoder whose attention is causal NaLa (optionally hybrid with softmax)."""

from __future__ import annotations

from transformers import PretrainedConfig

from ...layers.causal_attention import SHORT_CONV_ON
from ...layers.kinds import check_kind
from ...ops import NaLaParams

__all__ = ["NaLaConfig", "PRESETS", "preset_config", "LAYER_TYPES", "layer_type"]

# transformers' ``config.layer_types`` names: softmax layers are "full_attention", every other kind is a
# fixed-size recurrent layer, "linear_attention" there (as for Mamba / gated delta net layers)
LAYER_TYPES = ("full_attention", "linear_attention")


def layer_type(kind: str) -> str:
    """transformers' layer type of an attention kind."""
    return "full_attention" if kind == "softmax" else "linear_attention"


class NaLaConfig(PretrainedConfig):
    """Configuration of :class:`NaLaModel` / :class:`NaLaForCausalLM`.

    Llama keywords: vocab_size, hidden_size, intermediate_size (SwiGLU width), num_hidden_layers,
    num_attention_heads, head_dim (default hidden_size / heads), rms_norm_eps, rope_theta,
    max_position_embeddings (informational: NaLa has no length limit), initializer_range,
    tie_word_embeddings, use_cache, bos/eos/pad_token_id.

    attn_type: the attention kind of every layer not listed in softmax_layers, a key of
    ``nalaformer.layers.KINDS`` ("nala" default; "nala_cosine", "relu_linear", "elu_linear", "focused",
    "polarity", "softmax").

    NaLa keywords: inhibit ("relu" | "cosine"), lam, tau, alpha, nala_eps (denominator),
    nala_norm_eps (norm floor), softmax_layers (indices of layers using softmax attention through
    SDPA, for hybrids), layer_types (the same choice in transformers' per-layer form: ``"linear_attention"``
    for NaLa layers, ``"full_attention"`` for softmax ones; derived from softmax_layers when not given,
    and it defines them when given), short_conv_size (kernel of a causal depthwise conv, 0 = off),
    short_conv_on (what it convolves: "v" default, or "qkv": queries, keys and values, as in GLA/DeltaNet),
    attn_backend (the op's backend: "auto", "torch", "reference", "triton").
    """

    model_type = "nala"
    keys_to_ignore_at_inference = ["past_key_values", "cache"]

    def __init__(
        self,
        vocab_size: int = 32000,
        hidden_size: int = 1024,
        intermediate_size: int = 2560,
        num_hidden_layers: int = 24,
        num_attention_heads: int = 16,
        head_dim: int | None = None,
        rms_norm_eps: float = 1e-6,
        rope_theta: float = 10000.0,
        max_position_embeddings: int = 2048,
        initializer_range: float = 0.02,
        tie_word_embeddings: bool = True,
        use_cache: bool = True,
        inhibit: str = "relu",
        lam: float = 3.0,
        tau: float = 0.5,
        alpha: float = 20.0,
        nala_eps: float = 1e-6,
        nala_norm_eps: float = 1e-6,
        softmax_layers: list[int] | tuple[int, ...] = (),
        layer_types: list[str] | tuple[str, ...] | None = None,
        short_conv_size: int = 0,
        short_conv_on: str = "v",
        attn_backend: str = "auto",
        attn_type: str = "nala",
        bos_token_id: int | None = None,
        eos_token_id: int | None = None,
        pad_token_id: int | None = None,
        **kwargs,
    ):
        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        self.intermediate_size = intermediate_size
        self.num_hidden_layers = num_hidden_layers
        self.num_attention_heads = num_attention_heads
        self.head_dim = head_dim if head_dim is not None else hidden_size // max(num_attention_heads, 1)
        self.rms_norm_eps = rms_norm_eps
        self.rope_theta = rope_theta
        self.max_position_embeddings = max_position_embeddings
        self.initializer_range = initializer_range
        self.use_cache = use_cache
        self.inhibit = inhibit
        self.lam, self.tau, self.alpha = lam, tau, alpha
        self.nala_eps, self.nala_norm_eps = nala_eps, nala_norm_eps
        self.softmax_layers = sorted(int(i) for i in softmax_layers)
        self.attn_type = attn_type
        self.layer_types = self._layer_types(layer_types)
        self.short_conv_size = short_conv_size
        self.short_conv_on = short_conv_on
        self.attn_backend = attn_backend
        self._validate()
        super().__init__(tie_word_embeddings=tie_word_embeddings, bos_token_id=bos_token_id,
                         eos_token_id=eos_token_id, pad_token_id=pad_token_id, **kwargs)

    def _validate(self) -> None:
        for name in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: expected a positive integer, got {getattr(self, name)}")
        if self.head_dim * self.num_attention_heads != self.hidden_size:
            raise ValueError(f"num_attention_heads: {self.num_attention_heads} heads of head_dim {self.head_dim} "
                             f"must make hidden_size {self.hidden_size}")
        if self.head_dim % 2:
            raise ValueError(f"head_dim: rotary positions need an even head dim, got {self.head_dim}")
        self.nala_params()  # NaLa's hyper-parameters are checked where they live
        check_kind(self.attn_type, "attn_type")
        bad = [i for i in self.softmax_layers if not 0 <= i < self.num_hidden_layers]
        if bad:
            raise ValueError(f"softmax_layers: indices {bad} are outside 0..{self.num_hidden_layers - 1}")
        if self.short_conv_size == 1 or self.short_conv_size < 0:
            raise ValueError(f"short_conv_size: expected 0 (off) or >= 2, got {self.short_conv_size}")
        if self.short_conv_on not in SHORT_CONV_ON:
            raise ValueError(f"short_conv_on: expected one of {SHORT_CONV_ON}, got {self.short_conv_on!r}")

    def _layer_types(self, layer_types) -> list[str]:
        """Per-layer types from ``layer_types`` (which then sets softmax_layers) or from softmax_layers."""
        if layer_types is None:
            return [layer_type(self.attention_kind(i)) for i in range(self.num_hidden_layers)]
        layer_types = list(layer_types)
        if len(layer_types) != self.num_hidden_layers or any(t not in LAYER_TYPES for t in layer_types):
            raise ValueError(f"layer_types: expected {self.num_hidden_layers} entries (num_hidden_layers) from "
                             f"{list(LAYER_TYPES)}, got {layer_types}")
        if self.attn_type == "softmax" and "linear_attention" in layer_types:
            raise ValueError(f"layer_types: attn_type='softmax' makes every layer full_attention, got {layer_types}")
        softmax = [i for i, t in enumerate(layer_types) if t == "full_attention"]
        if self.softmax_layers and self.softmax_layers != softmax:
            raise ValueError(f"layer_types: {layer_types} disagrees with softmax_layers={self.softmax_layers}; "
                             "give one of them")
        self.softmax_layers = softmax
        return layer_types

    def attention_kind(self, layer_idx: int) -> str:
        """``"softmax"`` for the hybrid layers listed in ``softmax_layers``, else ``attn_type``."""
        return "softmax" if layer_idx in self.softmax_layers else self.attn_type

    def nala_params(self) -> NaLaParams:
        """The NaLa hyper-parameters as one validated :class:`NaLaParams`."""
        return NaLaParams(inhibit=self.inhibit, lam=self.lam, tau=self.tau, alpha=self.alpha, eps=self.nala_eps,
                          norm_eps=self.nala_norm_eps)


# Model sizes. "340m" follows the usual 340M linear-attention LM setting (24 x 1024, Llama-2 vocabulary
# size); the tiny/small ones train on a CPU with the byte tokenizer (vocab 258).
PRESETS: dict[str, dict] = {
    "nala-340m": dict(vocab_size=32000, hidden_size=1024, intermediate_size=2560, num_hidden_layers=24,
                      num_attention_heads=16, max_position_embeddings=2048),
    "nala-hybrid-340m": dict(vocab_size=32000, hidden_size=1024, intermediate_size=2560, num_hidden_layers=24,
                             num_attention_heads=16, max_position_embeddings=2048, softmax_layers=[5, 11, 17, 23]),
    "nala-small": dict(vocab_size=258, hidden_size=256, intermediate_size=688, num_hidden_layers=4,
                       num_attention_heads=4, max_position_embeddings=1024),
    "nala-tiny": dict(vocab_size=258, hidden_size=64, intermediate_size=160, num_hidden_layers=2,
                      num_attention_heads=2, max_position_embeddings=512),
}


def preset_config(name: str, **overrides) -> NaLaConfig:
    """A :class:`NaLaConfig` from a preset name (see ``PRESETS``), with keyword overrides."""
    if name not in PRESETS:
        raise ValueError(f"model: unknown preset {name!r}; choose one of {sorted(PRESETS)} or give a config.json")
    return NaLaConfig(**{**PRESETS[name], **overrides})
