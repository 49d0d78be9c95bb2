"""NaLaFormer: hierarchical vision backbones with norm-aware linear attention, as timm models.

Paper: *NaLaFormer: Norm-Aware Linear Attention for Transformer Models* (arXiv 2506.21137), revised as
*Norm x Direction: Restoring the Missing Query Norm in Vision Linear Attention* (ICML 2026).
Numerical reference: the authors' released code (ZacharyMeng/NaLaFormer); see docs/vision.md.

Layout: stem (stride 4) -> 4 stages (stage i > 0 starts with a stride-2 downsample) -> head
(Linear -> BN -> SiLU -> avg pool -> Linear). Stages 1-2 use NaLa attention, 3-4 softmax attention
(``attn_types``); every stage builds 2-D rotary tables for its own grid, so any input size works.

The released checkpoints load through ``checkpoint_filter_fn``::

    timm.create_model("nalaformer_t", pretrained=True, pretrained_cfg_overlay=dict(file="official.pth"))
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence

import torch
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.layers import LayerScale, get_device_dtype, register_notrace_function, register_notrace_module
from timm.models import build_model_with_cfg, checkpoint_seq, generate_default_cfgs, register_model
from timm.models._features import feature_take_indices
from torch import nn

from ...layers import DepthwiseConv2d, NaLaBlock, NaLaClassifierHead, NaLaStem, SmallImageConv2d, create_downsample
from ...layers.attention2d import ATTENTION_TYPES
from ...layers.kinds import AttentionCore, check_kind

__all__ = ["NaLaFormer", "NaLaStage", "checkpoint_filter_fn"]

_logger = logging.getLogger(__name__)

NUM_STAGES = 4
STEM_STRIDE = 4


def _per_stage(name: str, value, convert=lambda v: v) -> tuple:
    """A scalar broadcast to every stage, or a sequence of exactly one value per stage."""
    if isinstance(value, (str, int, float)) or value is None:
        return (convert(value),) * NUM_STAGES
    values = tuple(value)
    if len(values) != NUM_STAGES:
        raise ValueError(f"{name}: expected {NUM_STAGES} values (one per stage), got {len(values)}: {values}")
    return tuple(convert(v) for v in values)


@register_notrace_function  # a leaf for torch.fx: shape checks cannot run on proxies
def check_image_input(x: torch.Tensor, in_chans: int, min_size: int) -> torch.Tensor:
    """Return ``x`` if it is an image batch (B, in_chans, H, W) with H, W >= min_size; else raise naming the problem."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x: expected an image tensor (B, {in_chans}, H, W), got {type(x).__name__}")
    if x.dim() != 4:
        raise ValueError(f"x: expected a 4-D image batch (B, {in_chans}, H, W), got shape {tuple(x.shape)}")
    if x.shape[1] != in_chans:
        raise ValueError(f"x: expected {in_chans} input channels (B, {in_chans}, H, W), "
                         f"got {x.shape[1]} in shape {tuple(x.shape)}")
    if x.shape[2] < min_size or x.shape[3] < min_size:
        raise ValueError(f"x: expected an image of at least {min_size}x{min_size} pixels (the backbone's "
                         f"total stride), got {x.shape[2]}x{x.shape[3]}")
    return x


# the attention cores call the NaLa op / SDPA with shape logic of their own, and the convolutions pick their
# CPU form by the image size: leaves for torch.fx
for _mixer in (*ATTENTION_TYPES.values(), DepthwiseConv2d, SmallImageConv2d):
    register_notrace_module(_mixer)


class NaLaStage(nn.Module):
    """Optional stride-2 downsample, then ``depth`` NaLaBlocks. (B, C_in, H, W) -> (B, C, H', W')."""

    def __init__(
        self,
        in_dim: int,
        dim: int,
        depth: int,
        num_heads: int,
        mlp_ratio: float,
        attn_type: str,
        downsample: bool,
        drop_path: Sequence[float],
        ls_init_value: float | None,
        inhibit: str = "relu",
        device=None,
        dtype=None,
    ):
        super().__init__()
        dd = {"device": device, "dtype": dtype}
        self.downsample = create_downsample(in_dim, dim, **dd) if downsample else nn.Identity()
        self.blocks = nn.Sequential(*[
            NaLaBlock(dim, num_heads, mlp_ratio, attn_type=attn_type, inhibit=inhibit, drop_path=drop_path[j],
                      ls_init_value=ls_init_value, **dd)
            for j in range(depth)
        ])
        self.grad_checkpointing = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.downsample(x)
        if self.grad_checkpointing and not torch.jit.is_scripting():
            return checkpoint_seq(self.blocks, x)
        return self.blocks(x)


