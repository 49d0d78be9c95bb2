"""Depthwise convolutions at nalaformer_t's shapes: our Triton kernels (ops.depthwise) vs cuDNN, one GPU.

    python benchmarks/bench_depthwise.py [--batch 128] [--size 224] [--dtype bfloat16] --out DIR

Per shape (the blocks' 3x3 position convs on C, the FFN's 3x3 on 4C, the lepe's 5x5 on C, for every stage):
GPU time of the forward and of forward + backward (input and weight gradients) in CUDA graphs
(``triton.testing.do_bench_cudagraph``: no host time), for ``F.conv2d`` on channels_last tensors (cuDNN, with
``cudnn.benchmark``) and for ``depthwise_conv2d_triton`` on the same tensors, after a warm-up that includes our
tuner; the byte floor (tensors read and written once at the bandwidth of a device copy measured in the same run).
Writes DIR/depthwise.json and prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import os

import torch
import torch.nn.functional as F

from nalaformer.ops.depthwise import depthwise_conv2d_triton

STAGES = ((64, 4), (128, 8), (256, 16), (512, 32))  # (channels, stride) of nalaformer_t


def shapes(batch: int, size: int) -> list[tuple[str, tuple[int, int, int, int], int]]:
    rows = []
    for stage, (c, stride) in enumerate(STAGES, 1):
        side = -(-size // stride)
        rows += [(f"s{stage} pos 3x3", (batch, c, side, side), 3), (f"s{stage} ffn 3x3", (batch, 4 * c, side, side), 3),
                 (f"s{stage} lepe 5x5", (batch, c, side, side), 5)]
    return rows


def copy_gbps(nbytes: int = 1 << 30) -> float:
    from triton.testing import do_bench

    a = torch.empty(nbytes // 2, dtype=torch.bfloat16, device="cuda")
    b = torch.empty_like(a)
    ms = do_bench(lambda: b.copy_(a), warmup=5, rep=50, return_mode="median")
    return 2 * nbytes / ms / 1e6


def time_pair(conv, x, w, bias, grad):
    from triton.testing import do_bench_cudagraph

    def fwd():
        conv(x, w, bias)

    def fwd_bwd():
        torch.autograd.grad(conv(x, w, bias), (x, w, bias), grad)

    for _ in range(3):  # compile, tune (outside the graphs)
        fwd_bwd()
    torch.cuda.synchronize()
    return (do_bench_cudagraph(fwd, rep=50, return_mode="median"),
            do_bench_cudagraph(fwd_bwd, rep=50, return_mode="median"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--dtype", default="bfloat16", choices=("bfloat16", "float16", "float32"))
    parser.add_argument("--out", default=os.environ.get("OUT", "."))
    args = parser.parse_args()
    torch.backends.cudnn.benchmark = True
    dtype = getattr(torch, args.dtype)
    gbps = copy_gbps()
    cudnn = lambda x, w, b: F.conv2d(x, w, b, padding=w.shape[-1] // 2, groups=x.shape[1])
    rows, el = [], torch.finfo(dtype).bits // 8
    for name, shape, k in shapes(args.batch, args.size):
        x = torch.randn(shape, device="cuda", dtype=dtype).contiguous(memory_format=torch.channels_last)
        x.requires_grad_()
        w = torch.randn(shape[1], 1, k, k, device="cuda", dtype=dtype, requires_grad=True)
        bias = torch.randn(shape[1], device="cuda", dtype=dtype, requires_grad=True)
        grad = torch.randn_like(x)
        with torch.no_grad():  # same result first
            err = ((depthwise_conv2d_triton(x, w, bias).float() - cudnn(x, w, bias).float()).norm()
                   / cudnn(x, w, bias).float().norm()).item()
        c_f, c_fb = time_pair(cudnn, x, w, bias, grad)
        o_f, o_fb = time_pair(depthwise_conv2d_triton, x, w, bias, grad)
        nbytes = x.numel() * el
        floor_f, floor_fb = 2 * nbytes / gbps / 1e6, 6 * nbytes / gbps / 1e6  # fwd: x, y; bwd: dy, dx, dy, x
        rows.append({"shape": name, "size": list(shape), "k": k, "cudnn_fwd_ms": c_f, "ours_fwd_ms": o_f,
                     "cudnn_fwd_bwd_ms": c_fb, "ours_fwd_bwd_ms": o_fb, "floor_fwd_ms": floor_f,
                     "floor_fwd_bwd_ms": floor_fb, "rel_err_vs_cudnn": err})
        print(json.dumps(rows[-1]), flush=True)
    total = {key: sum(r[key] for r in rows) for key in ("cudnn_fwd_ms", "ours_fwd_ms", "cudnn_fwd_bwd_ms",
                                                        "ours_fwd_bwd_ms", "floor_fwd_bwd_ms")}
    report = {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "dtype": args.dtype,
              "batch": args.batch, "size": args.size, "copy_GBps": gbps, "rows": rows, "total": total}
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "depthwise.json"), "w") as f:
        json.dump(report, f, indent=1)
    print(f"\n{report['device']}, {args.dtype}, batch {args.batch} at {args.size}^2, copy {gbps:.0f} GB/s\n")
    print("| shape | (B, C, H, W) | fwd cuDNN / ours ms | fwd+bwd cuDNN / ours ms | ours / byte floor |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['shape']} | {tuple(r['size'])} | {r['cudnn_fwd_ms']:.3f} / {r['ours_fwd_ms']:.3f} | "
              f"{r['cudnn_fwd_bwd_ms']:.3f} / {r['ours_fwd_bwd_ms']:.3f} | "
              f"{r['ours_fwd_bwd_ms'] / r['floor_fwd_bwd_ms']:.1f}x |")
    print(f"| all | | {total['cudnn_fwd_ms']:.2f} / {total['ours_fwd_ms']:.2f} | "
          f"{total['cudnn_fwd_bwd_ms']:.2f} / {total['ours_fwd_bwd_ms']:.2f} | "
          f"{total['ours_fwd_bwd_ms'] / total['floor_fwd_bwd_ms']:.1f}x |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
