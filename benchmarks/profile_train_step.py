"""Where a training step's GPU time goes: compiled step of timm models (bf16 autocast, channels_last, fused AdamW).

    python benchmarks/profile_train_step.py --models nalaformer_t,swin_tiny_patch4_window7_224 \\
        --sizes 224:128,896:8 [--mode reduce-overhead] [--depthwise-form triton|shifted] --out DIR

Per (model, resolution): images/s over 20 steps after 5 warm-up steps (the first, compiling step timed apart),
peak memory, CUDA kernel time per step by kernel family and the top kernels (torch.profiler over 3 steps).
A step time well above the kernel time means the host (Python and kernel launches) is the bound.
Writes DIR/profile.json after every row.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import time

import timm
import torch
import torch.nn.functional as F
from torch.profiler import ProfilerActivity, profile

import nalaformer  # noqa: F401  (registers the nalaformer_* models with timm)
from nalaformer.layers.conv import DEPTHWISE_GPU_FORMS, DepthwiseConv2d

FAMILIES = (  # (family, name fragments); the first match wins: cuDNN's SDPA kernels also say 'cudnn'
    ("softmax attention (SDPA)", ("sdpa", "flash", "fmha")),
    ("convolution", ("conv", "dgrad", "wgrad", "cudnn", "implicit_gemm", "depthwise")),
    ("GEMM", ("gemm", "nvjet", "cutlass", "xmma", "matmul", "wgmma")),
    ("inductor-fused elementwise/norm", ("triton_",)),
    ("optimizer", ("multi_tensor", "adam", "foreach")),
    ("aten elementwise/reduce", ("elementwise", "vectorized", "reduce", "layer_norm")),
    ("copy/memset", ("memcpy", "memset")),
)


NALA_KERNELS = ("nc_fwd_", "nc_bwd_", "c_fwd_kernel", "c_bwd_", "c_segsum", "decode_kernel")  # ops/triton/_kernels.py
DEPTHWISE_KERNELS = ("dwconv_",)  # ops/depthwise/_kernels.py


def family(kernel: str) -> str:
    name = kernel.lower()
    if name.startswith(NALA_KERNELS):
        return "NaLa op (Triton)"
    if name.startswith(DEPTHWISE_KERNELS):
        return "depthwise conv (Triton, ours)"
    return next((fam for fam, parts in FAMILIES if any(p in name for p in parts)), "other")


def profile_one(name: str, size: int, batch: int, compile_mode: str | None, compiled: bool) -> dict:
    torch._dynamo.reset()
    torch.cuda.empty_cache()
    kwargs = {"img_size": size} if size != 224 and not name.startswith("nalaformer") else {}
    model = timm.create_model(name, num_classes=1000, **kwargs).cuda().to(memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)
    forward = torch.compile(model, dynamic=False, mode=compile_mode) if compiled else model
    x = torch.randn(batch, 3, size, size, device="cuda").to(memory_format=torch.channels_last)
    y = torch.randint(0, 1000, (batch,), device="cuda")

    def step():
        torch.compiler.cudagraph_mark_step_begin()
        with torch.autocast("cuda", torch.bfloat16):
            loss = F.cross_entropy(forward(x), y)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    start = time.time()
    step()
    torch.cuda.synchronize()
    first = time.time() - start
    for _ in range(5):
        step()
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    begin.record()
    for _ in range(20):
        step()
    end.record()
    torch.cuda.synchronize()
    step_ms = begin.elapsed_time(end) / 20
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(3):
            step()
        torch.cuda.synchronize()
    kernels = sorted(((e.key, e.device_time_total / 3e3, e.count // 3) for e in prof.key_averages()
                      if e.device_time_total > 0), key=lambda r: -r[1])
    families = collections.Counter()
    for kernel, ms, _ in kernels:
        families[family(kernel)] += ms
    return dict(model=name, size=size, batch=batch, compiled=compiled, mode=compile_mode,
                first_step_s=round(first, 1), step_ms=round(step_ms, 2), img_s=round(batch / step_ms * 1e3, 1),
                peak_gib=round(torch.cuda.max_memory_allocated() / 2**30, 2),
                kernel_ms_per_step=round(sum(ms for _, ms, _ in kernels), 2),
                families={k: round(v, 2) for k, v in families.most_common()},
                top=[(k[:110], round(ms, 3), c) for k, ms, c in kernels[:40]])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", default="nalaformer_t,swin_tiny_patch4_window7_224")
    parser.add_argument("--sizes", default="224:128,896:8", help="SIZE:BATCH pairs")
    parser.add_argument("--mode", default=None, help="torch.compile mode, e.g. reduce-overhead (CUDA graphs)")
    parser.add_argument("--eager", action="store_true", help="do not compile")
    parser.add_argument("--depthwise-form", default="cudnn", choices=DEPTHWISE_GPU_FORMS,
                        help="nalaformer depthwise convs on CUDA: cuDNN, our Triton kernels, or (compiled) the "
                             "shifted form inductor fuses")
    parser.add_argument("--out", default=os.environ.get("OUT", "."))
    args = parser.parse_args()
    torch.backends.cudnn.benchmark = True
    DepthwiseConv2d.gpu_form = args.depthwise_form
    rows = []
    for name in args.models.split(","):
        for spec in args.sizes.split(","):
            size, batch = map(int, spec.split(":"))
            row = profile_one(name, size, batch, args.mode, not args.eager)
            row["depthwise_form"] = args.depthwise_form
            rows.append(row)
            print(f"\n=== {name} {size}^2 batch {batch} mode={args.mode}: {row['img_s']} img/s, "
                  f"step {row['step_ms']} ms, kernels {row['kernel_ms_per_step']} ms, peak {row['peak_gib']} GiB, "
                  f"first step {row['first_step_s']} s")
            for fam, ms in row["families"].items():
                print(f"   {fam:<34} {ms:8.2f} ms  {100 * ms / row['kernel_ms_per_step']:5.1f}%")
            for kernel, ms, count in row["top"][:25]:
                print(f"   {ms:8.3f} ms x{count:<4} {kernel[:100]}")
            with open(os.path.join(args.out, "profile.json"), "w") as f:
                json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