class NaLaFormer(nn.Module):
    """NaLaFormer backbone and classifier.

    Args:
        in_chans: input image channels.
        num_classes: classifier outputs (0 = no classifier, the output is the pooled pre-logits).
        global_pool: ``'avg'`` or ``''`` (no pooling: spatial logits / features).
        embed_dims, depths, num_heads: per-stage channels, blocks and heads.
        mlp_ratios: FFN expansion, one value or one per stage.
        head_hidden_size: width of the pre-pool projection of the head (None or 0 = no projection;
            through ``timm.create_model``, which drops None kwargs, pass 0).
        layer_scale_init_values: LayerScale start value per stage (or one value); None or False = no
            LayerScale, per stage or everywhere (through ``timm.create_model`` pass False).
        attn_types: the attention kind of every stage (one name) or per stage (four names): any key of
            ``nalaformer.layers.KINDS`` (softmax, relu_linear, elu_linear, focused, polarity, nala, nala_cosine).
        inhibit: NaLa's non-negativity map, ``'relu'`` (released) or ``'cosine'``.
        drop_rate: dropout before the classifier.
        drop_path_rate: stochastic-depth rate of the last block, increasing linearly from 0 at the first.
    """

    def __init__(
        self,
        in_chans: int = 3,
        num_classes: int = 1000,
        global_pool: str = "avg",
        embed_dims: Sequence[int] = (64, 128, 256, 512),
        depths: Sequence[int] = (2, 2, 6, 2),
        num_heads: Sequence[int] = (1, 2, 4, 8),
        mlp_ratios: float | Sequence[float] = 4.0,
        head_hidden_size: int | None = 1024,
        layer_scale_init_values: float | Sequence[float | None] | None = (1.0, 1.0, 1.0, 1.0),
        attn_types: str | Sequence[str] = ("nala", "nala", "softmax", "softmax"),
        inhibit: str = "relu",
        drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        device=None,
        dtype=None,
    ):
        super().__init__()
        dd = {"device": device, "dtype": dtype}
        embed_dims = _per_stage("embed_dims", embed_dims, int)
        depths = _per_stage("depths", depths, int)
        num_heads = _per_stage("num_heads", num_heads, int)
        mlp_ratios = _per_stage("mlp_ratios", mlp_ratios, float)
        if layer_scale_init_values is False:  # timm.create_model drops None kwargs: False also means "none"
            layer_scale_init_values = None
        ls_values = _per_stage("layer_scale_init_values", layer_scale_init_values,
                               lambda v: None if v is None or v is False else float(v))
        attn_types = _per_stage("attn_types", attn_types, str)
        for attn_type in attn_types:
            check_kind(attn_type, "attn_types")
        if in_chans < 1:
            raise ValueError(f"in_chans: expected at least one input channel, got {in_chans}")
        if not 0.0 <= drop_path_rate < 1.0:
            raise ValueError(f"drop_path_rate: expected a rate in [0, 1), got {drop_path_rate}")

        self.num_classes = num_classes
        self.in_chans = in_chans
        self.drop_rate = drop_rate
        self.embed_dims = embed_dims
        self.stem = NaLaStem(in_chans, embed_dims[0], **dd)

        total = sum(depths)
        rates = [drop_path_rate * i / (total - 1) if total > 1 else 0.0 for i in range(total)]
        self.stages = nn.Sequential()
        self.feature_info = []
        in_dim, stride, first = embed_dims[0], STEM_STRIDE, 0
        for i in range(NUM_STAGES):
            stride *= 2 if i > 0 else 1
            self.stages.append(NaLaStage(
                in_dim, embed_dims[i], depths[i], num_heads[i], mlp_ratios[i], attn_types[i], downsample=i > 0,
                drop_path=rates[first:first + depths[i]], ls_init_value=ls_values[i], inhibit=inhibit, **dd,
            ))
            self.feature_info.append(dict(num_chs=embed_dims[i], reduction=stride, module=f"stages.{i}"))
            in_dim, first = embed_dims[i], first + depths[i]

        self.num_features = embed_dims[-1]
        self.head = NaLaClassifierHead(self.num_features, num_classes, hidden_size=head_hidden_size,
                                       pool_type=global_pool, drop_rate=drop_rate, **dd)
        self.head_hidden_size = self.head.num_features
        self.init_weights()

    # ---------------------------------------------------------------- init
    @staticmethod
    def _init_module(module: nn.Module) -> None:
        """The released init: convs trunc-normal(.02) with zero bias; everything else its own default."""
        if isinstance(module, nn.Conv2d):
            nn.init.trunc_normal_(module.weight, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, (nn.Linear, nn.LayerNorm, LayerScale)):
            module.reset_parameters()
        elif isinstance(module, nn.BatchNorm2d):
            module.reset_parameters()  # also resets the running statistics
        elif isinstance(module, AttentionCore):
            module.reset_parameters()  # learned per-channel values of some kinds (focused, polarity)

    @torch.no_grad()
    def init_weights(self) -> None:
        """(Re-)initialise every parameter and buffer, e.g. after ``to_empty()`` from the meta device."""
        self.apply(self._init_module)

    # ---------------------------------------------------------------- timm model API
    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict:
        return dict(
            stem=r"^stem",
            blocks=r"^stages\.(\d+)" if coarse else [
                (r"^stages\.(\d+)\.downsample", (0,)),
                (r"^stages\.(\d+)\.blocks\.(\d+)", None),
            ],
        )

    @torch.jit.ignore
    def no_weight_decay(self) -> set:
        return set()  # 1-D parameters (norms, biases, LayerScale) are already excluded by timm's optimizer factory

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        for stage in self.stages:
            stage.grad_checkpointing = enable

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return self.head.fc

    def reset_classifier(self, num_classes: int, global_pool: str | None = None, reset_other: bool = False) -> None:
        self.num_classes = num_classes
        self.head.reset(num_classes, global_pool, reset_other=reset_other, in_features=self.num_features,
                        **get_device_dtype(self))
        self.head_hidden_size = self.head.num_features

    # ---------------------------------------------------------------- forward
    def _min_input_size(self) -> int:
        return self.feature_info[len(self.stages) - 1]["reduction"]

    def forward_intermediates(
        self,
        x: torch.Tensor,
        indices: int | list[int] | None = None,
        norm: bool = False,
        stop_early: bool = False,
        output_fmt: str = "NCHW",
        intermediates_only: bool = False,
    ) -> list[torch.Tensor] | tuple[torch.Tensor, list[torch.Tensor]]:
        """Forward returning the outputs of the stages in ``indices`` (None = all, int = last n).

        ``norm`` is accepted for API compatibility (the backbone has no final norm); ``stop_early`` stops
        after the last requested stage; ``output_fmt`` 'NCHW' or 'NHWC' applies to the intermediates.
        Returns ``(final features, intermediates)`` or only the intermediates.
        """
        if output_fmt not in ("NCHW", "NHWC"):
            raise ValueError(f"output_fmt: expected 'NCHW' or 'NHWC', got {output_fmt!r}")
        x = check_image_input(x, self.in_chans, self._min_input_size())
        take_indices, max_index = feature_take_indices(len(self.stages), indices)
        stages = self.stages if torch.jit.is_scripting() or not stop_early else self.stages[:max_index + 1]
        intermediates = []
        x = self.stem(x)
        for index, stage in enumerate(stages):
            x = stage(x)
            if index in take_indices:
                intermediates.append(x if output_fmt == "NCHW" else x.permute(0, 2, 3, 1))
        if intermediates_only:
            return intermediates
        return x, intermediates

    def prune_intermediate_layers(
        self, indices: int | list[int] = 1, prune_norm: bool = False, prune_head: bool = True,
    ) -> list[int]:
        """Drop the stages after the last of ``indices`` (and the head when ``prune_head`` or stages went)."""
        take_indices, max_index = feature_take_indices(len(self.stages), indices)
        pruned_end = max_index < len(self.stages) - 1
        self.stages = self.stages[:max_index + 1]
        if pruned_end:
            self.num_features = self.head_hidden_size = self.feature_info[max_index]["num_chs"]
        if prune_head or pruned_end:
            self.reset_classifier(0, "", reset_other=True)
        return take_indices

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, in_chans, H, W) -> final stage map (B, num_features, ceil(H/32), ceil(W/32))."""
        x = check_image_input(x, self.in_chans, self._min_input_size())
        return self.stages(self.stem(x))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        return self.head(x, pre_logits=pre_logits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


# -------------------------------------------------------------------- released checkpoints
# released key prefix (regex) -> ours; the first match applies
_OFFICIAL_PREFIXES = (
    (r"^patch_embed\.proj\.(0|3|6|9)\.", lambda m: f"stem.conv{int(m[1]) // 3 + 1}.conv."),
    (r"^patch_embed\.proj\.(1|4|7|10)\.", lambda m: f"stem.conv{int(m[1]) // 3 + 1}.bn."),
    (r"^layers\.(\d+)\.downsample\.reduction\.", lambda m: f"stages.{int(m[1]) + 1}.downsample.conv."),
    (r"^layers\.(\d+)\.downsample\.norm\.", lambda m: f"stages.{int(m[1]) + 1}.downsample.bn."),
    (r"^layers\.(\d+)\.blocks\.", r"stages.\1.blocks."),
    (r"^proj\.", "head.proj."),
    (r"^norm\.", "head.norm."),
    (r"^head\.", "head.fc."),
)
# released names inside a block -> ours; all apply
_OFFICIAL_BLOCK_NAMES = (
    (r"\.gamma_(\d)$", r".ls\1.gamma"),
    (r"\.norm(\d)\.norm\.", r".norm\1."),
    (r"\.cpe(\d)\.", r".pos_conv\1."),
    (r"\.attn\.out_proj\.", ".attn.proj."),
    (r"\.attn\.ln\.", ".attn.norm."),
    (r"\.ffn\.", ".mlp."),
)
_OFFICIAL_ROPE = re.compile(r"^layers\.(\d+)\.RoPE\.angle$")


def _rename_official(key: str) -> str:
    for pattern, replacement in _OFFICIAL_PREFIXES:
        key, hits = re.subn(pattern, replacement, key, count=1)
        if hits:
            break
    if key.startswith("stages.") and ".blocks." in key:
        for pattern, replacement in _OFFICIAL_BLOCK_NAMES:
            key = re.sub(pattern, replacement, key)
    return key


def _unwrap_checkpoint(checkpoint: dict) -> dict:
    for key in ("model", "state_dict"):
        if isinstance(checkpoint.get(key), dict):
            return checkpoint[key]
    return checkpoint


def _check_rope_angle(stage: int, angle: torch.Tensor, model: NaLaFormer) -> None:
    """The released RoPE buffer (head_dim / 2 frequencies) reveals the checkpoint's head dim: it must match
    the model's (q/k/v weights alone cannot tell the head count) and hold the standard frequencies."""
    head_dim = 2 * angle.numel()
    if stage < len(model.stages):
        model_head_dim = model.stages[stage].blocks[0].attn.head_dim if len(model.stages[stage].blocks) else head_dim
        if model_head_dim != head_dim:
            raise RuntimeError(f"layers.{stage}.RoPE.angle: the checkpoint's stage {stage} has head dim {head_dim}, "
                               f"this model's has {model_head_dim} (check num_heads)")
    expected = (1.0 / 10000 ** torch.linspace(0, 1, head_dim // 4, dtype=torch.float64)).repeat_interleave(2)
    if angle.shape != expected.shape or not torch.allclose(angle.double().cpu(), expected, rtol=1e-5, atol=0):
        raise RuntimeError(f"layers.{stage}.RoPE.angle: expected the standard 2-D rotary frequencies "
                           f"(base 10000) for head dim {head_dim}, got {angle.flatten()[:4].tolist()}...")


def _convert_official(state_dict: dict, model: NaLaFormer) -> dict:
    out = {}
    for key, value in state_dict.items():
        rope = _OFFICIAL_ROPE.match(key)
        if rope:  # a buffer of the released code; our tables are recomputed per grid
            _check_rope_angle(int(rope[1]), value, model)
            continue
        new_key = _rename_official(key)
        if new_key.endswith(".gamma"):
            value = value.reshape(-1)  # (1, C, 1, 1) -> (C,)
        elif new_key == "head.fc.weight" and value.dim() == 4:
            value = value.flatten(1)  # 1x1 conv -> Linear
        out[new_key] = value
    return out


def _adapt_classifier(state_dict: dict, model: NaLaFormer) -> dict:
    """Keep the checkpoint's classifier only where it fits; otherwise keep the model's own (new) one."""
    own = {k: v for k, v in model.state_dict().items() if k.startswith("head.fc.")}
    theirs = {k: v for k, v in state_dict.items() if k.startswith("head.fc.")}
    if all(k in theirs and theirs[k].shape == v.shape for k, v in own.items()) and set(theirs) == set(own):
        return state_dict
    if theirs and own:  # a model without classifier (num_classes=0) simply drops the checkpoint's
        _logger.warning("checkpoint classifier %s does not fit this model's (%s): keeping the new classifier",
                        {k: tuple(v.shape) for k, v in theirs.items()}, {k: tuple(v.shape) for k, v in own.items()})
    state_dict = {k: v for k, v in state_dict.items() if not k.startswith("head.fc.")}
    state_dict.update(own)
    return state_dict


def checkpoint_filter_fn(state_dict: dict, model: NaLaFormer) -> dict:
    """Map a released NaLaFormer state dict (or one of ours; bare or under 'model' / 'state_dict') onto ``model``.

    Renames the official keys, reshapes LayerScale and the 1x1-conv classifier, drops the RoPE buffers
    (after checking their frequencies), swaps in the model's own classifier when the class counts differ,
    and raises a RuntimeError listing every missing or unexpected key: a checkpoint never loads partially.
    """
    state_dict = _unwrap_checkpoint(state_dict)
    if "stem.conv1.conv.weight" not in state_dict:
        state_dict = _convert_official(state_dict, model)
    state_dict = _adapt_classifier(state_dict, model)
    expected = set(model.state_dict())
    missing, unexpected = sorted(expected - set(state_dict)), sorted(set(state_dict) - expected)
    if missing or unexpected:
        raise RuntimeError(f"checkpoint does not match this NaLaFormer: missing keys {missing}; "
                           f"unexpected keys {unexpected} (check the constructor config: dims, depths, heads, "
                           f"mlp ratios, LayerScale, head_hidden_size)")
    return state_dict


# -------------------------------------------------------------------- configs and entrypoints
def _cfg(url: str = "", **kwargs) -> dict:
    return {
        "url": url,
        "num_classes": 1000, "input_size": (3, 224, 224), "pool_size": (7, 7),
        "crop_pct": 0.875, "interpolation": "bicubic", "fixed_input_size": False,
        "mean": IMAGENET_DEFAULT_MEAN, "std": IMAGENET_DEFAULT_STD,
        "first_conv": "stem.conv1.conv", "classifier": "head.fc",
        "paper_ids": "arXiv:2506.21137", "paper_name": "NaLaFormer: Norm-Aware Linear Attention for Transformer Models",
        "origin_url": "https://github.com/ZacharyMeng/NaLaFormer", "license": "mit",
        **kwargs,
    }


default_cfgs = generate_default_cfgs({
    "nalaformer_xt": _cfg(),
    "nalaformer_t": _cfg(),
    "nalaformer_s": _cfg(),
    "nalaformer_b": _cfg(),
    "nalaformer_l": _cfg(),
    "nalaformer_t_paper": _cfg(),
})


def _local_checkpoint_overlay(kwargs: dict) -> dict | None:
    """A local checkpoint file's class count is unknown to the cfg: let checkpoint_filter_fn judge the
    classifier (it keeps it when it fits this model) instead of timm discarding it for a 1000-class cfg."""
    overlay = dict(kwargs.get("pretrained_cfg_overlay") or {})
    if ("file" in overlay or "state_dict" in overlay) and "num_classes" not in overlay:
        overlay["num_classes"] = kwargs.get("num_classes", 1000)
    return overlay or None


def _create_nalaformer(variant: str, pretrained: bool = False, **kwargs) -> NaLaFormer:
    if pretrained:
        kwargs["pretrained_cfg_overlay"] = _local_checkpoint_overlay(kwargs)
    return build_model_with_cfg(
        NaLaFormer, variant, pretrained,
        pretrained_filter_fn=checkpoint_filter_fn,
        feature_cfg=dict(out_indices=(0, 1, 2, 3), feature_cls="getter"),
        **kwargs,
    )


def _entrypoint(variant: str, pretrained: bool, released: dict, kwargs: dict) -> NaLaFormer:
    return _create_nalaformer(variant, pretrained=pretrained, **dict(released, **kwargs))


@register_model
def nalaformer_xt(pretrained: bool = False, **kwargs) -> NaLaFormer:
    """NaLaFormer-XT, released config (6.1M params)."""
    return _entrypoint("nalaformer_xt", pretrained, dict(
        embed_dims=(32, 64, 128, 384), depths=(2, 2, 2, 2), num_heads=(1, 2, 4, 12), mlp_ratios=3.5,
        layer_scale_init_values=(1.0, 1.0, 1.0, 1.0), drop_path_rate=0.1), kwargs)


@register_model
def nalaformer_t(pretrained: bool = False, **kwargs) -> NaLaFormer:
    """NaLaFormer-T, released config (15.9M params; the paper's 15M/2.7G is ``nalaformer_t_paper``)."""
    return _entrypoint("nalaformer_t", pretrained, dict(
        embed_dims=(64, 128, 256, 512), depths=(2, 2, 6, 2), num_heads=(1, 2, 4, 8), mlp_ratios=4.0,
        layer_scale_init_values=(1.0, 1.0, 1.0, 1.0), drop_path_rate=0.1), kwargs)


@register_model
def nalaformer_t_paper(pretrained: bool = False, **kwargs) -> NaLaFormer:
    """NaLaFormer-T as in the paper's table: the released T with mlp ratio 3.5 (14.9M params)."""
    return _entrypoint("nalaformer_t_paper", pretrained, dict(
        embed_dims=(64, 128, 256, 512), depths=(2, 2, 6, 2), num_heads=(1, 2, 4, 8), mlp_ratios=3.5,
        layer_scale_init_values=(1.0, 1.0, 1.0, 1.0), drop_path_rate=0.1), kwargs)


@register_model
def nalaformer_s(pretrained: bool = False, **kwargs) -> NaLaFormer:
    """NaLaFormer-S, released config (25.7M params)."""
    return _entrypoint("nalaformer_s", pretrained, dict(
        embed_dims=(64, 128, 320, 512), depths=(3, 5, 9, 3), num_heads=(1, 2, 5, 8), mlp_ratios=3.5,
        layer_scale_init_values=(1.0, 1.0, 1.0, 1.0), drop_path_rate=0.15), kwargs)


@register_model
def nalaformer_b(pretrained: bool = False, **kwargs) -> NaLaFormer:
    """NaLaFormer-B, released config (52.0M params)."""
    return _entrypoint("nalaformer_b", pretrained, dict(
        embed_dims=(96, 192, 384, 512), depths=(4, 6, 12, 6), num_heads=(1, 2, 6, 8), mlp_ratios=4.0,
        layer_scale_init_values=(1.0, 1.0, 1e-6, 1e-6), drop_path_rate=0.4), kwargs)


@register_model
def nalaformer_l(pretrained: bool = False, **kwargs) -> NaLaFormer:
    """NaLaFormer-L, released config (95.4M params)."""
    return _entrypoint("nalaformer_l", pretrained, dict(
        embed_dims=(96, 192, 448, 640), depths=(4, 7, 19, 8), num_heads=(1, 2, 7, 10), mlp_ratios=3.5,
        layer_scale_init_values=(1e-6, 1e-6, 1e-6, 1e-6), drop_path_rate=0.55), kwargs)
