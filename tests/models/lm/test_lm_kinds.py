"""Every attention kind in the causal LM: cached decoding == full forward, generate(), padding and packing,
config-time refusal of unknown kinds and bad NaLa hyper-parameters."""

from __future__ import annotations

import pytest
import torch

from nalaformer.layers import KINDS
from nalaformer.models.lm import NaLaConfig
from tests.models.lm.helpers import cache_of, random_ids, tiny_model

PAD = 257
NEW_KINDS = ("relu_linear", "elu_linear", "focused", "polarity", "nala_cosine", "softmax")


def _kind_model(kind, **overrides):
    model = tiny_model("nala", attn_type=kind, **overrides)
    with torch.no_grad():  # move the learned per-channel values of focused / polarity off their init
        for name, p in model.named_parameters():
            if ".core." in name:
                p.copy_(torch.randn(p.shape, generator=torch.Generator().manual_seed(3)) * 0.5)
    return model


def _prefill_then_decode(model, ids, prefill: int) -> torch.Tensor:
    """Logits of ``ids`` from a cached prefill of ``prefill`` tokens, then one cached token at a time."""
    out = model(ids[:, :prefill], use_cache=True)
    cache, logits = cache_of(out), [out.logits]
    for t in range(prefill, ids.shape[1]):
        out = model(ids[:, t:t + 1], past_key_values=cache, use_cache=True)
        cache, logits = cache_of(out), logits + [out.logits]
    return torch.cat(logits, 1)


@pytest.mark.parametrize("kind", NEW_KINDS)
@torch.no_grad()
def test_prefill_then_decode_equals_full_forward(kind):
    model = _kind_model(kind, short_conv_size=3)
    assert all(layer.self_attn.kind == kind for layer in model.model.layers)
    ids = random_ids(2, 21)
    full = model(ids).logits
    assert (full - _prefill_then_decode(model, ids, 8)).abs().max() <= 1e-5


@pytest.mark.parametrize("kind", NEW_KINDS)
@torch.no_grad()
def test_generate_matches_greedy_without_cache_and_padding_is_invisible(kind):
    model = _kind_model(kind)
    ids = random_ids(2, 5)
    greedy = model.generate(ids, max_new_tokens=4, do_sample=False, pad_token_id=PAD)
    reference = ids
    for _ in range(4):
        reference = torch.cat([reference, model(reference, use_cache=False).logits[:, -1:].argmax(-1)], 1)
    assert torch.equal(greedy, reference)
    rows = [random_ids(1, 7, seed=5)[0], random_ids(1, 3, seed=6)[0]]
    padded = torch.full((2, 7), PAD)
    mask = torch.zeros(2, 7, dtype=torch.long)
    for i, row in enumerate(rows):
        padded[i, 7 - len(row):], mask[i, 7 - len(row):] = row, 1
    batched = model.generate(padded, attention_mask=mask, max_new_tokens=3, do_sample=False, pad_token_id=PAD)
    for i, row in enumerate(rows):
        alone = model.generate(row[None], max_new_tokens=3, do_sample=False, pad_token_id=PAD)
        assert torch.equal(batched[i, 7:], alone[0, len(row):])


@pytest.mark.parametrize("kind", ["focused", "polarity", "relu_linear"])
@torch.no_grad()
def test_packed_documents_do_not_leak(kind):
    model = _kind_model(kind)
    docs = [random_ids(1, n, seed=s)[0] for n, s in ((6, 7), (5, 8))]
    packed = model(torch.cat(docs)[None], cu_seqlens=torch.tensor([0, 6, 11])).logits[0]
    assert (packed - torch.cat([model(d[None]).logits[0] for d in docs])).abs().max() <= 1e-5


def test_hybrid_with_softmax_layers_and_training_step():
    model = _kind_model("polarity", softmax_layers=[1]).train()
    assert [layer.self_attn.kind for layer in model.model.layers] == ["polarity", "softmax"]
    ids = random_ids(2, 12)
    model(ids, labels=ids).loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(attn_type="linear"), ValueError, "attn_type: expected one of .*'focused'"),
    (dict(lam=float("inf")), ValueError, "lam: expected"),
    (dict(tau="0.5"), TypeError, "tau: expected"),
    (dict(nala_eps=-1.0), ValueError, "eps: expected"),
])
def test_config_refuses_unknown_kinds_and_bad_hyper_parameters(kwargs, error, match):
    with pytest.raises(error, match=match):
        NaLaConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=2, **kwargs)


