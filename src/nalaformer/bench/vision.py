"""Vision benchmark: NaLaFormer (ours) vs the authors' math, Swin-T and ConvNeXt-T, in one run.

    python -m nalaformer.bench.vision --out DIR                  # the H200 run
    python -m nalaformer.bench.vision --out DIR --device cpu --quick   # a smoke test
    nalaformer bench vision --out DIR --compile --img-size 896 --infer-batch 16 --train-batch 8   # compiled vs compiled

Measures, all under bf16 autocast with channels_last tensors:
  * inference img/s (batch 256, 224^2) and training img/s (batch 128, forward + backward + SGD step)
    of nalaformer_t / nalaformer_s, the authors' formulation of the same networks (re-created from spec §5-§6
    with the released layout: permutes, per-forward rotary tables, an fp32 attention island; it lives outside the
    package, in the checkout's benchmarks/baselines/nalaformer_authors.py),
    timm's swin_tiny_patch4_window7_224 and convnext_tiny;
  * that our outputs equal the authors' math: ours in fp32 within 1e-4 (TF32 off for the check), ours in bf16
    within bf16 tolerance;
  * peak training memory at 1024^2 (batch 4), ours vs the authors'.
Prints a table with ratios and writes ``DIR/vision_bench.json``. The authors' baseline runs in two
variants: ``authors`` (its attention island really in fp32: autocast off inside it, as the released code
intends with its ``.float()`` casts) and ``authors_autocast`` (the released code as-is under autocast,
where the island's matmuls drop back to bf16).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import platform
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from ..layers.conv import DEPTHWISE_GPU_FORMS, DepthwiseConv2d

# The authors' model lives outside the installed package, in the checkout's benchmarks/baselines/.
BASELINES_ENV = "NALAFORMER_BASELINES"
AUTHORS_FILE = "nalaformer_authors.py"


def baselines_dir() -> Path:
    """``$NALAFORMER_BASELINES`` if set, else ``benchmarks/baselines`` of the checkout this package runs from."""
    import os

    if os.environ.get(BASELINES_ENV):
        return Path(os.environ[BASELINES_ENV])
    return Path(__file__).resolve().parents[3] / "benchmarks" / "baselines"


def authors_model_class():
    """``AuthorsNaLaFormer`` from ``benchmarks/baselines/nalaformer_authors.py`` (FileNotFoundError saying what
    is needed when the file is absent, e.g. in an installed wheel)."""
    import importlib.util

    path = baselines_dir() / AUTHORS_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"the vision benchmark's baseline (the authors' model) is not installed with the package: {path} not "
            f"found. Run `nalaformer bench vision` from a checkout of the repository (pip install -e .), or set "
            f"{BASELINES_ENV}=DIR to a directory holding {AUTHORS_FILE}")
    name = "nalaformer_baselines_authors"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name].AuthorsNaLaFormer


# ---------------------------------------------------------------------------------------------------------
# Harness
# ---------------------------------------------------------------------------------------------------------


IMPLS = ("ours", "authors", "authors_autocast")


@dataclass
class Settings:
    device: str
    models: tuple[str, ...] = ("nalaformer_t", "nalaformer_s")
    image_size: int = 224
    infer_batch: int = 256
    train_batch: int = 128
    mem_size: int = 1024
    mem_batch: int = 4
    warmup: int = 10
    iters: int = 30
    check_batch: int = 8
    compile: bool = False
    compile_mode: str = "default"
    depthwise_form: str = "cudnn"  # DepthwiseConv2d.gpu_form for our models
    references: tuple[str, ...] = ("swin_tiny_patch4_window7_224", "convnext_tiny")
    impls: tuple[str, ...] = IMPLS


@dataclass
class Result:
    model: str
    impl: str
    mode: str
    img_per_s: float | None = None
    ms_per_iter: float | None = None
    peak_mem_gib: float | None = None
    warmup_s: float | None = None  # the warm-up calls (compilation, autotuning, cuDNN's choice), timed apart
    note: str = ""
    extra: dict = field(default_factory=dict)


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _autocast(device: str):
    return torch.autocast("cuda" if device.startswith("cuda") else "cpu", dtype=torch.bfloat16)


def _images(batch: int, size: int, device: str, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, 3, size, size, generator=g)
    return x.to(device).contiguous(memory_format=torch.channels_last)


def _released_config(name: str) -> dict:
    """The entrypoint's released constructor args (dims, depths, heads, mlp, LayerScale)."""
    import timm

    with torch.device("meta"):
        model = timm.create_model(name)
    stages = model.stages
    return dict(
        embed_dims=list(model.embed_dims),
        depths=[len(s.blocks) for s in stages],
        num_heads=[s.blocks[0].attn.num_heads for s in stages],
        mlp_ratios=[s.blocks[0].mlp.fc1.out_features / model.embed_dims[i] for i, s in enumerate(stages)],
        layer_scale_init_values=[s.blocks[0].ls1.init_values for s in stages],
    )


