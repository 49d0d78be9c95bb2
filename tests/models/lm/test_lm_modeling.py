"""NaLaForCausalLM: recurrent decoding, padding, packing, checkpointing and input errors."""

from __future__ import annotations

import pytest
import torch

from nalaformer.models.lm import NaLaCache, NaLaConfig, enable_gradient_checkpointing
from tests.models.lm.helpers import VARIANTS, cache_of, random_ids, tiny_model

PAD = 257


def _decode_stepwise(model, ids: torch.Tensor, prefill: int) -> torch.Tensor:
    """Logits of a prefill of ``prefill`` tokens then one token at a time through the cache."""
    out = model(ids[:, :prefill], use_cache=True)
    cache, logits = cache_of(out), [out.logits]
    for t in range(prefill, ids.shape[1]):
        out = model(ids[:, t:t + 1], past_key_values=cache, use_cache=True)
        cache = cache_of(out)
        logits.append(out.logits)
    return torch.cat(logits, 1)


@pytest.mark.parametrize("variant", sorted(VARIANTS))
@torch.no_grad()
def test_prefill_then_decode_equals_full_forward(variant):
    model = tiny_model(variant)
    ids = random_ids(2, 24)
    full = model(ids).logits
    assert (full - _decode_stepwise(model, ids, prefill=9)).abs().max() <= 1e-5


@torch.no_grad()
def test_chunked_prefill_equals_one_pass():
    model = tiny_model("hybrid-conv")
    ids = random_ids(2, 20)
    full = model(ids).logits
    cache, parts = None, []
    for chunk in (ids[:, :7], ids[:, 7:9], ids[:, 9:]):
        out = model(chunk, past_key_values=cache, use_cache=True)
        cache = cache_of(out)
        parts.append(out.logits)
    assert (full - torch.cat(parts, 1)).abs().max() <= 1e-5
    assert cache.get_seq_length() == 20 and cache.seen.tolist() == [20, 20]


def _padded(rows: list[torch.Tensor], width: int, left: bool) -> tuple[torch.Tensor, torch.Tensor]:
    ids = torch.full((len(rows), width), PAD)
    mask = torch.zeros(len(rows), width, dtype=torch.long)
    for i, row in enumerate(rows):
        cols = slice(width - len(row), width) if left else slice(0, len(row))
        ids[i, cols], mask[i, cols] = row, 1
    return ids, mask


@pytest.mark.parametrize("variant", ["nala", "hybrid-conv"])
@torch.no_grad()
def test_left_padded_batch_equals_rows_alone(variant):
    model = tiny_model(variant)
    rows = [random_ids(1, 11, seed=2)[0], random_ids(1, 5, seed=3)[0], random_ids(1, 8, seed=4)[0]]
    ids, mask = _padded(rows, 11, left=True)
    logits = model(ids, attention_mask=mask).logits
    for i, row in enumerate(rows):
        alone = model(row[None]).logits[0]
        assert (logits[i, 11 - len(row):] - alone).abs().max() <= 1e-5


@pytest.mark.parametrize("left", [True, False], ids=["left-pad", "right-pad"])
@pytest.mark.parametrize("variant", ["nala", "hybrid-conv"])
@torch.no_grad()
def test_padded_generation_equals_rows_alone(variant, left):
    """Padding never enters a state or a normaliser, so every row generates what it would alone."""
    model = tiny_model(variant)
    rows = [random_ids(1, 9, seed=5)[0], random_ids(1, 4, seed=6)[0]]
    ids, mask = _padded(rows, 9, left=left)
    batched = model.generate(ids, attention_mask=mask, max_new_tokens=6, do_sample=False, pad_token_id=PAD)
    for i, row in enumerate(rows):
        alone = model.generate(row[None], max_new_tokens=6, do_sample=False, pad_token_id=PAD)
        assert torch.equal(batched[i, 9:], alone[0, len(row):])


@torch.no_grad()
def test_padding_inside_cached_decoding_is_skipped():
    """A masked token in the middle of decoding enters no state (row 0 skips column 6)."""
    model = tiny_model("hybrid-conv")
    ids = random_ids(2, 8)
    cache = cache_of(model(ids[:, :6], use_cache=True))
    mask = torch.ones(2, 8, dtype=torch.long)
    mask[0, 6] = 0
    cache = cache_of(model(ids[:, 6:7], attention_mask=mask[:, :7], past_key_values=cache, use_cache=True))
    last = model(ids[:, 7:8], attention_mask=mask, past_key_values=cache, use_cache=True).logits[:, -1]
    row0 = model(torch.cat([ids[0, :6], ids[0, 7:]])[None]).logits[0, -1]
    assert (last[0] - row0).abs().max() <= 1e-5
    assert (last[1] - model(ids[1:]).logits[0, -1]).abs().max() <= 1e-5
    assert cache.seen.tolist() == [7, 8]  # the cache object is updated in place


