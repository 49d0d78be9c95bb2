"""GraphedDecoder: the in-place replayable decode step equals the model's own cached decoding."""

from __future__ import annotations

import pytest
import torch

from nalaformer.models.lm import GraphedDecoder
from tests.models.lm.helpers import cache_of, random_ids, tiny_model


def _reference_continuation(model, prompt, steps):
    """Greedy tokens and per-step logits from the model's ordinary cached decoding."""
    out = model(prompt, use_cache=True)
    cache, token = cache_of(out), out.logits[:, -1].argmax(-1)
    tokens, logits = [token], []
    for _ in range(steps - 1):
        out = model(token[:, None], cache=cache, use_cache=True)
        cache = cache_of(out)
        logits.append(out.logits[:, -1])
        token = out.logits[:, -1].argmax(-1)
        tokens.append(token)
    return torch.stack(tokens, 1), logits, cache


def _eager_decoder(model, prompt):
    """Prefill ``prompt``; an eager (graph-free, in-place) decoder on its cache and the first next token."""
    with torch.no_grad():
        out = model(prompt, use_cache=True)
        return GraphedDecoder(model, cache_of(out), use_graph=False), out.logits[:, -1].argmax(-1)


@pytest.mark.parametrize("variant", ["nala", "cosine"])
def test_eager_in_place_steps_equal_cached_decoding(variant):
    model = tiny_model(variant)
    prompt = random_ids(3, 11)
    want_tokens, want_logits, want_cache = _reference_continuation(model, prompt, 6)

    decoder, token = _eager_decoder(model, prompt)
    cache = decoder.cache
    buffers = [t.data_ptr() for t in decoder._buffers()]
    with torch.no_grad():
        for ref in want_logits[:2]:
            logits = decoder.step(token)
            torch.testing.assert_close(logits, ref, rtol=1e-5, atol=1e-5)
            token = logits.argmax(-1)
    # the state was updated in the same buffers, and the cache's bookkeeping advanced like the model's
    assert [t.data_ptr() for t in decoder._buffers()] == buffers
    assert cache.length == prompt.shape[1] + 2
    assert torch.equal(cache.seen, torch.full((3,), prompt.shape[1] + 2))

    decoder, _ = _eager_decoder(model, prompt)
    tokens = decoder.generate(want_tokens[:, 0], 6)
    assert torch.equal(tokens, want_tokens)
    for got, ref in zip(decoder.cache.states, want_cache.states):
        torch.testing.assert_close(got.nala.kv, ref.nala.kv, rtol=1e-5, atol=1e-6)
        assert torch.equal(got.nala.count, ref.nala.count)


def test_ordinary_calls_between_steps_are_picked_up():
    model = tiny_model("nala", short_conv_size=3)
    prompt = random_ids(2, 9)
    want_tokens, want_logits, _ = _reference_continuation(model, prompt, 5)
    decoder, _ = _eager_decoder(model, prompt)
    cache = decoder.cache
    with torch.no_grad():
        torch.testing.assert_close(decoder.step(want_tokens[:, 0]), want_logits[0], rtol=1e-5, atol=1e-5)
        # an ordinary cached call advances the same cache (replacing its tensors) ...
        out = model(want_tokens[:, 1:2], cache=cache, use_cache=True)
        torch.testing.assert_close(out.logits[:, -1], want_logits[1], rtol=1e-5, atol=1e-5)
        # ... and the decoder continues from there
        torch.testing.assert_close(decoder.step(want_tokens[:, 2]), want_logits[2], rtol=1e-5, atol=1e-5)
    assert cache.length == prompt.shape[1] + 3


def test_short_conv_state_is_carried():
    model = tiny_model("nala", short_conv_size=3)
    prompt = random_ids(2, 7)
    want_tokens, _, _ = _reference_continuation(model, prompt, 5)
    decoder, first = _eager_decoder(model, prompt)
    assert torch.equal(decoder.generate(first, 5), want_tokens)


def test_bad_arguments_are_named():
    model = tiny_model("hybrid-conv")
    with torch.no_grad():
        cache = cache_of(model(random_ids(1, 5), use_cache=True))
    with pytest.raises(ValueError, match="cache: layer 1"):
        GraphedDecoder(model, cache, use_graph=False)
    nala = tiny_model("nala")
    with torch.no_grad():
        cache = cache_of(nala(random_ids(2, 5), use_cache=True))
    with pytest.raises(ValueError, match="use_graph"):
        GraphedDecoder(nala, cache, use_graph=True)
    decoder = GraphedDecoder(nala, cache, use_graph=False)
    with pytest.raises(ValueError, match="tokens: expected"):
        decoder.step(torch.zeros(3, dtype=torch.long))
    nala.train()
    with pytest.raises(ValueError, match="eval mode"):
        GraphedDecoder(nala, cache, use_graph=False)