def build_pair(name: str, device: str, seed: int = 0):
    """(ours, authors fp32 island, authors as-is under autocast): one random init, the same weights."""
    import timm

    from ..models.vision.nalaformer import checkpoint_filter_fn

    AuthorsNaLaFormer = authors_model_class()
    torch.manual_seed(seed)
    config = _released_config(name)
    authors = AuthorsNaLaFormer(**config, fp32_island=True)
    ours = timm.create_model(name, drop_path_rate=0.0)
    ours.load_state_dict(checkpoint_filter_fn(authors.state_dict(), ours))
    authors_autocast = AuthorsNaLaFormer(**config, fp32_island=False)
    authors_autocast.load_state_dict(authors.state_dict())
    return [m.to(device).to(memory_format=torch.channels_last) for m in (ours, authors, authors_autocast)]


def _time(step, settings: Settings) -> tuple[float, float, float | None]:
    """(seconds per call of ``step`` after warm-up, seconds of the warm-up calls: compilation included, peak GiB
    allocated during the timed calls: CUDA only, else None)."""
    start = time.perf_counter()
    for _ in range(settings.warmup):
        step()
    _sync(settings.device)
    warmup = time.perf_counter() - start
    cuda = settings.device.startswith("cuda")
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    for _ in range(settings.iters):
        step()
    _sync(settings.device)
    peak = torch.cuda.max_memory_allocated() / 2 ** 30 if cuda else None
    return (time.perf_counter() - start) / settings.iters, warmup, peak


def bench_inference(model, settings: Settings) -> tuple[float, float, float | None]:
    model.eval()
    x = _images(settings.infer_batch, settings.image_size, settings.device)

    def step():
        with torch.inference_mode(), _autocast(settings.device):
            model(x)

    return _time(step, settings)


def _train_step(model, x, labels, optimizer, device):
    with _autocast(device):
        loss = F.cross_entropy(model(x).float(), labels)
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def bench_training(model, settings: Settings) -> tuple[float, float, float | None]:
    model.train()
    x = _images(settings.train_batch, settings.image_size, settings.device)
    labels = torch.randint(0, 1000, (settings.train_batch,), device=settings.device)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)
    return _time(lambda: _train_step(model, x, labels, optimizer, settings.device), settings)


def peak_training_memory(model, settings: Settings) -> tuple[float | None, str]:
    """Peak GiB allocated by one training step at mem_size^2 (after one warm-up step); CUDA only."""
    if not settings.device.startswith("cuda"):
        return None, "CUDA only"
    model.train()
    x = _images(settings.mem_batch, settings.mem_size, settings.device)
    labels = torch.randint(0, 1000, (settings.mem_batch,), device=settings.device)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)
    try:
        _train_step(model, x, labels, optimizer, settings.device)
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        _train_step(model, x, labels, optimizer, settings.device)
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() / 2 ** 30, ""
    except torch.cuda.OutOfMemoryError:
        return None, "out of memory"
    finally:
        optimizer.zero_grad(set_to_none=True)
        del optimizer
        torch.cuda.empty_cache()


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double(), b.double()
    return ((a - b).norm() / b.norm().clamp_min(1e-30)).item()