@pytest.mark.parametrize("variant", ["nala", "hybrid-conv"])
@torch.no_grad()
def test_packed_documents_do_not_leak(variant):
    model = tiny_model(variant)
    doc_a, doc_b, doc_c = random_ids(1, 9, seed=7)[0], random_ids(1, 6, seed=8)[0], random_ids(1, 4, seed=9)[0]
    packed = torch.cat([doc_a, doc_b, doc_c])[None]
    alone = [model(d[None]).logits[0] for d in (doc_a, doc_b, doc_c)]
    by_offsets = model(packed, cu_seqlens=torch.tensor([0, 9, 15, 19])).logits[0]
    positions = torch.cat([torch.arange(9), torch.arange(6), torch.arange(4)])[None]
    by_positions = model(packed, position_ids=positions).logits[0]
    for logits in (by_offsets, by_positions):
        assert (logits - torch.cat(alone)).abs().max() <= 1e-5
    changed = packed.clone()
    changed[0, :9] = random_ids(1, 9, seed=10)[0]  # rewrite document A: B and C must not notice
    after = model(changed, position_ids=positions).logits[0]
    assert torch.equal(after[9:], by_positions[9:])


def test_packed_rows_with_batch_dimension():
    """position_ids restarting inside several rows: each (row, document) is its own sequence."""
    model = tiny_model()
    ids = random_ids(2, 10)
    positions = torch.tensor([[0, 1, 2, 3, 0, 1, 2, 3, 4, 5], [0, 1, 2, 0, 1, 2, 3, 4, 5, 6]])
    with torch.no_grad():
        logits = model(ids, position_ids=positions).logits
        assert (logits[1, 3:] - model(ids[1:, 3:]).logits[0]).abs().max() <= 1e-5
        assert (logits[0, 4:] - model(ids[:1, 4:]).logits[0]).abs().max() <= 1e-5


@torch.no_grad()
def test_nala_cache_memory_does_not_grow():
    model = tiny_model("nala", short_conv_size=4)
    cache = cache_of(model(random_ids(2, 8), use_cache=True))
    size_after_prefill = cache.nbytes()
    for t in range(40):
        cache = cache_of(model(random_ids(2, 1, seed=t), past_key_values=cache, use_cache=True))
    assert cache.nbytes() == size_after_prefill and cache.get_seq_length() == 48
    hybrid = tiny_model("hybrid-conv")
    small = cache_of(hybrid(random_ids(2, 8), use_cache=True)).nbytes()
    assert cache_of(hybrid(random_ids(2, 48), use_cache=True)).nbytes() > small  # softmax layers keep K/V


def test_gradient_checkpointing_gives_the_same_gradients():
    ids = random_ids(2, 16)
    grads = []
    for checkpointing in (False, True):
        model = tiny_model("hybrid-conv").train()
        if checkpointing:
            enable_gradient_checkpointing(model)
            assert model.model.gradient_checkpointing
        model(ids, labels=ids).loss.backward()
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters()]))
    assert torch.allclose(grads[0], grads[1], atol=1e-6)


@pytest.mark.parametrize("every", [1, 2])
def test_activation_checkpointing_reaches_each_block(every):
    """transformers' own switch checkpoints the blocks it picks: their MLPs run again in the backward pass."""
    model = tiny_model("nala", num_hidden_layers=4).train()
    if hasattr(model, "activation_checkpointing_enable"):
        model.activation_checkpointing_enable(every_n_layers=every)
        disable = model.activation_checkpointing_disable
    elif every > 1:  # older transformers (5.17): all blocks or none
        pytest.skip("every_n_layers needs transformers' activation_checkpointing_enable")
    else:
        model.gradient_checkpointing_enable()
        disable = model.gradient_checkpointing_disable
    assert [layer.gradient_checkpointing for layer in model.model.layers] == [i % every == 0 for i in range(4)]
    calls = [0] * 4
    for i, layer in enumerate(model.model.layers):
        layer.mlp.register_forward_pre_hook(lambda *_, i=i: calls.__setitem__(i, calls[i] + 1))
    ids = random_ids(2, 9)
    model(ids, labels=ids).loss.backward()
    assert calls == [2 if i % every == 0 else 1 for i in range(4)]
    disable()
    assert not any(layer.gradient_checkpointing for layer in model.model.layers)


def test_layer_types_mirror_softmax_layers():
    assert NaLaConfig(num_hidden_layers=3, hidden_size=32, num_attention_heads=2,
                      softmax_layers=[1]).layer_types == ["linear_attention", "full_attention", "linear_attention"]
    config = NaLaConfig(num_hidden_layers=2, hidden_size=32, num_attention_heads=2,
                        layer_types=["full_attention", "linear_attention"])
    assert config.softmax_layers == [0] and config.attention_kind(0) == "softmax"
    assert NaLaConfig.from_dict(config.to_dict()).layer_types == config.layer_types