def test_buffers_are_plain_tensors_whatever_the_prefill_mode():
    model = tiny_model("nala")
    prompt = random_ids(2, 6)
    want_tokens, want_logits, _ = _reference_continuation(model, prompt, 3)
    out = model(prompt, use_cache=True)  # grad enabled: the prefill's state has autograd history
    decoder = GraphedDecoder(model, cache_of(out), use_graph=False)
    assert all(t.grad_fn is None and not t.requires_grad for t in decoder._buffers())
    with torch.inference_mode():
        cache = cache_of(model(prompt, use_cache=True))
        decoder = GraphedDecoder(model, cache, use_graph=False)
    assert not any(t.is_inference() for t in decoder._buffers())
    torch.testing.assert_close(decoder.step(want_tokens[:, 0]), want_logits[0], rtol=1e-5, atol=1e-5)


def test_a_failed_capture_leaves_the_cache_as_it_was(monkeypatch):
    import nalaformer.models.lm.graph_decode as graph_decode

    model = tiny_model("nala")
    with torch.no_grad():
        cache = cache_of(model(random_ids(2, 6), use_cache=True))
    states, seen = cache.states, cache.seen

    def failing(*args, **kwargs):
        raise RuntimeError("capture failed")
    monkeypatch.setattr(graph_decode, "ReplayableStep", failing)
    with pytest.raises(RuntimeError, match="capture failed"):
        GraphedDecoder(model, cache, use_graph=False)
    assert cache.states is states and cache.seen is seen


def test_token_and_length_arguments_are_checked():
    model = tiny_model("nala")
    with torch.no_grad():
        decoder = GraphedDecoder(model, cache_of(model(random_ids(2, 6), use_cache=True)), use_graph=False)
    with pytest.raises(ValueError, match="tokens: expected integer token ids"):
        decoder.step(torch.zeros(2))
    with pytest.raises(ValueError, match="max_new_tokens"):
        decoder.generate(torch.zeros(2, dtype=torch.long), 0)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("conv", [0, 3])
def test_cuda_graph_replay_equals_eager_decoding(dtype, conv):
    model = tiny_model("nala", short_conv_size=conv).cuda().to(dtype)
    prompt = random_ids(2, 33).cuda()
    want_tokens, want_logits, _ = _reference_continuation(model, prompt, 8)
    with torch.no_grad():
        out = model(prompt, use_cache=True)
        decoder = GraphedDecoder(model, cache_of(out))
        assert decoder._run.graph is not None
        token = want_tokens[:, 0]
        tol = 1e-5 if dtype == torch.float32 else 2e-2
        for i, ref in enumerate(want_logits):
            if i == 3:  # an ordinary cached call between replays: the next replay continues from it
                logits = model(token[:, None], cache=decoder.cache, use_cache=True).logits[:, -1]
            else:
                logits = decoder.step(token).clone()
            torch.testing.assert_close(logits.float(), ref.float(), rtol=tol, atol=tol)
            token = want_tokens[:, i + 1]
    assert torch.isfinite(logits).all()


def test_sampling_follows_transformers_warpers():
    from transformers.generation.logits_process import TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

    model = tiny_model("nala")
    prompt = random_ids(2, 7)
    decoder, first = _eager_decoder(model, prompt)
    with torch.no_grad():
        got = decoder.generate(first, 6, do_sample=True, temperature=0.7, top_k=20, top_p=0.9,
                               generator=torch.Generator().manual_seed(3))
        # the same draws by hand, from the model's ordinary cached decoding (a fresh prefill: the decoder
        # advanced the first one's cache in place)
        cache, gen, want = cache_of(model(prompt, use_cache=True)), torch.Generator().manual_seed(3), [first]
        for _ in range(5):
            step = model(want[-1][:, None], cache=cache, use_cache=True)
            cache = cache_of(step)
            ids = torch.stack(want, 1)
            scores = step.logits[:, -1].float()
            for warper in (TemperatureLogitsWarper(0.7), TopKLogitsWarper(20), TopPLogitsWarper(0.9)):
                scores = warper(ids, scores)
            want.append(torch.multinomial(scores.softmax(-1), 1, generator=gen)[:, 0])
    assert torch.equal(got, torch.stack(want, 1))
    greedy, _ = _eager_decoder(model, prompt)
    assert not torch.equal(got[:, 1:], greedy.generate(first, 6)[:, 1:])  # sampling did change tokens
    with pytest.raises(ValueError, match="without do_sample"):
        decoder.generate(first, 2, temperature=0.5)

