"""``NaLaCache``: the generation cache of NaLa language models.

NaLa layers keep the op's recurrent state (prefix sums of size H x 2D x Dv per row, plus the last
K-1 inputs of the optional short conv): its memory does not grow with the context. Softmax layers of
hybrid models keep the usual growing key/value store (memory linear in the context).

The class is duck-typed to what ``transformers.generate`` asks of a cache in the 5.x releases
(``get_seq_length``, ``reorder_cache``, ``is_compileable``, ``is_croppable``, ``is_linear``) rather
than subclassing ``transformers.Cache``, whose constructor and internals change between releases.
It cannot be cropped, so assisted/speculative decoding is not available (the model says it is
stateful).
"""

from __future__ import annotations

import torch

from ...layers.causal_attention import CausalAttentionState

__all__ = ["NaLaCache"]


class NaLaCache:
    """Per-layer :class:`CausalAttentionState` plus per-row token counts.

    states: one state per layer (None until the first forward fills it).
    seen:   (B,) int64 real (non-padding) tokens each row holds; rotary positions continue from it.
    length: grid columns consumed so far, padding included (what ``get_seq_length`` reports).
    """

    is_compileable = False
    is_croppable = False

    def __init__(self, num_layers: int):
        self.states: list[CausalAttentionState | None] = [None] * num_layers
        self.seen: torch.Tensor | None = None
        self.length = 0

    def __len__(self) -> int:
        return len(self.states)

    def __repr__(self) -> str:
        rows = None if self.seen is None else self.seen.numel()
        return f"NaLaCache(layers={len(self)}, rows={rows}, length={self.length}, bytes={self.nbytes()})"

    @property
    def is_linear(self) -> list[bool]:
        """False everywhere: the cache knows its length, so ``generate`` may slice inputs by it."""
        return [False] * len(self.states)

    def get_seq_length(self, layer_idx: int | None = 0) -> int:
        return self.length

    def advance(self, new_tokens: torch.Tensor, columns: int) -> None:
        """Count ``new_tokens`` (B,) real tokens and ``columns`` grid columns just processed."""
        self.seen = new_tokens.clone() if self.seen is None else self.seen + new_tokens
        self.length += columns

    def reorder_cache(self, beam_idx: torch.Tensor) -> None:
        """Select/reorder rows in place (beam search)."""
        self.states = [None if s is None else s.index_select(beam_idx.to(self._device(s))) for s in self.states]
        if self.seen is not None:
            self.seen = self.seen.index_select(0, beam_idx.to(self.seen.device))

    def nbytes(self) -> int:
        """Bytes held by all layer states."""
        return sum(s.nbytes() for s in self.states if s is not None)

    @staticmethod
    def _device(state: CausalAttentionState) -> torch.device:
        for part in state:
            if part is not None:
                return part[0].device if isinstance(part, tuple) else part.device
        return torch.device("cpu")
