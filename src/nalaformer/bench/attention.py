"""Attention benchmark: NaLa (Triton kernels, PyTorch path, torch.compile'd PyTorch path) against SDPA
(flash and cuDNN backends) and flash-linear-attention's ``chunk_linear_attn`` on the same features.

    python -m nalaformer.bench.attention --out DIR [--dtype bf16] [--heads 8] [--dim 64]
                                         [--tokens 65536] [--ns 1024,2048,...,65536] [--quick]
    python -m nalaformer.bench.attention --out DIR --shapes vision,kernels   # rows with byte floors

In one run on one GPU: for every N the batch is ``tokens // N`` (the same number of tokens at each
point), and each method is timed for the forward and for forward + backward with
``triton.testing.do_bench`` (medians), with its peak memory above the inputs. Non-causal and causal.
Also the two target shapes (non-causal B16 H8 N4096 D64, causal B8 H16 T2048 D64) with the kernels'
own time (CUDA-graph replay) and the host time per call beside the eager times, the cold start of
the Triton path (compilation + autotuning of a shape class) and the error of the Triton path against
the PyTorch path run in float32. Prints a table with ratios (method time / Triton time), writes
``attention.json`` and, when matplotlib is installed, ``attention.png`` to DIR.

``--shapes`` runs only the given rows (presets: ``vision``, the NaLa calls of nalaformer_t at 224^2 and 896^2;
``kernels``, the kernel targets) and sets each against its byte floor: the bytes the op must read and write,
at the device-to-device copy bandwidth measured in the same run (``attention_shapes.json`` / ``.md``).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import tempfile
import time
import traceback

import torch
import torch.nn.functional as F

from nalaformer.ops.feature_maps import nala_feature_maps
from nalaformer.ops.nala import nala_attention
from nalaformer.ops.reference import rotate_features
from nalaformer.ops.rope import rope_1d
from nalaformer.ops.torch_impl import nala_attention_torch

METHODS = ("triton", "torch", "compile", "sdpa_flash", "sdpa_cudnn", "fla_chunk")
TARGETS = {"noncausal": (16, 4096, 8, 64, 0.5), "causal": (8, 2048, 16, 64, 0.8)}  # B, N, H, D, target ms

# --shapes presets: (mode, B, N, H, D). "vision": the NaLa calls of nalaformer_t (stage 1: one head of 64 over
# H*W tokens, stage 2: two heads over H*W/4) at 224^2 (batch 128) and 896^2 (batch 8); "kernels": the kernel
# targets (the two target shapes, causal at 8K / 32K against SDPA, the long non-causal forward).
SHAPE_PRESETS = {
    "vision": [("noncausal", 128, 3136, 1, 64), ("noncausal", 128, 784, 2, 64), ("noncausal", 8, 50176, 1, 64),
               ("noncausal", 8, 12544, 2, 64)],
    "kernels": [("noncausal", 16, 4096, 8, 64), ("causal", 8, 2048, 16, 64), ("causal", 8, 8192, 8, 64),
                ("causal", 2, 32768, 8, 64), ("noncausal", 4, 16384, 8, 64), ("noncausal", 1, 65536, 8, 64)],
}
SHAPE_METHODS = ("triton", "sdpa_cudnn", "sdpa_flash", "fla_chunk")


def parse_shapes(spec: str) -> list[tuple[str, int, int, int, int]]:
    """``--shapes``: comma-separated preset names (``vision``, ``kernels``) or ``MODE:B:N:H:D`` entries."""
    shapes = []
    for item in (x.strip() for x in spec.split(",") if x.strip()):
        if item in SHAPE_PRESETS:
            shapes += SHAPE_PRESETS[item]
            continue
        parts = item.split(":")
        try:
            mode, (b, n, h, d) = parts[0], map(int, parts[1:])
        except ValueError:
            raise ValueError(f"--shapes: expected a preset {sorted(SHAPE_PRESETS)} or MODE:B:N:H:D, got {item!r}")
        if mode not in ("causal", "noncausal") or min(b, n, h, d) < 1:
            raise ValueError(f"--shapes: expected MODE causal|noncausal and positive B:N:H:D, got {item!r}")
        shapes.append((mode, b, n, h, d))
    return shapes


def byte_floor(b: int, n: int, h: int, d: int, element_bytes: int) -> dict:
    """Bytes the op must move at least (q, k, v read and o written in the forward; q, k, v, do read and dq, dk, dv
    written in the backward: 4 and 11 passes over a (B, N, H, D) tensor; rotary tables and per-row statistics are
    negligible)."""
    one = b * n * h * d * element_bytes
    return {"fwd_bytes": 4 * one, "fwdbwd_bytes": 11 * one}


def copy_bandwidth(nbytes: int = 1 << 30) -> float:
    """Achievable device memory bandwidth, bytes/s: a device-to-device copy of ``nbytes`` (read + write), median."""
    from triton.testing import do_bench

    src = torch.empty(nbytes // 2, dtype=torch.uint8, device="cuda")
    dst = torch.empty_like(src)
    ms = do_bench(lambda: dst.copy_(src), warmup=25, rep=100, return_mode="median")
    return nbytes / (ms * 1e-3)


def _dtype(name: str) -> torch.dtype:
    return {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[name]


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach().float(), b.detach().float()
    return float((a - b).norm() / b.norm().clamp_min(1e-30))


def _gpu_and_host_ms(f, graph_key: str, host_key: str, grads=None, reps: int = 100) -> dict:
    """``f``'s GPU time alone (captured in a CUDA graph and replayed; ``{graph_key}_ms``, or
    ``{graph_key}_error`` when it cannot be captured) and its host issue time (``{host_key}_ms``: wall time
    of ``reps`` calls without synchronising). ``f`` is warm (compiled, tuned)."""
    from triton.testing import do_bench_cudagraph

    res = {}
    f()
    torch.cuda.synchronize()
    try:
        res[f"{graph_key}_ms"] = do_bench_cudagraph(f, rep=200, grad_to_none=grads, return_mode="median")
    except Exception as err:  # noqa: BLE001  (capture not possible for this function)
        res[f"{graph_key}_error"] = f"{type(err).__name__}: {str(err)[:200]}"
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(reps):
        f()
    res[f"{host_key}_ms"] = (time.perf_counter() - t0) / reps * 1e3
    torch.cuda.synchronize()
    return res


class Runner:
    def __init__(self, args):
        self.args = args
        self.dtype = _dtype(args.dtype)
        self.compiled: dict[bool, object] = {}
        self.notes: list[str] = []
        self.fla = None
        try:
            from fla.ops.linear_attn import chunk_linear_attn

            self.fla = chunk_linear_attn
        except Exception as err:  # noqa: BLE001
            self.notes.append(f"fla_chunk skipped: flash-linear-attention not importable ({type(err).__name__}: {err})")

    # -- the functions timed: each takes (q, k, v) in (B, N, H, D) and returns o ---------------------
    def fn(self, method: str, causal: bool, rope):
        if method == "triton":
            return lambda q, k, v: nala_attention(q, k, v, causal=causal, rope=rope, backend="triton")
        if method == "torch":
            return lambda q, k, v: nala_attention(q, k, v, causal=causal, rope=rope, backend="torch")
        if method == "compile":
            if causal not in self.compiled:
                # static shapes (one compile per N): dynamic=True hit an Inductor lowering error in torch 2.11
                # (KeyError 'unbacked_bindings' on a CPU scalar); torch 2.14 compiles it either way
                self.compiled[causal] = torch.compile(
                    lambda q, k, v, sin, cos: nala_attention_torch(q, k, v, causal=causal, rope=(sin, cos)),
                    dynamic=False)
            c = self.compiled[causal]
            return lambda q, k, v: c(q, k, v, *rope)
        if method in ("sdpa_flash", "sdpa_cudnn"):
            from torch.nn.attention import SDPBackend, sdpa_kernel

            be = SDPBackend.FLASH_ATTENTION if method == "sdpa_flash" else SDPBackend.CUDNN_ATTENTION

            def sdpa(q, k, v):
                with sdpa_kernel(be):
                    o = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                                                       is_causal=causal)
                return o.transpose(1, 2)
            return sdpa
        if method == "fla_chunk":
            if self.fla is None or not causal:
                return None
            fla = self.fla

            def run(q, k, v):  # q, k are the precomputed rotated NaLa features (B, N, H, 2D)
                return fla(q, k, v, scale=1.0, normalize=True)[0]
            return run
        raise KeyError(method)

    def inputs(self, method, b, n, h, d, rope, seed=0):
        g = torch.Generator(device="cuda").manual_seed(seed)
        q, k = (torch.randn(b, n, h, d, device="cuda", generator=g, dtype=torch.float32) for _ in range(2))
        v = torch.randn(b, n, h, d, device="cuda", generator=g, dtype=torch.float32)
        if method == "fla_chunk":  # the same NaLa features, computed outside the timed region
            with torch.no_grad():
                pq, pk = nala_feature_maps(q, k)
                q, k = rotate_features(pq, rope), rotate_features(pk, rope)
        return [t.to(self.dtype).requires_grad_() for t in (q, k, v)]

    # -- timing ------------------------------------------------------------------------------------
    def time_method(self, method, causal, b, n, h, d):
        from triton.testing import do_bench

        a = self.args
        rope = rope_1d(n, d, device="cuda", per_pair=True)
        fn = self.fn(method, causal, rope)
        if fn is None:
            return None
        q, k, v = self.inputs(method, b, n, h, d, rope)
        do = torch.randn(b, n, h, d, device="cuda", dtype=self.dtype)
        res = {}
        t0 = time.perf_counter()
        out = fn(q, k, v)  # first call: compilation / autotuning
        out.backward(do)
        torch.cuda.synchronize()
        res["first_call_s"] = time.perf_counter() - t0
        q.grad = k.grad = v.grad = None
        del out
        with torch.no_grad():
            res["fwd_ms"] = do_bench(lambda: fn(q, k, v), warmup=a.warmup_ms, rep=a.rep_ms, return_mode="median")

        def step():
            fn(q, k, v).backward(do)

        res["fwdbwd_ms"] = do_bench(step, warmup=a.warmup_ms, rep=a.rep_ms, grad_to_none=[q, k, v],
                                    return_mode="median")
        torch.cuda.synchronize()
        q.grad = k.grad = v.grad = None
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        step()
        torch.cuda.synchronize()
        res["peak_mem_mb"] = (torch.cuda.max_memory_allocated() - base) / 2**20
        return res

    def time_gpu_and_host(self, method, causal, b, n, h, d):
        """Target rows: the kernels' own time (the op captured in a CUDA graph and replayed: no host work) and
        the host time to issue one call (wall time of many calls without synchronising). When the host time
        exceeds the GPU time, eager timings measure the host."""
        rope = rope_1d(n, d, device="cuda", per_pair=True)
        fn = self.fn(method, causal, rope)
        q, k, v = self.inputs(method, b, n, h, d, rope, seed=3)
        do = torch.randn(b, n, h, d, device="cuda", dtype=self.dtype)

        def fwd():
            with torch.no_grad():
                fn(q, k, v)

        def step():
            fn(q, k, v).backward(do)

        res = {}
        for name, f, grads in (("fwd", fwd, None), ("fwdbwd", step, [q, k, v])):
            res.update(_gpu_and_host_ms(f, f"graph_{name}", f"host_{name}", grads))
            q.grad = k.grad = v.grad = None
        return res

    def time_shape(self, mode, b, n, h, d, methods, bandwidth: float) -> dict:
        """One --shapes row: every method's eager fwd / fwd+bwd, Triton's GPU time (CUDA graph) and host issue time,
        its error against the PyTorch path in float32, and the byte floor at the measured bandwidth."""
        causal = mode == "causal"
        row = {"mode": mode, "B": b, "N": n, "H": h, "D": d, "methods": {}}
        floor = byte_floor(b, n, h, d, torch.empty((), dtype=self.dtype).element_size())
        row.update({k: v for k, v in floor.items()})
        row.update({"fwd_floor_ms": floor["fwd_bytes"] / bandwidth * 1e3,
                    "fwdbwd_floor_ms": floor["fwdbwd_bytes"] / bandwidth * 1e3})
        for m in methods:
            try:
                res = self.time_method(m, causal, b, n, h, d)
                if res is not None and m == "triton":
                    res.update(self.time_gpu_and_host(m, causal, b, n, h, d))
                    res["errors"] = self.check_error(causal, b, n, h, d)
            except Exception as err:  # noqa: BLE001  (e.g. out of memory, a backend that refuses the shape)
                res = {"error": f"{type(err).__name__}: {str(err)[:300]}"}
            if res is not None:
                row["methods"][m] = res
            torch.cuda.empty_cache()
        return row

    def time_decode(self, batch, h, d):
        """One decode step (one token per sequence, a carried state): the Triton kernel against the PyTorch
        decode, each by CUDA-graph replay (GPU time) and by host issue time; plus their difference."""
        from nalaformer.ops.torch_impl import nala_decode_step_torch
        from nalaformer.ops.triton import nala_decode_step_triton

        g = torch.Generator(device="cuda").manual_seed(5)
        q, k = (torch.randn(batch, h, d, device="cuda", generator=g, dtype=self.dtype) for _ in range(2))
        v = torch.randn(batch, h, d, device="cuda", generator=g, dtype=self.dtype)
        sin, cos = (t[7] for t in rope_1d(8, d, device="cuda", per_pair=True))
        state = nala_decode_step_torch(q.float(), k.float(), v.float(), None)[1]
        fns = {"triton": lambda: nala_decode_step_triton(q, k, v, state, rope=(sin, cos)),
               "torch": lambda: nala_decode_step_torch(q, k, v, state, rope=(sin, cos))}
        res = {"B": batch, "H": h, "D": d}
        for name, f in fns.items():
            res.update(_gpu_and_host_ms(f, f"{name}_graph", f"{name}_host"))
        o_t, s_t = fns["triton"]()
        o_r, s_r = fns["torch"]()
        res["error_o"] = _rel(o_t, o_r)
        res["error_state"] = _rel(s_t.kv, s_r.kv)
        return res

    def check_error(self, causal, b, n, h, d):
        """Triton (input dtype) against the PyTorch path on float32 copies of the same inputs."""
        rope = rope_1d(n, d, device="cuda", per_pair=True)
        ins = self.inputs("triton", b, n, h, d, rope, seed=1)
        ref_ins = [t.detach().float().requires_grad_() for t in ins]
        g = torch.Generator(device="cuda").manual_seed(2)
        do = torch.randn(b, n, h, d, device="cuda", generator=g)
        o = nala_attention(*ins, causal=causal, rope=rope, backend="triton")
        o.backward(do.to(self.dtype))
        o_ref = nala_attention(*ref_ins, causal=causal, rope=rope, backend="torch")
        o_ref.backward(do)
        errs = {"o": _rel(o, o_ref)}
        for name, t, r in zip(("dq", "dk", "dv"), ins, ref_ins):
            errs[name] = _rel(t.grad, r.grad)
        errs["finite"] = bool(torch.isfinite(o).all() and all(torch.isfinite(t.grad).all() for t in ins))
        return errs


def _fmt(x, nd=3):
    return "-" if x is None else f"{x:.{nd}f}"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, help="directory for attention.json / attention.png")
    ap.add_argument("--dtype", default="bf16", choices=("bf16", "fp16", "fp32"))
    ap.add_argument("--heads", type=int, default=8)
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--tokens", type=int, default=65536, help="B * N at every point")
    ap.add_argument("--ns", default="1024,2048,4096,8192,16384,32768,65536")
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--modes", default="noncausal,causal")
    ap.add_argument("--warmup-ms", type=float, default=10.0)
    ap.add_argument("--rep-ms", type=float, default=40.0)
    ap.add_argument("--quick", action="store_true", help="targets and N in {4096, 16384} only")
    ap.add_argument("--compile-ns", default="4096,16384", help="N for torch.compile (timed last: slow to compile)")
    ap.add_argument("--no-targets", action="store_true")
    ap.add_argument("--targets-only", action="store_true")
    ap.add_argument("--shapes", help="only these rows, with byte floors: presets (vision, kernels) or MODE:B:N:H:D, "
                                     "comma-separated")
    ap.add_argument("--shape-methods", default=",".join(SHAPE_METHODS), help="methods timed for --shapes")
    args = ap.parse_args(argv)
    shapes = parse_shapes(args.shapes) if args.shapes else []
    if not torch.cuda.is_available():
        print("no CUDA device: nothing to benchmark", file=sys.stderr)
        return 1
    # cold start must include autotuning: tune into a fresh cache unless the caller chose one
    os.environ.setdefault("NALAFORMER_TRITON_CACHE_DIR", tempfile.mkdtemp(prefix="nala_tune_"))
    os.makedirs(args.out, exist_ok=True)
    import triton

    from nalaformer.ops.triton import _tune

    ns = [4096, 16384] if args.quick else [int(x) for x in args.ns.split(",") if x]
    if args.targets_only:
        ns = []
    methods = [m for m in args.methods.split(",") if m]
    r = Runner(args)
    env = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "gpu": torch.cuda.get_device_name(), "torch": torch.__version__, "triton": triton.__version__,
        "cuda": torch.version.cuda, "python": platform.python_version(), "dtype": args.dtype,
        "heads": args.heads, "dim": args.dim, "tokens": args.tokens,
    }
    results, targets = [], []
    h, d = args.heads, args.dim
    if shapes:
        return run_shapes(r, env, shapes, [m for m in args.shape_methods.split(",") if m], args.out)

    if not args.no_targets:
        for mode, (b, n, th, td, goal) in TARGETS.items():
            causal = mode == "causal"
            row = {"mode": mode, "B": b, "N": n, "H": th, "D": td, "target_ms": goal}
            try:
                row.update(r.time_method("triton", causal, b, n, th, td))
                row.update(r.time_gpu_and_host("triton", causal, b, n, th, td))
                row["errors"] = r.check_error(causal, b, n, th, td)
            except Exception as err:  # noqa: BLE001
                row["error"] = f"{type(err).__name__}: {err}"
                traceback.print_exc()
            targets.append(row)
            print(f"[target] {mode} B{b} H{th} N{n} D{td}: fwd {_fmt(row.get('fwd_ms'))} ms, "
                  f"fwd+bwd {_fmt(row.get('fwdbwd_ms'))} ms (target {goal} ms), GPU time (CUDA graph) "
                  f"{_fmt(row.get('graph_fwd_ms'))} / {_fmt(row.get('graph_fwdbwd_ms'))} ms, host issue time "
                  f"{_fmt(row.get('host_fwd_ms'))} / {_fmt(row.get('host_fwdbwd_ms'))} ms, first call "
                  f"{_fmt(row.get('first_call_s'), 1)} s, errors {row.get('errors')}", flush=True)

    decode = []
    if not args.no_targets:
        for batch in (1, 16):
            try:
                row = r.time_decode(batch, 16, args.dim)
            except Exception as err:  # noqa: BLE001
                row = {"B": batch, "error": f"{type(err).__name__}: {err}"}
                traceback.print_exc()
            decode.append(row)
            print(f"[decode] {row}", flush=True)

    report = {"env": env, "targets": targets, "decode": decode, "results": results, "notes": r.notes,
              "autotune": []}

    def save():
        report["autotune"] = _tune.timings()
        with open(os.path.join(args.out, "attention.json"), "w") as f:
            json.dump(report, f, indent=1, default=str)
        with open(os.path.join(args.out, "attention.md"), "w") as f:
            f.write(render_table(report) + "\n")

    save()
    entries = {}
    compile_ns = [int(x) for x in args.compile_ns.split(",") if x]
    # phase A: everything but torch.compile; phase B: torch.compile (compilation dominates its first calls)
    for phase in ("A", "B"):
        for mode in args.modes.split(","):
            causal = mode == "causal"
            for n in ns:
                b = max(1, args.tokens // n)
                key = (mode, n)
                if key not in entries:
                    entries[key] = {"mode": mode, "N": n, "B": b, "H": h, "D": d, "methods": {}}
                    results.append(entries[key])
                entry = entries[key]
                todo = [m for m in methods if (m == "compile") == (phase == "B")]
                if phase == "B" and n not in compile_ns:
                    todo = []
                for m in todo:
                    if m == "fla_chunk" and not causal:
                        continue
                    try:
                        res = r.time_method(m, causal, b, n, h, d)
                    except Exception as err:  # noqa: BLE001
                        res = {"error": f"{type(err).__name__}: {str(err)[:300]}"}
                        torch.cuda.empty_cache()
                    if res is not None:
                        entry["methods"][m] = res
                        what = res["error"] if "error" in res else (
                            f"fwd {res['fwd_ms']:.3f} ms  fwd+bwd {res['fwdbwd_ms']:.3f} ms  "
                            f"peak {res['peak_mem_mb']:.0f} MiB  first {res['first_call_s']:.1f} s")
                        print(f"  {mode:9s} N={n:6d} B={b:3d} {m:11s} {what}", flush=True)
                if phase == "A" and "triton" in methods:
                    try:
                        entry["triton_errors"] = r.check_error(causal, b, n, h, d)
                    except Exception as err:  # noqa: BLE001
                        entry["triton_errors"] = {"error": f"{type(err).__name__}: {err}"}
                save()
                torch.cuda.empty_cache()
        if phase == "A":
            _plot(report, os.path.join(args.out, "attention.png"))
    save()
    _plot(report, os.path.join(args.out, "attention.png"))
    print(render_table(report))
    return 0


def run_shapes(r: Runner, env: dict, shapes, methods, out: str) -> int:
    """The --shapes run: the achievable bandwidth first, then one row per shape (written after each)."""
    env["copy_bandwidth_gbs"] = copy_bandwidth() / 1e9
    print(f"device-to-device copy bandwidth: {env['copy_bandwidth_gbs']:.0f} GB/s", flush=True)
    report = {"env": env, "shapes": [], "notes": r.notes}
    for mode, b, n, h, d in shapes:
        row = r.time_shape(mode, b, n, h, d, methods, env["copy_bandwidth_gbs"] * 1e9)
        report["shapes"].append(row)
        print(render_shape_rows({"shapes": [row]}).splitlines()[-1], flush=True)
        with open(os.path.join(out, "attention_shapes.json"), "w") as f:
            json.dump(report, f, indent=1, default=str)
    text = render_shape_rows(report)
    with open(os.path.join(out, "attention_shapes.md"), "w") as f:
        f.write(text + "\n")
    print(text)
    return 0


def render_shape_rows(report: dict) -> str:
    """Rows of a --shapes run: Triton's GPU time against the byte floor, host time, and the other methods as
    ratios to Triton (eager fwd+bwd)."""
    lines = ["| shape | byte floor fwd / fwd+bwd ms | Triton GPU time fwd / fwd+bwd ms (x floor) | Triton host "
             "fwd / fwd+bwd ms | Triton eager fwd+bwd ms | others, eager fwd+bwd ms (x Triton) | err o / dq |",
             "|---|---|---|---|---|---|---|"]
    for row in report["shapes"]:
        t = row["methods"].get("triton", {})
        gf, gb = t.get("graph_fwd_ms"), t.get("graph_fwdbwd_ms")
        ratio = (f" ({gf / row['fwd_floor_ms']:.1f}x / {gb / row['fwdbwd_floor_ms']:.1f}x)"
                 if gf is not None and gb is not None else "")
        others = []
        for name, res in row["methods"].items():
            if name == "triton":
                continue
            if "error" in res:
                others.append(f"{name} failed")
            elif "fwdbwd_ms" in t:
                others.append(f"{name} {res['fwdbwd_ms']:.3f} ({res['fwdbwd_ms'] / t['fwdbwd_ms']:.2f}x)")
        e = t.get("errors") or {}
        err = f"{e['o']:.1e} / {e['dq']:.1e}" if "o" in e else ("failed: " + t["error"][:60] if "error" in t else "-")
        lines.append(f"| {row['mode']} B{row['B']} H{row['H']} N{row['N']} D{row['D']} | "
                     f"{row['fwd_floor_ms']:.3f} / {row['fwdbwd_floor_ms']:.3f} | {_fmt(gf)} / {_fmt(gb)}{ratio} | "
                     f"{_fmt(t.get('host_fwd_ms'))} / {_fmt(t.get('host_fwdbwd_ms'))} | {_fmt(t.get('fwdbwd_ms'))} | "
                     f"{'; '.join(others) or '-'} | {err} |")
    return "\n".join(lines)


def render_table(report: dict) -> str:
    env = report["env"]
    title = (f"{env['gpu']}, torch {env['torch']}, triton {env['triton']}, CUDA {env['cuda']}, {env['dtype']}, "
             f"H={env['heads']} D={env['dim']}, B*N={env['tokens']}, {env['date']}")
    lines = [title, ""]
    if report["targets"]:
        lines += ["| target | shape | fwd ms | fwd+bwd ms | GPU time fwd / fwd+bwd ms | host issue fwd / fwd+bwd ms "
                  "| goal ms | first call s | err o / dq / dk / dv |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for t in report["targets"]:
            e = t.get("errors") or {}
            errs = " / ".join(f"{e[k]:.1e}" for k in ("o", "dq", "dk", "dv") if k in e)
            lines.append(f"| {t['mode']} | B{t['B']} H{t['H']} N{t['N']} D{t['D']} | {_fmt(t.get('fwd_ms'))} | "
                         f"{_fmt(t.get('fwdbwd_ms'))} | {_fmt(t.get('graph_fwd_ms'))} / "
                         f"{_fmt(t.get('graph_fwdbwd_ms'))} | {_fmt(t.get('host_fwd_ms'))} / "
                         f"{_fmt(t.get('host_fwdbwd_ms'))} | {t['target_ms']} | {_fmt(t.get('first_call_s'), 1)} | "
                         f"{errs} |")
        lines.append("")
    if report.get("decode"):
        lines += ["| decode step | Triton GPU / host ms | PyTorch GPU / host ms | error o / state |",
                  "|---|---|---|---|"]
        for r in report["decode"]:
            if "error" in r:
                lines.append(f"| B{r['B']} | failed: {r['error'][:80]} | | |")
                continue
            lines.append(f"| B{r['B']} H{r['H']} D{r['D']} | {_fmt(r.get('triton_graph_ms'))} / "
                         f"{_fmt(r.get('triton_host_ms'))} | {_fmt(r.get('torch_graph_ms'))} / "
                         f"{_fmt(r.get('torch_host_ms'))} | {r['error_o']:.1e} / {r['error_state']:.1e} |")
        lines.append("")
    names = [m for m in METHODS if any(m in e["methods"] for e in report["results"])]
    cols = " | ".join(f"{m} fwd / fwd+bwd ms (x) / MiB" for m in names)
    head = f"| mode | N | B | {cols} | triton err (o, dq) |"
    lines += [head, "|" + "---|" * (4 + len(names))]
    for e in report["results"]:
        base = e["methods"].get("triton", {})
        cells = []
        for m in names:
            res = e["methods"].get(m)
            if res is None:
                cells.append("n/a")
            elif "error" in res:
                cells.append("failed")
            else:
                ratio = (f" ({res['fwdbwd_ms'] / base['fwdbwd_ms']:.2f}x)"
                         if "fwdbwd_ms" in base and m != "triton" else "")
                cells.append(f"{res['fwd_ms']:.3f} / {res['fwdbwd_ms']:.3f}{ratio} / {res['peak_mem_mb']:.0f}")
        te = e.get("triton_errors") or {}
        err = f"{te['o']:.1e}, {te['dq']:.1e}" if "o" in te else "-"
        lines.append(f"| {e['mode']} | {e['N']} | {e['B']} | " + " | ".join(cells) + f" | {err} |")
    lines.append("")
    lines.append("(x) = method fwd+bwd time / triton fwd+bwd time (above 1: triton is faster).")
    for note in report["notes"]:
        lines.append(f"note: {note}")
    return "\n".join(lines)


def _plot(report: dict, path: str) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed: no plot")
        return
    modes = sorted({e["mode"] for e in report["results"]}, reverse=True)
    if not modes:
        return
    fig, axes = plt.subplots(1, len(modes), figsize=(6 * len(modes), 4.5), squeeze=False)
    for ax, mode in zip(axes[0], modes):
        rows = [e for e in report["results"] if e["mode"] == mode]
        for m in METHODS:
            pts = [(e["N"], e["methods"][m]["fwdbwd_ms"]) for e in rows
                   if m in e["methods"] and "fwdbwd_ms" in e["methods"][m]]
            if pts:
                ax.plot(*zip(*pts), marker="o", label=m)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("N (batch = tokens / N)")
        ax.set_ylabel("fwd+bwd ms (median)")
        ax.set_title(f"{mode}, {report['env']['dtype']}, H={report['env']['heads']} D={report['env']['dim']}")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    fig.suptitle(f"{report['env']['gpu']}, torch {report['env']['torch']}, triton {report['env']['triton']}")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    raise SystemExit(main())
