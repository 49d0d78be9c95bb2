"""What every attention kind provides: one nn.Module "core" that mixes tokens of (B, N, H, D) heads.

A core is the token mixer alone (no projections): the vision frame (:mod:`..attention2d`) and the causal
language layer (:mod:`..causal_attention`) wrap the same core. It owns the kind's learnable per-channel
parameters, if any, and offers three views of the same attention:

- ``forward``: O(N) (or SDPA for softmax), causal or not, with the calling convention of ``nala_attention``;
- ``step``: one decoding token against a recurrent state (recurrent kinds);
- ``weights``: the explicit (B, H, [G,] Nq, Nk) rows, for analysis and tests; ``rows`` is the same as a
  classmethod on (..., N, D) tensors with the parameters given explicitly.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn

from ...ops.autocast import autocast_disabled
from ...ops.feature_maps import compute_dtype
from ...ops.linear_attn import linear_attention, linear_attention_weights, linear_decode_step, resolve_backend

__all__ = ["AttentionCore", "LinearAttentionCore"]


class AttentionCore(nn.Module):
    """Base of the attention kinds. q, k (B, N, H, D), v (B, N, H, Dv) -> (B, N, H, Dv).

    Class attributes: ``name`` (registry key), ``uses_rope`` (the layer passes rotary tables),
    ``causal_rope`` (the causal LM layer passes rotary tables even where the vision layer does not),
    ``recurrent`` (a fixed-size state for decoding), ``vision_dwc`` (kernel of a per-head depthwise
    conv on v the vision layer adds to the output, 0 = none), ``groups`` (value groups of the rows).
    """

    name: ClassVar[str] = ""
    uses_rope: ClassVar[bool] = False
    causal_rope: ClassVar[bool] = False
    recurrent: ClassVar[bool] = True
    vision_dwc: ClassVar[int] = 0
    groups: ClassVar[int] = 1

    def __init__(self, num_heads: int, head_dim: int, *, params=None):
        super().__init__()
        self.num_heads, self.head_dim = num_heads, head_dim

    def forward(self, q, k, v, *, causal: bool = False, rope=None, initial_state=None, output_final_state=False,
                cu_seqlens=None, max_seqlen=None, backend: str = "auto"):
        raise NotImplementedError

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """The papers' init of the learned per-channel values: zeros (focused: scale softplus(0) = ln 2;
        polarity: scale ln 2, power 1 + 4 * sigmoid(0) = 3)."""
        for param in self.parameters(recurse=False):
            param.zero_()

    def rope_dtype(self, dtype: torch.dtype) -> torch.dtype:
        """The dtype of the rotary tables this core wants for inputs of ``dtype``."""
        return compute_dtype(dtype)

    def step(self, q, k, v, state, *, rope=None):
        """One token per sequence: q, k (B, H, D), v (B, H, Dv) -> (o (B, H, Dv), new state)."""
        raise NotImplementedError(f"{self.name}: no recurrent state (decode through a key/value cache)")

    def weights(self, q: torch.Tensor, k: torch.Tensor, *, causal: bool = False) -> torch.Tensor:
        """Explicit rows with this core's parameters: q, k (B, N, H, D) -> (B, H, [G,] Nq, Nk)."""
        raise NotImplementedError

    @classmethod
    def rows(cls, q: torch.Tensor, k: torch.Tensor, *, causal: bool = False, **params) -> torch.Tensor:
        """Explicit rows, functional: q (..., Nq, D), k (..., Nk, D) -> (..., [G,] Nq, Nk)."""
        raise NotImplementedError


class LinearAttentionCore(AttentionCore):
    """A normalised linear attention defined by its feature maps (see :mod:`nalaformer.ops.linear_attn`).

    Subclasses define ``feature_maps(q, k, **params) -> (phi_q (..., G, F), phi_k (..., F))`` (a
    staticmethod, computing in float32, float64 for float64 input) and ``feature_params()`` (the learned
    values, broadcastable to (H, D)). ``eps``: the denominator epsilon.
    """

    # In a causal LM every kind gets the position information NaLa gets: rotary angles on the numerator's
    # features (the published kinds have none of their own there; in vision their layers' convs carry position).
    causal_rope = True

    def __init__(self, num_heads: int, head_dim: int, *, params=None, eps: float = 1e-6):
        super().__init__(num_heads, head_dim)
        self.eps = eps

    @staticmethod
    def feature_maps(q: torch.Tensor, k: torch.Tensor, **params) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def feature_params(self) -> dict:
        return {}

    def _features(self, q, k):
        return self.feature_maps(q, k, **self.feature_params())

    def forward(self, q, k, v, *, causal: bool = False, rope=None, initial_state=None, output_final_state=False,
                cu_seqlens=None, max_seqlen=None, backend: str = "auto"):
        backend = resolve_backend(backend, q, causal=causal, cu_seqlens=cu_seqlens)  # before the fp32 upcast
        with autocast_disabled(q.device.type):
            phq, phk = self._features(q, k)
            out = linear_attention(phq, phk, v.to(phq.dtype), causal=causal, eps=self.eps,
                                   initial_state=initial_state, output_final_state=output_final_state,
                                   cu_seqlens=cu_seqlens, backend=backend, rope=rope, head_dim=q.shape[-1])
        if output_final_state:
            return out[0].to(q.dtype), out[1]
        return out.to(q.dtype)

    def step(self, q, k, v, state, *, rope=None):
        with autocast_disabled(q.device.type):
            phq, phk = self._features(q, k)
            o, new = linear_decode_step(phq, phk, v.to(phq.dtype), state, eps=self.eps, rope=rope,
                                        head_dim=q.shape[-1])
        return o.to(q.dtype), new

    def weights(self, q, k, *, causal: bool = False):
        phq, phk = self._features(q, k)  # (B, N, H, G, F), (B, N, H, F)
        w = linear_attention_weights(phq.transpose(1, 2), phk.transpose(1, 2), causal=causal, eps=self.eps)
        return w.squeeze(-3) if self.groups == 1 else w

    @classmethod
    def rows(cls, q, k, *, causal: bool = False, eps: float = 1e-6, **params):
        phq, phk = cls.feature_maps(q, k, **params)
        w = linear_attention_weights(phq, phk, causal=causal, eps=eps)
        return w.squeeze(-3) if cls.groups == 1 else w


def as_compute(x: torch.Tensor) -> torch.Tensor:
    """x in the feature maps' compute dtype (float32; float64 stays float64)."""
    return x.to(compute_dtype(x.dtype))