def check_compiled(compiled, eager, settings: Settings) -> dict:
    """The compiled model against the same module run eagerly, on the timed inference batch (bf16 autocast)."""
    eager.eval()
    x = _images(settings.infer_batch, settings.image_size, settings.device, seed=2)
    with torch.inference_mode(), _autocast(settings.device):
        got, want = compiled(x), eager(x)
    err = _rel(got, want)
    return {"rel_err_bf16": err, "tolerance_bf16": 3e-2, "passed": bool(math.isfinite(err) and err <= 3e-2)}


@contextlib.contextmanager
def exact_fp32():
    """TF32 off for cuDNN convolutions and CUDA matmuls inside the block, the previous flags restored after.

    PyTorch lets cuDNN convolutions use TF32 by default (10-bit mantissa): on an H200 that alone moves both
    networks' fp32 logits ~3e-4 away from a CPU fp32 run, so an fp32 comparison only means something without it.
    """
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def check_equal(ours, authors, settings: Settings) -> dict:
    """ours vs the authors' math on the same weights: fp32 vs fp32 (TF32 off) and bf16-autocast vs fp32."""
    ours.eval()
    authors.eval()
    x = _images(settings.check_batch, settings.image_size, settings.device, seed=1)
    with torch.inference_mode(), exact_fp32():
        reference = authors(x)
        fp32 = ours(x)
        with _autocast(settings.device):
            bf16 = ours(x)
            authors_bf16 = authors(x)
    result = {
        "rel_err_fp32": _rel(fp32, reference),
        "rel_err_bf16": _rel(bf16, reference),
        "authors_bf16_rel_err": _rel(authors_bf16, reference),
        "tolerance_fp32": 1e-4,
        "tolerance_bf16": 3e-2,
    }
    result["passed"] = bool(result["rel_err_fp32"] <= 1e-4 and result["rel_err_bf16"] <= 3e-2
                            and math.isfinite(result["rel_err_bf16"]))
    return result


def _maybe_compile(model, settings: Settings):
    """``torch.compile`` under ``--compile``, for every model alike (ours, the authors', the references)."""
    if not settings.compile:
        return model
    if settings.compile_mode == "default":
        return torch.compile(model)
    return torch.compile(model, mode=settings.compile_mode)


def _measure(name: str, impl: str, mode: str, bench, model, settings: Settings) -> Result:
    seconds, warmup, peak = bench(model, settings)
    return _progress(Result(name, impl, mode, ms_per_iter=1e3 * seconds, warmup_s=warmup, peak_mem_gib=peak,
                            extra={"compiled": settings.compile}), settings)


def _progress(result: Result, settings: Settings) -> Result:
    """Print one throughput row as soon as it is measured (a cut-off run still leaves its numbers)."""
    batch = settings.infer_batch if result.mode == "inference" else settings.train_batch
    peak = "" if result.peak_mem_gib is None else f", peak {result.peak_mem_gib:.2f} GiB"
    print(f"  {result.model} {result.impl} {result.mode}: {result.ms_per_iter:.2f} ms/iter, "
          f"{batch / (result.ms_per_iter / 1e3):.1f} img/s (warm-up {result.warmup_s:.1f} s{peak})", flush=True)
    return result