@torch.no_grad()
def test_generation_modes_run():
    model = tiny_model("hybrid-conv")
    ids = random_ids(2, 5)
    torch.manual_seed(0)
    sampled = model.generate(ids, max_new_tokens=4, do_sample=True, top_k=20, top_p=0.9, temperature=0.7,
                             num_return_sequences=2, pad_token_id=PAD)
    assert sampled.shape == (4, 9)
    beams = model.generate(ids, max_new_tokens=4, num_beams=3, do_sample=False, pad_token_id=PAD)
    assert beams.shape == (2, 9)
    greedy = model.generate(ids, max_new_tokens=4, do_sample=False, pad_token_id=PAD)
    reference = ids
    for _ in range(4):  # greedy without a cache: full forward over the growing sequence
        reference = torch.cat([reference, model(reference, use_cache=False).logits[:, -1:].argmax(-1)], 1)
    assert torch.equal(greedy, reference)


def test_bad_inputs_name_the_argument():
    model = tiny_model()
    with pytest.raises(ValueError, match="input_ids"):
        model(torch.tensor([[1, 2, 300]]))
    with pytest.raises(ValueError, match="input_ids"):
        model(torch.tensor([[1, -1]]))
    with pytest.raises(ValueError, match="attention_mask"):
        model(random_ids(2, 5), attention_mask=torch.ones(2, 4))
    with pytest.raises(ValueError, match="attention_mask"):
        model(random_ids(2, 5), attention_mask=torch.ones(2, 1, 5, 5))
    with pytest.raises(ValueError, match="cu_seqlens"):
        model(random_ids(2, 5), cu_seqlens=torch.tensor([0, 5]))
    with pytest.raises(ValueError, match="cu_seqlens"):
        model(random_ids(1, 5), cu_seqlens=torch.tensor([0, 2, 4]))
    with pytest.raises(TypeError, match="past_key_values"):
        model(random_ids(1, 5), past_key_values=(torch.zeros(1),))
    with pytest.raises(ValueError, match="labels"):
        model(random_ids(2, 5), labels=random_ids(2, 4))


@pytest.mark.parametrize("kwargs, match", [
    (dict(softmax_layers=[5]), "softmax_layers"),
    (dict(num_attention_heads=3), "num_attention_heads"),
    (dict(inhibit="tanh"), "inhibit"),
    (dict(short_conv_size=1), "short_conv_size"),
    (dict(short_conv_on="qk"), "short_conv_on"),
    (dict(layer_types=["linear_attention"]), "layer_types"),
    (dict(layer_types=["mamba", "linear_attention"]), "layer_types"),
    (dict(layer_types=["linear_attention"] * 2, softmax_layers=[1]), "layer_types"),
])
def test_config_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        NaLaConfig(**{**dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=2), **kwargs})


def test_cache_reorder_selects_rows():
    model = tiny_model("hybrid-conv")
    with torch.no_grad():
        cache = cache_of(model(random_ids(3, 6), use_cache=True))
    assert isinstance(cache, NaLaCache)
    before = cache.states[0].nala.kv.clone()
    cache.reorder_cache(torch.tensor([2, 2, 0]))
    assert torch.equal(cache.states[0].nala.kv, before[[2, 2, 0]])
    assert cache.states[1].keys.shape[0] == 3


@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_training_forward_compiles_as_one_graph(monkeypatch, backend):
    """torch.compile(fullgraph=True) of a training step (loss, backward): no graph breaks (the Triton kernels as a
    custom-op node; here in Triton's CPU interpreter), same loss and gradients as eager."""
    import importlib.util

    import torch._inductor.config as inductor_config

    if backend == "triton":
        if importlib.util.find_spec("triton") is None:
            pytest.skip("triton is not installed")
        monkeypatch.setenv("TRITON_INTERPRET", "1")
    model = tiny_model("cosine", attn_backend=backend).train()
    ids = random_ids(2, 24)

    def loss_of(m, x):
        return m(x, labels=x, use_cache=False).loss

    torch._dynamo.reset()
    with inductor_config.patch(fx_graph_cache=False):
        loss = torch.compile(loss_of, fullgraph=True)(model, ids)
        loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    ref = loss_of(model, ids)
    ref.backward()
    assert torch.allclose(loss, ref, rtol=1e-5, atol=1e-6)
    assert grads.keys() == {n for n, p in model.named_parameters() if p.grad is not None}
    for n, p in model.named_parameters():
        if p.grad is not None:
            assert torch.allclose(grads[n], p.grad, rtol=1e-4, atol=1e-6), n