def test_every_registry_kind_builds_and_round_trips(tmp_path):
    from nalaformer.models.lm import NaLaForCausalLM

    for kind in KINDS:
        model = _kind_model(kind)
        model.save_pretrained(tmp_path / kind)
        loaded = NaLaForCausalLM.from_pretrained(tmp_path / kind).eval()
        assert loaded.config.attn_type == kind
        ids = random_ids(1, 6)
        assert torch.equal(loaded(ids).logits, model(ids).logits)


@pytest.mark.parametrize("kind", tuple(KINDS))
@torch.no_grad()
def test_every_kind_sees_token_order(kind):
    """One layer, no short conv: the last token's output must change when two earlier tokens swap places.
    Without position information a linear kind's prefix sum is blind to order (it was, before the linear
    kinds took NaLa's rotary numerator)."""
    model = _kind_model(kind, num_hidden_layers=1)
    ids = random_ids(1, 9)
    swapped = ids.clone()
    swapped[:, [2, 5]] = ids[:, [5, 2]]
    assert not torch.equal(ids, swapped)
    last, last_swapped = model(ids).logits[:, -1], model(swapped).logits[:, -1]
    assert (last - last_swapped).abs().max() > 1e-4 * last.abs().max()


def _qkv_conv_model(kind, **overrides):
    """short_conv_on="qkv" with conv weights moved off their identity init (else the conv is a no-op)."""
    model = _kind_model(kind, short_conv_size=3, short_conv_on="qkv", **overrides)
    with torch.no_grad():
        for layer in model.model.layers:
            conv = layer.self_attn.short_conv
            assert conv.weight.shape[0] == 3 * layer.self_attn.num_heads * layer.self_attn.head_dim
            conv.weight.copy_(torch.randn(conv.weight.shape, generator=torch.Generator().manual_seed(4)) * 0.5)
    return model


@pytest.mark.parametrize("kind", ["nala", "relu_linear", "softmax"])
@torch.no_grad()
def test_qkv_short_conv_decodes_packs_and_round_trips(kind, tmp_path):
    from nalaformer.models.lm import NaLaForCausalLM

    model = _qkv_conv_model(kind)
    ids = random_ids(2, 13)
    full = model(ids).logits
    assert (full - _prefill_then_decode(model, ids, 5)).abs().max() <= 1e-5
    docs = [random_ids(1, n, seed=s)[0] for n, s in ((6, 7), (5, 8))]
    packed = model(torch.cat(docs)[None], cu_seqlens=torch.tensor([0, 6, 11])).logits[0]
    assert (packed - torch.cat([model(d[None]).logits[0] for d in docs])).abs().max() <= 1e-5
    model.save_pretrained(tmp_path / kind)
    loaded = NaLaForCausalLM.from_pretrained(tmp_path / kind).eval()
    assert loaded.config.short_conv_on == "qkv" and torch.equal(loaded(ids).logits, full)


@torch.no_grad()
def test_qkv_short_conv_changes_what_a_token_sees_of_the_tokens_before_it():
    """The conv on q, k, v mixes each token with the ones just before it: swapping two tokens changes the last
    token's output beyond what the rotary numerator alone does."""
    ids = random_ids(1, 8)
    swapped = ids.clone()
    swapped[0, [2, 3]] = ids[0, [3, 2]]
    plain = _kind_model("relu_linear", num_hidden_layers=1, softmax_layers=[])
    conv = _qkv_conv_model("relu_linear", num_hidden_layers=1, softmax_layers=[])
    plain_gap = (plain(ids).logits[0, -1] - plain(swapped).logits[0, -1]).abs().max()
    conv_gap = (conv(ids).logits[0, -1] - conv(swapped).logits[0, -1]).abs().max()
    assert conv_gap > 1e-3 and not torch.allclose(conv_gap, plain_gap)
