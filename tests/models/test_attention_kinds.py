"""Every attention kind in the NaLaFormer frame: timm construction, parameter counts, training step,
meta-device init, and the frame's mixer == the kind's explicit rows."""

from __future__ import annotations

import pytest
import timm
import torch

from nalaformer.layers import KINDS, KindAttention2d
from tests.conftest import rel_err
from tests.models.helpers import tiny_model

NEW_KINDS = ("relu_linear", "elu_linear", "focused", "polarity", "nala_cosine")


def test_parameter_counts_of_all_kinds_within_a_few_percent():
    with torch.device("meta"):
        counts = {kind: sum(p.numel() for p in timm.create_model("nalaformer_t", attn_types=kind).parameters())
                  for kind in KINDS}
    assert counts["nala"] == 15_907_752  # the released size is untouched
    assert max(counts.values()) / min(counts.values()) < 1.01, counts


@pytest.mark.parametrize("kind", NEW_KINDS)
def test_every_stage_takes_the_kind_and_trains(kind, one_thread):
    torch.manual_seed(0)
    model = tiny_model(attn_types=kind).train()
    assert all(block.attn.kind == kind for stage in model.stages for block in stage.blocks)
    x = torch.randn(2, 3, 32, 32)
    loss = model(x).logsumexp(-1).mean()
    loss.backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)  # every parameter is used


def test_per_stage_list_and_unknown_kind():
    model = tiny_model(attn_types=("focused", "polarity", "relu_linear", "softmax"))
    assert [s.blocks[0].attn.kind for s in model.stages] == ["focused", "polarity", "relu_linear", "softmax"]
    with pytest.raises(ValueError, match="attn_types: expected one of .*'polarity'.*got 'linear'"):
        tiny_model(attn_types="linear")


@pytest.mark.parametrize("kind", ["focused", "polarity"])
def test_meta_device_init_restores_the_learned_values(kind):
    with torch.device("meta"):
        model = tiny_model(attn_types=kind)
    model.to_empty(device="cpu")
    model.init_weights()
    core = model.stages[0].blocks[0].attn.core
    assert all(torch.equal(p, torch.zeros_like(p)) for p in core.parameters())


@pytest.mark.parametrize("kind", [k for k in KINDS if not KINDS[k].uses_rope])
def test_mixer_is_the_kinds_rows_plus_its_local_branch(kind):
    torch.manual_seed(1)
    layer = KindAttention2d(16, 2, kind=kind).double()
    q, k, v = (torch.randn(2, 12, 2, 8, dtype=torch.float64) for _ in range(3))
    out = layer.mix(q, k, v, (3, 4))
    w = layer.core.weights(q, k)
    vt = v.transpose(1, 2)
    rows = (torch.einsum("bhgij,bhjge->bhige", w, vt.unflatten(-1, (2, -1))).flatten(-2) if w.dim() == 5
            else w @ vt).transpose(1, 2)
    if layer.dwc is not None:
        local = layer.dwc(v.permute(0, 2, 3, 1).reshape(4, 8, 3, 4)).reshape(2, 2, 8, 12).permute(0, 3, 1, 2)
        rows = rows + local
    assert rel_err(out, rows) <= 1e-12
