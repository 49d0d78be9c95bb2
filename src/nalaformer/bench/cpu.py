"""CPU benchmark of the main job's model (`make run`): the depthwise convolutions and the training step.

    python -m nalaformer.bench.cpu                       # this CPU
    ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 MKL_ENABLE_INSTRUCTIONS=AVX2 \\
        python -m nalaformer.bench.cpu                   # the same machine as an AVX2-only CPU
    python -m nalaformer.bench.cpu --profile             # + torch.profiler's table of one training step

Prints the CPU line of the run header, then
  * every depthwise convolution shape of the default model (batch 128, 32x32 input, channels_last):
    forward and backward ms of ``nn.Conv2d`` (oneDNN) and of the dense small-image form
    (:func:`~nalaformer.layers.depthwise_conv2d_dense`), with their largest relative difference;
  * training img/s (forward + backward + AdamW) with the model's depthwise convolutions as ``nn.Conv2d``,
    as :class:`~nalaformer.layers.DepthwiseConv2d` in the blocks, and everywhere (attention's lepe too),
    interleaved on one model so that a shared machine's load hits all three alike.
Times are medians of process CPU time (``--clock cpu``, the default: robust on a shared machine with one
thread) or of wall time (``--clock wall``).
"""

from __future__ import annotations

import argparse
import time

import torch

from ..layers import DepthwiseConv2d, depthwise_conv2d_dense
from ..train.core.hardware import cpu_summary
from ..train.vision.config import SMALL_NALAFORMER

CLOCKS = {"cpu": time.process_time, "wall": time.perf_counter}
MODES = ("conv2d", "blocks", "all")


def _median(fn, clock, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        start = clock()
        fn()
        times.append(clock() - start)
    return sorted(times)[len(times) // 2]


def build_model(batch: int, img_size: int):
    import timm

    import nalaformer  # noqa: F401  (registers the models)

    torch.manual_seed(0)
    model = timm.create_model("nalaformer_xt", num_classes=10, in_chans=1, **SMALL_NALAFORMER)
    model = model.to(memory_format=torch.channels_last)
    x = torch.randn(batch, 1, img_size, img_size).contiguous(memory_format=torch.channels_last)
    return model, x, torch.randint(0, 10, (batch,))


def depthwise_modules(model) -> list[tuple[str, torch.nn.Conv2d]]:
    return [(n, m) for n, m in model.named_modules() if isinstance(m, torch.nn.Conv2d) and m.groups > 1]


def set_mode(model, mode: str) -> None:
    """Swap the class of every depthwise conv (same parameters): nn.Conv2d, DepthwiseConv2d in the blocks only,
    or DepthwiseConv2d everywhere."""
    for name, module in depthwise_modules(model):
        fast = mode == "all" or (mode == "blocks" and "lepe" not in name)
        module.__class__ = DepthwiseConv2d if fast else torch.nn.Conv2d
        module.dense_on_cpu = fast  # the dense form whatever the CPU (the module's default decides by the CPU)


def conv_shapes(model, x) -> list[tuple[int, int, int, int]]:
    """(channels, height, width, kernel) of every depthwise conv call in one forward, in order, deduplicated."""
    seen = []

    def hook(module, args, _out):
        key = (module.in_channels, args[0].shape[-2], args[0].shape[-1], module.kernel_size[0])
        if key not in seen:
            seen.append(key)

    handles = [m.register_forward_hook(hook) for _, m in depthwise_modules(model)]
    was_training = model.training
    with torch.no_grad():
        model.eval()(x)
    model.train(was_training)
    for h in handles:
        h.remove()
    return seen


def bench_convs(model, x, clock, repeats: int) -> list[dict]:
    rows = []
    batch = x.shape[0]
    for channels, height, width, k in conv_shapes(model, x):
        conv = torch.nn.Conv2d(channels, channels, k, padding=k // 2, groups=channels)
        inp = torch.randn(batch, channels, height, width).contiguous(memory_format=torch.channels_last)
        inp.requires_grad_()
        grad = torch.randn_like(inp)
        row = {"shape": f"({batch}, {channels}, {height}, {width}) k{k}"}
        outs = {}
        for name, fn in (("conv2d", lambda: conv(inp)),
                         ("dense", lambda: depthwise_conv2d_dense(inp, conv.weight, conv.bias))):
            out = fn()
            outs[name] = (out, *torch.autograd.grad(out, (inp, conv.weight), grad, retain_graph=True))
            row[f"{name}_fwd_ms"] = 1e3 * _median(fn, clock, repeats)
            row[f"{name}_bwd_ms"] = 1e3 * _median(
                lambda o=out: torch.autograd.grad(o, (inp, conv.weight, conv.bias), grad, retain_graph=True),
                clock, repeats)
        row["rel_diff"] = max(((a - b).abs().max() / b.abs().max()).item()
                              for a, b in zip(outs["dense"], outs["conv2d"]))
        rows.append(row)
    return rows


def _train_step(model, x, y):
    """One AdamW training step of ``model`` on (x, y), as a closure."""
    opt = torch.optim.AdamW(model.parameters(), 1e-3)

    def step():
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()

    return step


def bench_training(model, x, y, clock, rounds: int, steps: int = 2) -> dict[str, float]:
    """Training img/s per mode, the modes interleaved round by round; medians over rounds."""
    step = _train_step(model, x, y)
    for mode in MODES:
        set_mode(model, mode)
        step()
    times = {mode: [] for mode in MODES}
    for _ in range(rounds):
        for mode in MODES:
            set_mode(model, mode)
            start = clock()
            for _ in range(steps):
                step()
            times[mode].append((clock() - start) / steps)
    return {mode: x.shape[0] / sorted(t)[len(t) // 2] for mode, t in times.items()}


def profile_step(model, x, y, mode: str = "conv2d", rows: int = 15) -> str:
    from torch.profiler import profile

    set_mode(model, mode)
    step = _train_step(model, x, y)
    step()
    with profile() as prof:
        for _ in range(3):
            step()
    return prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--img-size", type=int, default=32)
    parser.add_argument("--clock", choices=sorted(CLOCKS), default="cpu")
    parser.add_argument("--repeats", type=int, default=7, help="timed calls per conv measurement")
    parser.add_argument("--rounds", type=int, default=4, help="interleaved rounds of the training step")
    parser.add_argument("--profile", action="store_true", help="also print torch.profiler's table")
    parser.add_argument("--profile-mode", choices=MODES, default="conv2d")
    args = parser.parse_args(argv)
    clock = CLOCKS[args.clock]
    print(cpu_summary(), flush=True)
    model, x, y = build_model(args.batch_size, args.img_size)
    print("| depthwise conv | nn.Conv2d fwd / bwd ms | dense fwd / bwd ms | rel. diff |\n|---|---|---|---|")
    for r in bench_convs(model, x, clock, args.repeats):
        print(f"| {r['shape']} | {r['conv2d_fwd_ms']:.2f} / {r['conv2d_bwd_ms']:.2f} | "
              f"{r['dense_fwd_ms']:.2f} / {r['dense_bwd_ms']:.2f} | {r['rel_diff']:.1e} |", flush=True)
    rates = bench_training(model, x, y, clock, args.rounds)
    print(f"training img/s (batch {args.batch_size}, {args.img_size}x{args.img_size}, {args.clock} clock): "
          + ", ".join(f"{m} {v:,.0f}" for m, v in rates.items())
          + f"; blocks {rates['blocks'] / rates['conv2d']:.2f}x, all {rates['all'] / rates['conv2d']:.2f}x", flush=True)
    if args.profile:
        print(profile_step(model, x, y, args.profile_mode))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
