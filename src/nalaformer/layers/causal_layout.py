"""Where the tokens of a (B, N) batch sit in independent causal sequences.

A causal language model sees a grid of B rows by N tokens, but the sequences it must keep apart
are not always the rows: left/right padding leaves holes (padded tokens must enter no sum and no
normaliser), packed training puts several documents in one row, and cached rows may already hold
different numbers of tokens. :class:`TokenLayout` describes all of that once per forward pass; the
attention layers use it to run the op either on the plain batch (the fast path) or on a packed
view that holds only real tokens, one segment per sequence (``cu_seqlens``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..ops import rope_1d

__all__ = ["TokenLayout", "build_layout"]


@dataclass
class TokenLayout:
    """Token grid -> sequences map for one forward pass.

    positions:   (B, N) int64 rotary position of every token (0 for padding).
    valid:       (B, N) bool, False for padding; None when every token is real.
    segment_ids: (B, N) int64 sequence id of every token (-1 for padding); None when rows are sequences.
    token_index: (T,) flat grid indices of the real tokens, sequence after sequence (packed view only).
    cu_seqlens:  (S+1,) offsets of the sequences in the packed view (packed view only).
    seq_row:     (S,) grid row whose cached state each packed sequence continues (None: fresh sequences).
    max_seqlen:  the longest packed sequence (packed view only), read once here so that the attention
                 calls of every layer need not read ``cu_seqlens`` back from the device.
    """

    batch: int
    length: int
    positions: torch.Tensor
    valid: torch.Tensor | None = None
    segment_ids: torch.Tensor | None = None
    token_index: torch.Tensor | None = None
    cu_seqlens: torch.Tensor | None = None
    seq_row: torch.Tensor | None = None
    max_seqlen: int | None = None
    _tables: dict = field(default_factory=dict, repr=False)

    @property
    def packed(self) -> bool:
        """True when the op must run on the packed view (padding, documents or per-row offsets)."""
        return self.token_index is not None

    @property
    def rows_are_sequences(self) -> bool:
        """True when every row is one sequence (so a per-row cache state can continue it)."""
        return not self.packed or self.seq_row is not None

    def pack(self, x: torch.Tensor) -> torch.Tensor:
        """(B, N, ...) -> (1, T, ...): the real tokens, sequence after sequence."""
        return x.flatten(0, 1).index_select(0, self.token_index).unsqueeze(0)

    def unpack(self, y: torch.Tensor) -> torch.Tensor:
        """(1, T, ...) -> (B, N, ...), zeros at padded positions."""
        out = y.new_zeros((self.batch * self.length,) + tuple(y.shape[2:]))
        return out.index_copy(0, self.token_index, y[0]).unflatten(0, (self.batch, self.length))

    def rope(self, head_dim: int, base: float, *, view: str, dtype=torch.float32):
        """Rotary ``(sin, cos)`` tables (one value per pair: D below is head_dim / 2), computed once per pass
        and shared by all layers.

        view: ``"shared"`` (N, D) from row 0 (plain path with N > 1: rows share positions),
        ``"packed"`` (T, D), ``"grid"`` (B, N, D), ``"last"`` (B, D) for the last column (decoding).
        """
        key = (head_dim, base, view, dtype)
        if key not in self._tables:
            pos = {"shared": lambda: self.positions[0], "packed": lambda: self.positions.flatten()[self.token_index],
                   "grid": lambda: self.positions.flatten(), "last": lambda: self.positions[:, -1]}[view]()
            sin, cos = rope_1d(pos, head_dim, base, dtype=dtype, per_pair=True)
            if view == "grid":
                sin, cos = sin.unflatten(0, (self.batch, self.length)), cos.unflatten(0, (self.batch, self.length))
            self._tables[key] = (sin, cos)
        return self._tables[key]

    def attention_mask(self) -> torch.Tensor | None:
        """(B, N, N) bool: query i may attend key j (causal, same sequence, real key). None = plain causal.

        The diagonal is always allowed so padded queries never produce an all-masked (NaN) row.
        """
        if self.valid is None and self.segment_ids is None:
            return None
        n = self.length
        device = self.positions.device
        mask = torch.ones(n, n, dtype=torch.bool, device=device).tril().expand(self.batch, n, n)
        if self.valid is not None:
            mask = mask & self.valid[:, None, :]
        if self.segment_ids is not None:
            mask = mask & (self.segment_ids[:, :, None] == self.segment_ids[:, None, :])
        return mask | torch.eye(n, dtype=torch.bool, device=device)


def _segment_starts(group: torch.Tensor, valid_flat: torch.Tensor | None,
                    positions_flat: torch.Tensor | None) -> torch.Tensor:
    """Bool (B*N,) marking the first real token of every sequence.

    group: (B*N,) row (or document) of every token; a new sequence starts where the group of
    consecutive real tokens changes, and, with ``positions_flat``, at every real token at position 0.
    """
    index = torch.arange(group.numel(), device=group.device)
    real = index[valid_flat] if valid_flat is not None else index
    g = group[real]
    starts = torch.ones_like(g, dtype=torch.bool)
    starts[1:] = g[1:] != g[:-1]
    if positions_flat is not None:
        starts |= positions_flat[real] == 0
    return torch.zeros_like(group, dtype=torch.bool).index_put_((real,), starts)


def build_layout(
    batch: int,
    length: int,
    *,
    device: torch.device,
    valid: torch.Tensor | None = None,
    position_ids: torch.Tensor | None = None,
    cu_seqlens: torch.Tensor | None = None,
    past_counts: torch.Tensor | None = None,
) -> TokenLayout:
    """Describe a (B, N) batch.

    valid: (B, N) bool or None (all real). position_ids: (B, N) or (1, N); a real token at position 0
    that is not the first of its row starts a new document (packed training). cu_seqlens: (S+1,) offsets
    of packed documents (B must be 1; positions restart per document unless given). past_counts: (B,)
    tokens each row already holds in a cache: positions then continue from it (``position_ids`` is
    ignored, so right-padded rows stay exact) and packed documents are refused.
    """
    if valid is None and cu_seqlens is None and position_ids is None and past_counts is None:
        # a plain batch (training, scoring): every row one sequence from position 0, no device sync
        return TokenLayout(batch, length, torch.arange(length, device=device).expand(batch, length))
    if valid is not None and bool(valid.all()):
        valid = None
    if length == 1 and valid is None and cu_seqlens is None:  # decoding: one real token per row, no sync
        positions = past_counts[:, None] if past_counts is not None else (
            position_ids.to(device=device, dtype=torch.int64).expand(batch, 1) if position_ids is not None
            else torch.zeros(batch, 1, dtype=torch.int64, device=device))
        return TokenLayout(batch, length, positions)
    valid_flat = None if valid is None else valid.flatten()
    has_past = past_counts is not None and bool((past_counts > 0).any())
    rows = torch.arange(batch * length, device=device) // length
    if cu_seqlens is not None:
        if batch != 1:
            raise ValueError(f"cu_seqlens: packed documents need batch size 1, got {batch} rows")
        if has_past:
            raise ValueError("cu_seqlens: packed documents cannot continue a cache (past_key_values)")
        offsets = cu_seqlens.to(device=device, dtype=torch.int64)
        if offsets.dim() != 1 or offsets.numel() < 2 or int(offsets[0]) != 0 or int(offsets[-1]) != length \
                or bool((offsets.diff() < 0).any()):
            raise ValueError(f"cu_seqlens: expected non-decreasing offsets from 0 to the length {length}, "
                             f"got {cu_seqlens.tolist()}")
        doc = torch.repeat_interleave(torch.arange(offsets.numel() - 1, device=device), offsets.diff())
        positions = (torch.arange(length, device=device) - offsets[doc])[None] if position_ids is None \
            else position_ids.to(device=device, dtype=torch.int64)
        return _packed_layout(batch, length, positions, valid, _segment_starts(doc, valid_flat, None), fresh=True)

    if position_ids is None or has_past:
        past = past_counts if past_counts is not None else torch.zeros(batch, dtype=torch.int64, device=device)
        if valid is None:
            positions = past[:, None] + torch.arange(length, device=device)
        else:
            positions = (past[:, None] + valid.long().cumsum(1) - 1).clamp_min(0) * valid
        starts = _segment_starts(rows, valid_flat, None)
    else:
        positions = position_ids.to(device=device, dtype=torch.int64).expand(batch, length)
        starts = _segment_starts(rows, valid_flat, positions.flatten())
    positions = positions.to(torch.int64)
    rows_with_tokens = batch if valid is None else int(valid.any(1).sum())
    rows_are_sequences = int(starts.sum()) == rows_with_tokens
    if not rows_are_sequences and has_past:
        raise ValueError("position_ids: packed documents cannot continue a cache (past_key_values)")
    if rows_are_sequences and valid is None and bool((positions == positions[:1]).all()):
        return TokenLayout(batch, length, positions)  # plain path: one shared rotary table
    return _packed_layout(batch, length, positions, valid, starts, fresh=not rows_are_sequences)


def _packed_layout(batch: int, length: int, positions: torch.Tensor, valid: torch.Tensor | None,
                   starts: torch.Tensor, *, fresh: bool) -> TokenLayout:
    """Packed view: real tokens in grid order, a new segment at every start flag."""
    device = positions.device
    positions = positions.expand(batch, length)
    token_index = torch.arange(batch * length, device=device)
    if valid is not None:
        token_index = token_index[valid.flatten()]
    seg_of_token = starts[token_index].long().cumsum(0) - 1  # (T,)
    num_seqs = int(starts.sum())
    lengths = torch.bincount(seg_of_token, minlength=num_seqs)
    cu_seqlens = torch.nn.functional.pad(lengths.cumsum(0), (1, 0))
    segment_ids = torch.full((batch * length,), -1, dtype=torch.int64, device=device)
    segment_ids[token_index] = seg_of_token
    seq_row = None if fresh else token_index[cu_seqlens[:-1]] // length
    max_seqlen = int(lengths.max()) if num_seqs else 0
    return TokenLayout(batch, length, positions, valid, segment_ids.view(batch, length), token_index, cu_seqlens,
                       seq_row, max_seqlen)
