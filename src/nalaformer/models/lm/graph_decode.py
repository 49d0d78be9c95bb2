"""Decoding NaLa language models by replaying one captured CUDA graph per token.

At batch 1 a decode step of a 24-layer model is a few hundred small kernels, and issuing them from Python
costs more than running them (docs/benchmarks.md). NaLa's cache has a fixed size, so the whole step can
be captured once and replayed for every later token: the token goes into a static input buffer and the
step writes the new recurrent state back into the cache's own buffers, in place.

    with torch.no_grad():
        out = model(prompt, use_cache=True, logits_to_keep=1)          # prefill, any length
    decoder = GraphedDecoder(model, output_cache(out))                 # captures one step
    tokens = decoder.generate(out.logits[:, -1].argmax(-1), 100)       # (B, 100) greedy continuation
"""

from __future__ import annotations

import torch

from ...ops import NaLaState
from .cache import NaLaCache

__all__ = ["GraphedDecoder", "ReplayableStep"]


class GraphedDecoder:
    """Single-token decode steps of a NaLa LM, replayed from a CUDA graph, advancing ``cache`` in place.

    Args:
        model: a ``NaLaForCausalLM`` in eval mode (weights already in the inference dtype).
        cache: its ``NaLaCache`` after the prefill; every layer must be a NaLa layer (a softmax layer's
            cache grows with the context, so its step cannot be replayed).
        use_graph: capture a CUDA graph (default: when the cache lives on a CUDA device). Without it the
            same in-place step runs eagerly (CPU, debugging).
        warmup: eager steps run (on a snapshot of the cache, restored afterwards) before the capture, so
            kernels are compiled/tuned and workspaces allocated outside the graph.

    ``step(tokens)`` takes (B,) or (B, 1) token ids and returns the next-token logits (B, V): a view of a
    static buffer, overwritten by the next step. Replayed steps do not range-check token ids (that would
    synchronise with the device every token; the eager fallback does): they are expected to come from the
    model's own logits. Construction replaces the cache's tensors with the decoder's own copies, so state
    tensors taken from the cache before it no longer follow it.
    Ordinary cached calls (``model(ids, cache=decoder.cache)``) may come between steps: the next step first
    copies the cache's state into the buffers the graph reads.
    """

    def __init__(self, model, cache: NaLaCache, *, use_graph: bool | None = None, warmup: int = 2):
        if model.training:
            raise ValueError("model: graphed decoding runs in eval mode (call model.eval())")
        if not isinstance(cache, NaLaCache) or cache.seen is None:
            raise ValueError("cache: expected the NaLaCache returned by a prefill (model(..., use_cache=True))")
        for idx, state in enumerate(cache.states):
            if state is None or state.nala is None or state.keys is not None:
                raise ValueError(f"cache: layer {idx} is not a NaLa layer with a filled state; graphed decoding "
                                 f"needs a fixed-size cache (softmax layers of hybrid models grow theirs)")
        self.model, self.cache = model, cache
        self.batch = cache.seen.shape[0]
        self.device = cache.seen.device
        self.use_graph = self.device.type == "cuda" if use_graph is None else use_graph
        if self.use_graph and self.device.type != "cuda":
            raise ValueError(f"use_graph: CUDA graphs need a CUDA cache, got device {self.device}")
        original = (cache.states, cache.seen)
        # the cache's buffers become ours: cloned once (plain tensors without autograd history, also when
        # built under inference_mode), so updating them in place touches nothing else
        with torch.inference_mode(False), torch.no_grad():
            self._states = [self._clone_state(s) for s in cache.states]
            self._seen = cache.seen.clone()
            self._token = torch.zeros(self.batch, 1, dtype=torch.long, device=self.device)
            cache.states, cache.seen = list(self._states), self._seen
            try:
                self._run = ReplayableStep(self._body, use_graph=self.use_graph, warmup=warmup,
                                           after_warmup=self._snapshot() if self.use_graph else None)
            except BaseException:  # a failed warm-up/capture leaves the caller's cache as it was
                cache.states, cache.seen = original
                raise

    # -- public ---------------------------------------------------------------------------------------

    @torch.no_grad()
    def step(self, tokens: torch.Tensor) -> torch.Tensor:
        """Feed one token per row (B,) or (B, 1); returns the next-token logits (B, V)."""
        if tokens.dim() not in (1, 2) or tokens.shape[0] != self.batch or tokens.numel() != self.batch:
            raise ValueError(f"tokens: expected ({self.batch},) or ({self.batch}, 1) token ids, "
                             f"got {tuple(tokens.shape)}")
        if tokens.dtype not in (torch.int64, torch.int32) or tokens.device != self.device:
            raise ValueError(f"tokens: expected integer token ids on {self.device}, got {tokens.dtype} on "
                             f"{tokens.device}")
        self._adopt_outside_changes()
        self._token.copy_(tokens.view(self.batch, 1))
        logits = self._run()
        self.cache.length += 1
        return logits

    @torch.no_grad()
    def generate(self, tokens: torch.Tensor, max_new_tokens: int, *, do_sample: bool = False,
                 temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0, logits_processor=None,
                 generator: torch.Generator | None = None) -> torch.Tensor:
        """Continue every row for exactly ``max_new_tokens`` tokens: feed ``tokens`` (B,) (the first token
        after the prefill), then each chosen next token. Returns (B, max_new_tokens) ids starting with
        ``tokens``. Greedy by default; ``do_sample`` samples after transformers' temperature / top-k / top-p
        warpers (and any ``logits_processor``, a transformers ``LogitsProcessorList``, applied first), drawing
        from ``generator``. There is no early stop at an end-of-sequence token (that would synchronise with
        the device every step): cut the rows afterwards."""
        if max_new_tokens < 1:
            raise ValueError(f"max_new_tokens: expected at least 1, got {max_new_tokens}")
        choose = self._chooser(do_sample, temperature, top_k, top_p, logits_processor, generator)
        out = [tokens.view(self.batch)]
        for _ in range(max_new_tokens - 1):
            out.append(choose(torch.stack(out, 1), self.step(out[-1])))
        return torch.stack(out, 1)

    @staticmethod
    def _chooser(do_sample, temperature, top_k, top_p, logits_processor, generator):
        """(ids so far (B, T), logits (B, V)) -> next ids (B,)."""
        from transformers.generation.logits_process import (LogitsProcessorList, TemperatureLogitsWarper,
                                                            TopKLogitsWarper, TopPLogitsWarper)

        processors = LogitsProcessorList(logits_processor or [])
        if do_sample:
            if temperature != 1.0:
                processors.append(TemperatureLogitsWarper(temperature))
            if top_k:
                processors.append(TopKLogitsWarper(top_k))
            if top_p < 1.0:
                processors.append(TopPLogitsWarper(top_p))
        elif (temperature, top_k, top_p) != (1.0, 0, 1.0):
            raise ValueError("temperature/top_k/top_p: sampling options given without do_sample=True")

        def choose(ids, logits):
            scores = processors(ids, logits.float())
            if not do_sample:
                return scores.argmax(-1)
            return torch.multinomial(scores.softmax(-1), 1, generator=generator)[:, 0]
        return choose

    # -- internals ------------------------------------------------------------------------------------

    @staticmethod
    def _clone_state(state):
        return state._replace(nala=NaLaState(*(t.clone() for t in state.nala)),
                              conv=None if state.conv is None else state.conv.clone())

    def _adopt_outside_changes(self) -> None:
        """If ordinary model calls advanced the cache since the last step (they replace its tensors), copy
        its current state into the static buffers the graph reads, and point the cache back at them."""
        cache = self.cache
        if cache.seen is self._seen and all(a is b for a, b in zip(cache.states, self._states)):
            return
        if cache.seen is None or cache.seen.shape != self._seen.shape:
            rows = "no" if cache.seen is None else cache.seen.shape[0]
            raise ValueError(f"cache: it now holds {rows} rows, the decoder was built for {self.batch}; "
                             f"build a new GraphedDecoder")
        self._write_back()

    @staticmethod
    def _tensors(states, seen) -> list[torch.Tensor]:
        """The state tensors of a cache, flat, in one fixed order (seen, then per layer kv, k_sum, count, conv)."""
        tensors = [seen]
        for s in states:
            tensors += list(s.nala) + ([] if s.conv is None else [s.conv])
        return tensors

    def _buffers(self) -> list[torch.Tensor]:
        return self._tensors(self._states, self._seen)

    def _write_back(self) -> None:
        """Copy the cache's current state (new tensors from a forward) into the static buffers and point the
        cache back at them."""
        for dst, src in zip(self._buffers(), self._tensors(self.cache.states, self.cache.seen)):
            dst.copy_(src)
        self.cache.states, self.cache.seen = list(self._states), self._seen

    def _body(self) -> torch.Tensor:
        """One decode step whose new state lands in the static buffers; returns the logits (B, V)."""
        cache, length = self.cache, self.cache.length
        cache.states, cache.seen = list(self._states), self._seen  # what a replay reads, eager or not
        out = self.model(self._token, cache=cache, use_cache=True, logits_to_keep=1)
        self._write_back()  # the forward replaced the cache's tensors ...
        cache.length = length  # ... and counted the column (step() counts it once, graph or not)
        return out.logits[:, -1]

    def _snapshot(self):
        """A copy of the cache's buffers and the function that puts it back (the warm-up must not count)."""
        saved = [t.clone() for t in self._buffers()]

        def restore():
            for dst, src in zip(self._buffers(), saved):
                dst.copy_(src)
        return restore


class ReplayableStep:
    """``fn()`` (no arguments, reads and writes only static tensors) run eagerly or replayed from a CUDA graph.

    With ``use_graph`` it is first run ``warmup`` times on a side stream (kernels compiled and tuned,
    workspaces allocated), then ``after_warmup()`` runs (e.g. to undo the warm-up's writes) and one call
    is captured. Calling the object replays it and returns the captured output (a static buffer).
    """

    def __init__(self, fn, *, use_graph: bool, warmup: int = 2, after_warmup=None):
        self.fn, self.graph, self.out = fn, None, None
        if not use_graph:
            return
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream), torch.no_grad():
            for _ in range(max(1, warmup)):
                fn()
        torch.cuda.current_stream().wait_stream(stream)
        if after_warmup is not None:
            after_warmup()
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph), torch.no_grad():
            self.out = fn()

    def __call__(self):
        if self.graph is None:
            with torch.no_grad():
                return self.fn()
        self.graph.replay()
        return self.out
