"""TokenLayout: the packed view's offsets and its longest sequence (read once per forward)."""

from __future__ import annotations

import torch

import nalaformer.layers.kinds.nala as nala_core
from nalaformer.layers.causal_layout import build_layout


def test_padding_layout_has_offsets_and_longest_sequence():
    valid = torch.tensor([[False, False, True, True, True], [True, True, True, True, True]])
    layout = build_layout(2, 5, device=torch.device("cpu"), valid=valid)
    assert layout.packed
    assert layout.cu_seqlens.tolist() == [0, 3, 8]
    assert layout.max_seqlen == 5


def test_documents_layout_longest_sequence():
    layout = build_layout(1, 10, device=torch.device("cpu"), cu_seqlens=torch.tensor([0, 2, 9, 10]))
    assert layout.cu_seqlens.tolist() == [0, 2, 9, 10]
    assert layout.max_seqlen == 7
    plain = build_layout(2, 4, device=torch.device("cpu"))
    assert not plain.packed and plain.max_seqlen is None


def test_packed_attention_calls_carry_the_hint(monkeypatch):
    """Every layer's packed op call gets max_seqlen, so the Triton path never reads the offsets back."""
    from tests.models.lm.helpers import tiny_model

    seen = []
    real = nala_core.nala_attention  # the NaLa kind's core makes the op call

    def recording(*args, **kwargs):
        seen.append((kwargs.get("cu_seqlens") is not None, kwargs.get("max_seqlen")))
        return real(*args, **kwargs)
    monkeypatch.setattr(nala_core, "nala_attention", recording)
    model = tiny_model("nala")
    ids = torch.randint(0, 256, (1, 12))
    with torch.no_grad():
        model(ids, cu_seqlens=torch.tensor([0, 5, 12]))
    assert seen and all(packed and hint == 7 for packed, hint in seen)