def run(settings: Settings) -> dict:
    import timm

    if settings.device.startswith("cuda"):
        torch.backends.cudnn.benchmark = True
    DepthwiseConv2d.gpu_form = settings.depthwise_form
    results: list[Result] = []
    checks: dict[str, dict] = {}
    compiled_checks: dict[str, dict] = {}
    for name in settings.models:
        ours, authors, authors_autocast = build_pair(name, settings.device)
        checks[name] = check_equal(ours, authors, settings)
        impls = {"ours": ours, "authors": authors, "authors_autocast": authors_autocast}
        impls = {impl: _maybe_compile(model, settings) for impl, model in impls.items() if impl in settings.impls}
        for impl, model in impls.items():
            for mode, bench in (("inference", bench_inference), ("training", bench_training)):
                results.append(_measure(name, impl, mode, bench, model, settings))
                if impl == "ours" and mode == "inference" and settings.compile:
                    compiled_checks[name] = check_compiled(model, ours, settings)
                    print(f"  {name} compiled vs eager: {compiled_checks[name]}", flush=True)
        for impl, model in (("ours", ours), ("authors", authors), ("authors_autocast", authors_autocast)):
            if impl not in settings.impls:
                continue
            peak, note = peak_training_memory(model, settings)
            results.append(Result(name, impl, f"train_mem_{settings.mem_size}", peak_mem_gib=peak, note=note,
                                  extra={"batch": settings.mem_batch}))
        del ours, authors, authors_autocast, impls
        if settings.device.startswith("cuda"):
            torch.cuda.empty_cache()
    for name in settings.references:
        kwargs = {"img_size": settings.image_size} if name.startswith("swin") else {}
        model = timm.create_model(name, **kwargs).to(settings.device).to(memory_format=torch.channels_last)
        model = _maybe_compile(model, settings)
        for mode, bench in (("inference", bench_inference), ("training", bench_training)):
            results.append(_measure(name, "timm", mode, bench, model, settings))
        del model
    for r in results:
        if r.ms_per_iter is not None:
            batch = settings.infer_batch if r.mode == "inference" else settings.train_batch
            r.img_per_s = batch / (r.ms_per_iter / 1e3)
    return {"settings": asdict(settings), "environment": _environment(settings),
            "results": [asdict(r) for r in results], "correctness": checks, "compiled_vs_eager": compiled_checks}


def _environment(settings: Settings) -> dict:
    import timm

    env = {"python": platform.python_version(), "torch": torch.__version__, "timm": timm.__version__,
           "device": settings.device}
    if settings.device.startswith("cuda"):
        env["gpu"] = torch.cuda.get_device_name()
    return env


def _find(rows, model, impl, mode):
    return next((r for r in rows if r["model"] == model and r["impl"] == impl and r["mode"] == mode), None)


def _ratio(value, base) -> str:
    return f"{value / base:.2f}x" if value is not None and base else ""


def _seconds(value) -> str:
    return f"{value:.1f}" if value is not None else ""


def format_table(report: dict) -> str:
    """Throughput rows with ratios to the authors' math and to the first reference; memory rows; checks."""
    rows = report["results"]
    references = report["settings"]["references"]
    ref_name = references[0] if references else None
    header = f"{'model':<30} {'impl':<17} {'mode':<16} {'img/s':>9} {'ms/iter':>9} {'vs authors':>10} " \
             f"{'vs ' + str(ref_name)[:12]:>15} {'peak GiB':>9} {'warm-up s':>9}"
    lines = [header, "-" * len(header)]
    for r in rows:
        base = _find(rows, r["model"], "authors", r["mode"])
        if r["mode"] in ("inference", "training"):
            ref = _find(rows, ref_name, "timm", r["mode"]) if ref_name else None
            vs_authors = _ratio(r["img_per_s"], base and base["img_per_s"]) if r["impl"] != "authors" else ""
            vs_ref = _ratio(r["img_per_s"], ref and ref["img_per_s"])
            peak = "" if r.get("peak_mem_gib") is None else f"{r['peak_mem_gib']:.2f}"
            lines.append(f"{r['model']:<30} {r['impl']:<17} {r['mode']:<16} {r['img_per_s']:>9.1f} "
                         f"{r['ms_per_iter']:>9.2f} {vs_authors:>10} {vs_ref:>15} {peak:>9} "
                         f"{_seconds(r.get('warmup_s')):>9}")
        else:
            peak = f"{r['peak_mem_gib']:.2f}" if r["peak_mem_gib"] is not None else (r["note"] or "-")[:9]
            vs_authors = _ratio(r["peak_mem_gib"], base and base["peak_mem_gib"]) if r["impl"] != "authors" else ""
            lines.append(f"{r['model']:<30} {r['impl']:<17} {r['mode']:<16} {'':>9} {'':>9} {vs_authors:>10} "
                         f"{'':>15} {peak:>9}")
    mode = report["settings"].get("compile_mode", "default")
    compiled = (f"every model torch.compile'd (mode {mode})" if report["settings"].get("compile")
                else "every model eager")
    lines += ["", f"{compiled}; warm-up s: the {report['settings'].get('warmup')} untimed warm-up calls "
                  "(compilation included), reported apart from the timed ones"]
    lines.append("")
    for name, check in report["correctness"].items():
        status = "PASS" if check["passed"] else "FAIL"
        lines.append(f"{status} {name}: ours vs the authors' math, relative error fp32 {check['rel_err_fp32']:.2e} "
                     f"(<= {check['tolerance_fp32']:g}), ours bf16 {check['rel_err_bf16']:.2e} "
                     f"(<= {check['tolerance_bf16']:g}; the authors' own bf16: {check['authors_bf16_rel_err']:.2e})")
    for name, check in report.get("compiled_vs_eager", {}).items():
        lines.append(f"{'PASS' if check['passed'] else 'FAIL'} {name}: torch.compile vs eager (bf16), relative error "
                     f"{check['rel_err_bf16']:.2e} (<= {check['tolerance_bf16']:g})")
    return "\n".join(lines)


