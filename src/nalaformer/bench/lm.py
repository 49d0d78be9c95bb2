"""``nalaformer bench lm``: training and decoding speed/memory of NaLa LMs against softmax and fla baselines.

Models (same width, depth, heads and vocabulary; the Llama MLP is widened to match NaLa's extra gate
projection, so parameter counts agree to ~0.1%):

- ``nala``: NaLaForCausalLM (the ``--preset``, default ``nala-340m``)
- ``llama``: transformers' LlamaForCausalLM with SDPA attention (softmax baseline)
- ``fla``: flash-linear-attention's LinearAttentionForCausalLM (relu feature map, chunk mode), when
  ``fla.models`` is importable (the ``flash-linear-attention`` package on top of ``fla-core``)

Training: tokens/s of forward + backward + fused AdamW step (fp32 weights, autocast to ``--dtype``) at each
``--train-contexts`` length (batch = ``--train-tokens`` / length) and peak memory. Decoding (weights
cast to ``--dtype``): after a prefill of each ``--decode-contexts`` length, the median time of
single-token decode steps, each timed alone (CUDA events on GPU), the cache size and the peak memory; then
the same steps replayed from a captured CUDA graph (``graph_tokens_per_s``: NaLa's ``GraphedDecoder``,
Llama with transformers' ``StaticCache``), which removes the per-token Python and launch cost that
dominates batch-1 decoding.
Prints a table with ratios to the softmax baseline and writes JSON.
``--quick`` shrinks everything so it runs on a CPU in seconds (a smoke test, not a measurement).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import inspect
import json
import pathlib
import statistics
import time

import torch

HELP = "LM benchmark: NaLa vs Llama/SDPA (and fla linear attention): train tokens/s, decode tokens/s, memory"

__all__ = ["HELP", "add_arguments", "run", "build_models"]

QUICK = dict(preset="nala-tiny", train_contexts="64,128", decode_contexts="32,96", train_tokens=256,
             decode_steps=4, iters=1, warmup=1, dtype="float32")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--models", default="nala,llama,fla",
                        help="comma-separated: nala, llama, fla, or nala:KIND[@BACKEND] (our LM with another "
                             "attention kind of the zoo, e.g. nala:relu_linear or nala:relu_linear@torch)")
    parser.add_argument("--preset", default="nala-340m", help="NaLa preset whose sizes every model uses")
    parser.add_argument("--train-contexts", default="2048,16384", help="training sequence lengths")
    parser.add_argument("--train-tokens", type=int, default=32768, help="tokens per training step")
    parser.add_argument("--decode-contexts", default="1024,8192,32768", help="prefill lengths before decoding")
    parser.add_argument("--decode-batch", type=int, default=1)
    parser.add_argument("--decode-steps", type=int, default=64, help="timed decode steps per context")
    parser.add_argument("--iters", type=int, default=5, help="timed training steps per context")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--dtype", default="bfloat16", choices=("bfloat16", "float16", "float32"))
    parser.add_argument("--device", default="auto")
    parser.add_argument("--gradient-checkpointing", action="store_true", help="for every model in training")
    parser.add_argument("--compile", nargs="?", const="all", default="",
                        help="torch.compile the training step of every model, or of the comma-separated models given "
                             "(e.g. --compile nala: the baselines stay eager); warm-up steps include the compilation")
    parser.add_argument("--json", type=pathlib.Path, default=pathlib.Path("bench_lm.json"))
    parser.add_argument("--quick", action="store_true", help="tiny CPU smoke run (overrides sizes)")


# -- models -----------------------------------------------------------------------------------------------

def build_models(names: list[str], preset: str) -> dict[str, torch.nn.Module]:
    """Same-size models by name; a missing optional library gives a string (the reason) instead."""
    from ..models.lm import NaLaForCausalLM, preset_config

    nala_cfg = preset_config(preset)
    c, layers = nala_cfg.hidden_size, nala_cfg.num_hidden_layers
    # NaLa has q, k, v, g, o (5 C^2); the softmax/linear baselines 4 C^2: widen their SwiGLU to match
    matched = int(round((nala_cfg.intermediate_size + c / 3) / 64) * 64)
    common = dict(vocab_size=nala_cfg.vocab_size, hidden_size=c, num_hidden_layers=layers,
                  intermediate_size=matched, tie_word_embeddings=nala_cfg.tie_word_embeddings,
                  max_position_embeddings=1 << 17)
    models: dict[str, torch.nn.Module | str] = {}
    for name in names:
        if name == "nala":
            models[name] = NaLaForCausalLM(nala_cfg)
        elif name.startswith("nala:"):
            kind, _, backend = name[len("nala:"):].partition("@")
            models[name] = NaLaForCausalLM(preset_config(preset, attn_type=kind, attn_backend=backend or "auto"))
        elif name == "llama":
            from transformers import LlamaConfig, LlamaForCausalLM

            cfg = LlamaConfig(num_attention_heads=nala_cfg.num_attention_heads,
                              num_key_value_heads=nala_cfg.num_attention_heads, **common)
            cfg._attn_implementation = "sdpa"
            models[name] = LlamaForCausalLM(cfg)
        elif name == "fla":
            try:
                from fla.models import LinearAttentionConfig, LinearAttentionForCausalLM
            except Exception as exc:  # not installed, or incompatible with this transformers
                models[name] = f"fla unavailable ({type(exc).__name__}: {exc})"
                continue
            # relu feature map, chunked kernels (the configuration the reference numbers used)
            fla_cfg = LinearAttentionConfig(num_heads=nala_cfg.num_attention_heads, attn_mode="chunk",
                                            feature_map="relu", **common)
            models[name] = LinearAttentionForCausalLM(fla_cfg)
        else:
            raise ValueError(f"--models: unknown model {name!r}; choose from nala, llama, fla, nala:KIND[@BACKEND]")
    return models


# -- timing helpers ---------------------------------------------------------------------------------------

def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def _peak_gib(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None


class _StepTimer:
    """Times one step: CUDA events on GPU, perf_counter on CPU. Returns seconds."""

    def __init__(self, device: torch.device):
        self.device = device

    @contextlib.contextmanager
    def __call__(self, times: list[float]):
        if self.device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            yield
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end) / 1e3)
        else:
            t0 = time.perf_counter()
            yield
            times.append(time.perf_counter() - t0)


def _oom_guard(fn):
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except torch.cuda.OutOfMemoryError:
            torch.cuda.empty_cache()
            return {"error": "OOM"}
        except (RuntimeError, AssertionError) as exc:  # a kernel without this shape, a failed compilation
            return {"error": f"{type(exc).__name__}: {str(exc)[:200]}"}
    return wrapper


# -- measurements ----------------------------------------------------------------------------------------

@_oom_guard
def bench_training(model, context: int, tokens: int, device, dtype, iters: int, warmup: int,
                   compile: bool = False) -> dict:
    """Training tokens/s (forward, backward, AdamW step), peak memory and the warm-up's seconds (compilation
    included), at one context length. ``compile``: torch.compile the model; a model that does not compile (a
    dynamo or inductor error) is measured eagerly instead, with ``compile_error`` saying why."""
    if not compile:
        return {**_training_rate(model, model, context, tokens, device, dtype, iters, warmup), "compiled": False}
    try:
        return {**_training_rate(model, torch.compile(model), context, tokens, device, dtype, iters, warmup),
                "compiled": True}
    except torch._dynamo.exc.TorchDynamoException as exc:
        torch._dynamo.reset()
        eager = _training_rate(model, model, context, tokens, device, dtype, iters, warmup)
        return {**eager, "compiled": False, "compile_error": f"{type(exc).__name__}: {str(exc)[:200]}"}


def _training_rate(model, forward, context: int, tokens: int, device, dtype, iters: int, warmup: int) -> dict:
    batch = max(1, tokens // context)
    vocab = model.config.vocab_size
    ids = torch.randint(0, vocab, (batch, context), device=device)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5, fused=device.type == "cuda")
    timer, times = _StepTimer(device), []
    _reset_peak(device)
    started = time.perf_counter()
    for i in range(warmup + iters):
        if i == warmup:
            _sync(device)
            warmup_s = time.perf_counter() - started
        with (timer(times) if i >= warmup else contextlib.nullcontext()):
            with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
                loss = torch.nn.functional.cross_entropy(forward(ids, use_cache=False).logits.flatten(0, 1).float(),
                                                         ids.flatten())
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
    step = statistics.median(times)
    return {"batch": batch, "tokens_per_s": batch * context / step, "step_s": step, "peak_gib": _peak_gib(device),
            "warmup_s": warmup_s}


def _cache_kwarg(model) -> str:
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def _output_cache(out):
    for name in ("cache", "past_key_values"):
        value = out.get(name) if hasattr(out, "get") else None
        if value is not None:
            return value
    return None


def _tensor_bytes(obj, seen: set[int] | None = None, depth: int = 0) -> int:
    """Bytes of the distinct tensors reachable from a cache object (lists, dicts, attributes)."""
    seen = set() if seen is None else seen
    if depth > 6 or id(obj) in seen:
        return 0
    seen.add(id(obj))
    if isinstance(obj, torch.Tensor):
        return obj.numel() * obj.element_size()
    if isinstance(obj, dict):
        items = obj.values()
    elif isinstance(obj, (list, tuple)):
        items = obj
    elif hasattr(obj, "__dict__"):
        items = vars(obj).values()
    else:
        return 0
    return sum(_tensor_bytes(x, seen, depth + 1) for x in items)


@_oom_guard
@torch.no_grad()
def bench_decoding(model, context: int, batch: int, steps: int, device, dtype, warmup: int) -> dict:
    """Median single-token decode step after a prefill of ``context`` tokens; cache and peak memory.

    The model is expected in the inference dtype already (weights cast once, no autocast).
    """
    model.eval()
    vocab = model.config.vocab_size
    prompt = torch.randint(0, vocab, (batch, context), device=device)
    key = _cache_kwarg(model)
    timer, times = _StepTimer(device), []
    keep = {"logits_to_keep": 1} if "logits_to_keep" in inspect.signature(model.forward).parameters else {}
    out = model(prompt, use_cache=True, **keep)
    cache = _output_cache(out)
    token = out.logits[:, -1:].argmax(-1)
    _reset_peak(device)
    for i in range(warmup + steps):
        with (timer(times) if i >= warmup else contextlib.nullcontext()):
            out = model(token, use_cache=True, **{key: cache})
            token = out.logits[:, -1:].argmax(-1)
        cache = _output_cache(out)
    step = statistics.median(times)
    return {"tokens_per_s": batch / step, "step_ms": step * 1e3, "cache_mib": _tensor_bytes(cache) / 2**20,
            "peak_gib": _peak_gib(device)}


def llama_static_decoder(model, prompt: torch.Tensor, slots: int, prefill_chunk: int = 4096, *,
                         use_graph: bool, warmup: int = 2):
    """Prefill a transformers ``StaticCache`` of ``slots`` positions with ``prompt`` (B, N) in chunks (bounding
    the prefill's (B, 1, chunk, slots) mask), then set up its single-token step as a :class:`ReplayableStep`.

    Returns ``(replay, token)``: write the next token ids into ``token`` (B, 1) (it starts as the prefill's
    argmax), call ``replay()`` for the next-token logits (B, V); positions advance on the device every call.
    """
    from transformers import StaticCache

    from ..models.lm.graph_decode import ReplayableStep

    batch, context = prompt.shape
    device = prompt.device
    cache = StaticCache(config=model.config, max_cache_len=slots)
    key = _cache_kwarg(model)  # past_key_values (transformers 5.17) or cache (later 5.x)
    # transformers 5.17 takes the write positions as `cache_position`; later 5.x track them in the cache
    explicit = "cache_position" in inspect.signature(model.model.forward).parameters
    for start in range(0, context, prefill_chunk):
        end = min(start + prefill_chunk, context)
        pos = torch.arange(start, end, device=device)
        out = model(prompt[:, start:end], use_cache=True, logits_to_keep=1, position_ids=pos[None],
                    **{key: cache}, **({"cache_position": pos} if explicit else {}))
    token = out.logits[:, -1:].argmax(-1)
    pos = torch.full((1,), context, device=device)

    def body():
        logits = model(token, position_ids=pos.expand(batch, 1), use_cache=True, **{key: cache},
                       **({"cache_position": pos} if explicit else {})).logits[:, -1]
        pos.add_(1)
        return logits

    return ReplayableStep(body, use_graph=use_graph, warmup=warmup), token


def _static_step(model, name: str, prompt: torch.Tensor, slots: int, use_graph: bool, warmup: int,
                 prefill_chunk: int):
    """``(step, first_token)`` where ``step(tokens (B,)) -> next tokens (B,)`` is one replayable greedy step."""
    from ..models.lm import GraphedDecoder, NaLaForCausalLM, output_cache

    if isinstance(model, NaLaForCausalLM):
        out = model(prompt, use_cache=True, logits_to_keep=1)
        decoder = GraphedDecoder(model, output_cache(out), use_graph=use_graph, warmup=warmup)
        return (lambda tok: decoder.step(tok).argmax(-1)), out.logits[:, -1].argmax(-1)
    if name == "llama":
        replay, token = llama_static_decoder(model, prompt, slots, prefill_chunk, use_graph=use_graph,
                                             warmup=warmup)

        def step(tok):
            token.copy_(tok[:, None])
            return replay().argmax(-1)
        return step, token[:, 0].clone()
    raise ValueError("no static-cache decode step for this model")


@_oom_guard
@torch.no_grad()
def bench_graph_decoding(model, name: str, context: int, batch: int, steps: int, device, warmup: int,
                         prefill_chunk: int = 4096) -> dict:
    """Decode steps replayed from a captured CUDA graph (the per-token Python and launch cost removed), after
    a prefill of ``context`` tokens: NaLa through ``GraphedDecoder`` (its fixed-size state updated in place),
    Llama through transformers' ``StaticCache`` (``context`` plus a few slots for the steps; a static cache is
    read in full every step). Mean step time over ``steps`` consecutive replays (CUDA events around all of
    them; the eager columns are medians of single steps), each feeding the argmax of the previous one. Off
    CUDA the same static steps run eagerly (a smoke test)."""
    model.eval()
    use_graph = device.type == "cuda"
    prompt = torch.randint(0, model.config.vocab_size, (batch, context), device=device)
    try:
        step, token = _static_step(model, name, prompt, context + warmup + steps + 4, use_graph, warmup,
                                   prefill_chunk)
    except ValueError as exc:  # fla, or a hybrid NaLa preset (softmax layers have no fixed-size state)
        return {"error": f"n/a ({str(exc)[:60]})"}
    token = step(token)  # one untimed replay
    _sync(device)
    times = []
    with _StepTimer(device)(times):
        for _ in range(steps):
            token = step(token)
    step_s = times[0] / steps
    return {"graph_step_ms": step_s * 1e3, "graph_tokens_per_s": batch / step_s}


# -- report -----------------------------------------------------------------------------------------------

def _fmt(value, unit: str = "") -> str:
    if value is None:
        return "-"
    if isinstance(value, str):
        return value
    return f"{value:,.0f}{unit}" if value >= 100 else f"{value:.3g}{unit}"


def print_table(results: dict, baseline: str = "llama") -> None:
    """One row per metric; one column per model plus NaLa / baseline."""
    names = [n for n in results["models"] if isinstance(results["models"][n], dict)]
    params = {n: results["models"][n]["params"] / 1e6 for n in names}
    rows = [["parameters (M)"] + [f"{params[n]:.2f}" for n in names]
            + ([f"{params['nala'] / params[baseline]:.3f}x"] if "nala" in params and baseline in params else ["-"])]
    for kind, metrics in (("train", ("tokens_per_s", "peak_gib")), ("decode", ("tokens_per_s", "graph_tokens_per_s",
                                                                                  "cache_mib", "peak_gib"))):
        for context in results[f"{kind}_contexts"]:
            for metric in metrics:
                cells = {n: results["models"][n][kind].get(str(context), {}) for n in names}
                values = {n: c.get(metric, c.get("graph_error" if metric.startswith("graph") else "error"))
                          for n, c in cells.items()}
                ratio = None
                if isinstance(values.get("nala"), float) and isinstance(values.get(baseline), float) \
                        and values[baseline]:
                    ratio = values["nala"] / values[baseline]
                rows.append([f"{kind} {metric} @{context}"] + [_fmt(values[n]) for n in names]
                            + [f"{ratio:.2f}x" if ratio is not None else "-"])
    header = ["metric"] + names + [f"nala/{baseline}"]
    widths = [max(len(r[i]) for r in rows + [header]) for i in range(len(header))]
    print("  ".join(h.ljust(w) for h, w in zip(header, widths)))
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)))
    for name, info in results["models"].items():
        if isinstance(info, str):
            print(f"({name}: {info})")


def _compiled(spec: str, name: str) -> bool:
    """Whether ``--compile`` (all models, or a comma-separated list) covers model ``name``."""
    return spec == "all" or name in {m.strip() for m in spec.split(",")}


def _progress(path: pathlib.Path, results: dict, name: str, kind: str, context: int) -> None:
    """Print one measurement when it is done and rewrite the JSON (a cut-off run keeps what it measured)."""
    print(f"  {name} {kind} @{context}: {json.dumps(results['models'][name][kind][str(context)])}", flush=True)
    path.write_text(json.dumps(results, indent=2))


def run(args: argparse.Namespace) -> int:
    if args.quick:
        for key, value in QUICK.items():
            setattr(args, key, value)
    device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device)
    dtype = getattr(torch, args.dtype)
    train_contexts = [int(x) for x in str(args.train_contexts).split(",") if x]
    decode_contexts = [int(x) for x in str(args.decode_contexts).split(",") if x]
    torch.manual_seed(0)
    names = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = sorted({m.strip() for m in args.compile.split(",") if m.strip()} - set(names) - {"all"})
    if unknown:
        raise ValueError(f"--compile: {unknown} not among --models {names}")
    models = build_models(names, args.preset)
    results = {"device": str(torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"),
               "compiled": [n for n in models if _compiled(args.compile, n)],
               "dtype": args.dtype, "preset": args.preset, "train_contexts": train_contexts,
               "decode_contexts": decode_contexts, "train_tokens": args.train_tokens,
               "decode_batch": args.decode_batch, "models": {}}
    for name, model in models.items():
        if isinstance(model, str):
            results["models"][name] = model
            continue
        model.to(device)
        if args.gradient_checkpointing:
            from ..models.lm import enable_gradient_checkpointing

            enable_gradient_checkpointing(model)
        entry = {"params": sum(p.numel() for p in model.parameters()), "train": {}, "decode": {}}
        results["models"][name] = entry
        for context in train_contexts:
            entry["train"][str(context)] = bench_training(model, context, args.train_tokens, device, dtype,
                                                          args.iters, args.warmup, _compiled(args.compile, name))
            _progress(args.json, results, name, "train", context)
        model.to(dtype)  # inference runs in the benchmark dtype (training used fp32 weights + autocast)
        for context in decode_contexts:
            entry["decode"][str(context)] = bench_decoding(model, context, args.decode_batch, args.decode_steps,
                                                           device, dtype, args.warmup)
            if device.type == "cuda":
                torch.cuda.empty_cache()
            graphed = bench_graph_decoding(model, name, context, args.decode_batch, args.decode_steps, device,
                                           args.warmup)
            gc.collect()  # the captured graph and its static buffers (a reference cycle) before the next context
            if device.type == "cuda":
                torch.cuda.empty_cache()
            entry["decode"][str(context)].update({f"graph_{k}" if k == "error" else k: v for k, v in graphed.items()})
            _progress(args.json, results, name, "decode", context)
        print(f"{name}: {entry['params'] / 1e6:.1f}M parameters done", flush=True)
        model.to("cpu")
        del model
        if device.type == "cuda":
            torch.cuda.empty_cache()
    print_table(results)
    args.json.write_text(json.dumps(results, indent=2))
    print(f"results written to {args.json}")
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="nalaformer bench lm", description=HELP)
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    import sys

    sys.exit(main())
