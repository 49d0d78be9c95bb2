"""Host time of one eager NaLa fwd+bwd call (Triton backend): where the CPU time between launches goes.

    python benchmarks/profile_eager_host.py [--calls 200] --out DIR

For the stage-1 shape of nalaformer_t (B128 H1 N3136 D64, 2-D rotary) and causal B8 H16 T2048 D64, bf16, warm:
the host issue time per call (wall time of ``calls`` calls without synchronising) against the wall time with the
final synchronisation, then cProfile's 30 costliest functions (own time) and torch.profiler's CPU table over
20 calls. Writes DIR/host_profile.txt.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import time

import torch
from torch.profiler import ProfilerActivity, profile

from nalaformer import nala_attention
from nalaformer.ops.rope import rope_2d


def report(batch: int, n: int, heads: int, side: int, causal: bool, calls: int) -> str:
    q, k, v = (torch.randn(batch, n, heads, 64, device="cuda", dtype=torch.bfloat16, requires_grad=True)
               for _ in range(3))
    rope = None if causal else tuple(t.cuda() for t in rope_2d(side, side, 64, per_pair=True))
    grad = torch.randn_like(q)

    def call():
        torch.autograd.backward(nala_attention(q, k, v, causal=causal, rope=rope, backend="triton"), grad)

    for _ in range(5):
        call()
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(calls):
        call()
    host = (time.perf_counter() - start) / calls * 1e3
    torch.cuda.synchronize()
    wall = (time.perf_counter() - start) / calls * 1e3
    prof = cProfile.Profile()
    prof.enable()
    for _ in range(calls):
        call()
    prof.disable()
    torch.cuda.synchronize()
    text = io.StringIO()
    pstats.Stats(prof, stream=text).sort_stats("tottime").print_stats(30)
    with profile(activities=[ProfilerActivity.CPU]) as tprof:
        for _ in range(20):
            call()
        torch.cuda.synchronize()
    head = f"== B{batch} N{n} H{heads} D64 causal={causal}: host issue {host:.3f} ms/call, wall {wall:.3f} ms/call\n"
    return head + text.getvalue() + tprof.key_averages().table(sort_by="self_cpu_time_total", row_limit=25) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--out", default=os.environ.get("OUT", "."))
    args = parser.parse_args()
    out = report(128, 3136, 1, 56, False, args.calls) + report(8, 2048, 16, 0, True, args.calls)
    print(out)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "host_profile.txt"), "w") as f:
        f.write(out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