def parse_args(argv=None) -> tuple[Settings, Path]:
    parser = argparse.ArgumentParser(prog="python -m nalaformer.bench.vision", description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="directory for vision_bench.json")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--quick", action="store_true", help="tiny sizes and few iterations (smoke test)")
    parser.add_argument("--models", nargs="*",
                        help="nalaformer variants (default: nalaformer_t nalaformer_s; the flag with no names: none, "
                             "to time the references alone)")
    parser.add_argument("--references", nargs="*",
                        help="timm reference models (default: Swin-T, ConvNeXt-T; the flag with no names: none)")
    parser.add_argument("--impls", nargs="+", choices=IMPLS,
                        help="which implementations of each nalaformer model to time (default: all; the equality "
                             "check against the authors' math runs regardless)")
    parser.add_argument("--img-size", "--image-size", dest="image_size", type=int,
                        help="image side for the throughput rows (default 224; Swin is built for it)")
    for flag in ("infer-batch", "train-batch", "mem-size", "mem-batch", "warmup", "iters"):
        parser.add_argument(f"--{flag}", type=int)
    parser.add_argument("--compile", action="store_true",
                        help="torch.compile every model (ours, the authors', the references): compiled vs compiled; "
                             "the warm-up calls, compilation included, are reported apart (warmup_s)")
    parser.add_argument("--depthwise-form", choices=DEPTHWISE_GPU_FORMS, default="cudnn",
                        help="our depthwise convolutions on CUDA: cuDNN, our Triton kernels (ops.depthwise), or "
                             "(under --compile) the shifted form inductor fuses (layers.conv.depthwise_conv2d_shifted)")
    parser.add_argument("--compile-mode", choices=("default", "reduce-overhead", "max-autotune"), default="default",
                        help="torch.compile mode for every model alike (reduce-overhead: CUDA graphs)")
    args = parser.parse_args(argv)
    settings = Settings(device=args.device)
    if args.quick:
        settings = Settings(device=args.device, models=("nalaformer_t",), image_size=64, infer_batch=2,
                            train_batch=2, mem_size=128, mem_batch=1, warmup=1, iters=2, check_batch=2,
                            references=("convnext_tiny",))
    if args.models is not None:
        settings.models = tuple(args.models)
    if args.references is not None:
        settings.references = tuple(args.references)
    if args.impls:
        settings.impls = tuple(args.impls)
    for flag in ("image_size", "infer_batch", "train_batch", "mem_size", "mem_batch", "warmup", "iters"):
        if getattr(args, flag) is not None:
            setattr(settings, flag, getattr(args, flag))
    settings.compile, settings.compile_mode = args.compile, args.compile_mode
    settings.depthwise_form = args.depthwise_form
    return settings, args.out


def main(argv=None) -> int:
    import nalaformer.models.vision.nalaformer  # noqa: F401  registers the timm models

    settings, out = parse_args(argv)
    if settings.device.startswith("cuda") and not torch.cuda.is_available():
        print("--device cuda requested but CUDA is not available (use --device cpu --quick)", file=sys.stderr)
        return 2
    report = run(settings)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "vision_bench.json"
    path.write_text(json.dumps(report, indent=2))
    print(format_table(report))
    print(f"\nwrote {path}")
    checks = list(report["correctness"].values()) + list(report["compiled_vs_eager"].values())
    return 0 if all(c["passed"] for c in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
