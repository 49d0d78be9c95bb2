"""Host side of the fused Triton NaLa kernels: launch plans, autotuning, autograd.

Non-causal (2 launches forward, 3 backward; no 2D-feature tensor is ever written to memory, the forward
keeps one fp32 denominator per token for the backward):
  forward   state  per (split of N, head, sequence): phi_k, R phi_k -> S = sum R phi_k v^T, m = sum phi_k
                   (fp32 atomics into a (S, H, 2D, Dv) workspace; S/N, m/N are taken when loading)
            out    per (split, head, sequence): phi_q, R phi_q -> o = (R phi_q)^T S/N / (phi_q . m/N + eps)
  backward  q      from the forward's o and den: g = dO / den, gden = -(g . o); dq = J^T (R^T S g + gden m)
            sum    recompute phi_q; dS = sum R phi_q g^T, dm = sum phi_q gden (atomics)
            (q and sum are one kernel, ``nc_bwd_qside``, launched for either or, fused, for both)
            kv     recompute phi_k; dv = (R phi_k)^T dS / N, dk = J^T (R^T dS v / N + dm / N)
Causal (chunkwise: intra-chunk quadratic part + running state). Each sequence is cut into segments that
run in parallel: a per-segment sum pass (the non-causal state kernel, one slot per segment), an exclusive
prefix over segments (+ the initial state), then one program per (segment, head) walks its chunks.
  forward   stores o and z = den + eps * count per token
  backward  forward sweep: dq, dz = -(dO . o) / z and per-segment totals of R phi_q dnum^T, phi_q dz;
            a reverse prefix of those gives the state gradient leaving each segment;
            reverse sweep: dk, dv; d(initial state) = d(final state) + all totals
"""

from __future__ import annotations

import functools
import itertools
import math
import os
from dataclasses import dataclass

import torch

from ..autocast import outside_autocast
from ..state import NaLaState
from . import _tune
from ._loader import interpreter_enabled, load_kernels

__all__ = ["nala_attention_triton", "nala_decode_step_triton"]

POISON = False  # tests set this: every buffer the kernels must fill starts as NaN
INTERPRET_PREFETCH = True  # the interpreter's config: tests flip it to cover both loop forms
# non-causal backward with dq and dk/dv wanted: one fused q-side pass or the two separate kernels.
# "separate" / "fused" force one; None = the tuner times both. On an H200 (2026-11-28, bf16, D = Dv = 64) the
# fused form was correct but slower (0.695 vs 0.436 ms: one program holding both paths spills), so the
# default is "separate" (NALAFORMER_TRITON_FUSED_QSUM=1 lets the tuner time both, e.g. on other GPUs).
QSUM_MODE: str | None = None if os.environ.get("NALAFORMER_TRITON_FUSED_QSUM", "0") == "1" else "separate"


def _empty(shape, dtype, device) -> torch.Tensor:
    if POISON:
        return torch.full(tuple(shape), float("nan"), dtype=dtype, device=device)
    return torch.empty(tuple(shape), dtype=dtype, device=device)


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


def _last_contig(t: torch.Tensor | None) -> torch.Tensor | None:
    if t is None:
        return None
    return t if t.stride(-1) == 1 else t.contiguous()


def prepare_inputs(q, k, v, rope, cu_seqlens):
    """Unit last-dim strides for q, k, v and the tables, contiguous offsets: (q, k, v, sin, cos, cu)."""
    sin, cos = (None, None) if rope is None else (_last_contig(rope[0]), _last_contig(rope[1]))
    cu = None if cu_seqlens is None else cu_seqlens.contiguous()
    return _last_contig(q), _last_contig(k), _last_contig(v), sin, cos, cu


@dataclass(frozen=True)
class _Plan:
    relu: bool
    lam: float
    tau: float
    alpha: float
    eps: float
    norm_eps: float
    pow3: bool
    lowp: bool
    interpret: bool
    varlen: bool
    nseq: int
    max_len: int
    n_sm: int
    klimit: int  # keys are scaled down once max|k| >= 2^klimit (|k|^lam would near fp32's range)


@functools.cache
def _sm_count(index: int) -> int:
    return torch.cuda.get_device_properties(index).multi_processor_count


def _make_plan(q, inhibit, lam, tau, alpha, eps, norm_eps, cu_seqlens, max_seqlen=None) -> _Plan:
    interpret = q.device.type != "cuda"
    if interpret and not interpreter_enabled():
        raise ValueError("backend: 'triton' runs on CUDA tensors (or on CPU with TRITON_INTERPRET=1)")
    if cu_seqlens is None:
        nseq, max_len = q.shape[0], q.shape[1]
    elif max_seqlen is not None:  # the caller's hint: no read-back of the offsets
        nseq, max_len = cu_seqlens.shape[0] - 1, max_seqlen
    else:
        offs = cu_seqlens.tolist()
        nseq = len(offs) - 1
        max_len = max([b - a for a, b in itertools.pairwise(offs)] + [1])
    n_sm = 4 if interpret else _sm_count(q.device.index if q.device.index is not None else torch.cuda.current_device())
    return _Plan(relu=inhibit == "relu", lam=float(lam), tau=float(tau), alpha=float(alpha), eps=float(eps),
                 norm_eps=float(norm_eps), pow3=float(lam) == 3.0,
                 lowp=(q.dtype in (torch.float16, torch.bfloat16)) and not interpret, interpret=interpret,
                 varlen=cu_seqlens is not None, nseq=nseq, max_len=max(int(max_len), 1), n_sm=n_sm,
                 klimit=math.floor(math.log2(torch.finfo(torch.float32).max) / (2 * float(lam))))


def key_max(k: torch.Tensor) -> torch.Tensor:
    """max|k| as a 1-element fp32 tensor (one reduction, on the device: no sync). The kernels derive the
    power of two they scale the keys by from it (``_key_scale`` in _kernels, :func:`key_scale_of` here)."""
    return torch.linalg.vector_norm(k, float("inf"), dtype=torch.float32).reshape(1)


def key_scale_of(kmax: torch.Tensor, plan: _Plan) -> tuple[torch.Tensor, torch.Tensor]:
    """(s, s^lam) exactly as the kernels compute them: s = 2^-max(0, ceil(log2 max|k|) - klimit), 1 for a
    NaN or inf maximum. NaLa is scale free in k: keys times s scale numerator, denominator, states and (scaled
    alike) eps by s^lam, so with huge keys the result is exact instead of an overflowed |k|^lam."""
    bits = kmax.view(torch.int32)
    expo = (bits >> 23) & 255
    ceil_log2 = expo - 127 + ((bits & 0x7FFFFF) != 0).to(torch.int32)
    excess = torch.where(expo == 255, 0, (ceil_log2 - plan.klimit).clamp_min(0))
    scale = ((127 - excess) << 23).view(torch.float32)
    spow = scale * scale * scale if plan.pow3 else torch.exp2(-excess.to(torch.float32) * plan.lam)
    return scale, spow


def _split(max_len: int, block: int, programs: int, n_sm: int, cps: int = 2) -> tuple[int, int]:
    """(number of splits of N, blocks per split): about ``cps`` programs per SM, in whole waves (the kernels
    are register-bound at 1-2 resident programs per SM, so a partial last wave costs a whole one)."""
    nblk = max(1, _cdiv(max_len, block))
    split = max(1, min(nblk, round(cps * n_sm / max(programs, 1))))
    bps = _cdiv(nblk, split)
    return _cdiv(nblk, bps), bps


def _dtype_key(q: torch.Tensor) -> str:
    return str(q.dtype).replace("torch.", "")


# ------------------------------------------------------------------------------------------------
# launch configurations: a handful per kernel, keyed on (D, Dv, dtype)
# ------------------------------------------------------------------------------------------------
def _cfg(block, warps, stages, block_dv=None, cps=None, maxnreg=None, prefetch=None):
    c = {"BLOCK": block, "num_warps": warps, "num_stages": stages}
    if prefetch is not None:  # non-causal kernels: load the next block's q/k tile one iteration ahead
        c["PREFETCH"] = prefetch
    if block_dv is not None:
        c["BLOCK_DV"] = block_dv
    if cps is not None:  # programs per SM the grid aims at (non-causal splits of N); no recompilation
        c["CPS"] = cps
    if maxnreg is not None:  # cap registers: more resident warps, some spills
        c["maxnreg"] = maxnreg
    return c


def _candidates(kind: str, d: int, dv: int, plan: _Plan) -> list[dict]:
    cands = _base_candidates(kind, d, dv, plan)
    if _has_prefetch(kind):  # on unless a config says otherwise
        cands = [{"PREFETCH": True, **c} for c in cands]
    return cands


def _has_prefetch(kind: str) -> bool:
    """Whether the kind's kernel has the PREFETCH switch (the non-causal ones; segment sums use nc_fwd_state)."""
    return kind.startswith("nc") or kind == "c_segsum"


def _qsum_candidates(d: int, dv: int, plan: _Plan) -> list[dict]:
    """The q side of the non-causal backward: the separate pair first (measured), then fused configs."""
    separate = {"SEPARATE": True}
    if plan.interpret:
        fused = [_cfg(16, 4, 1, prefetch=INTERPRET_PREFETCH)]
    elif not plan.lowp or d * dv >= 128 * 64:
        fused = [_cfg(32, 8, 1), _cfg(16, 4, 2)]
    else:
        fused = [_cfg(64, 4, 2), _cfg(64, 8, 2)]
    if QSUM_MODE == "fused":
        return fused
    if QSUM_MODE == "separate" or plan.interpret:
        return [separate]
    return [separate] + fused


def _base_candidates(kind: str, d: int, dv: int, plan: _Plan) -> list[dict]:
    if kind == "nc_bwd_qsum":
        return _qsum_candidates(d, dv, plan)
    if plan.interpret:  # small blocks so that short test sequences still span several blocks
        return [_cfg(16, 4, 1, min(dv, 16) if kind in ("nc_state", "nc_out", "c_fwd", "c_segsum") else None,
                     prefetch=INTERPRET_PREFETCH if _has_prefetch(kind) else None)]
    big = d * dv >= 128 * 64
    wide = dv if d * dv <= 64 * 128 else 64  # value tile of the forward sums
    if not plan.lowp:  # fp32 operands take twice the shared memory: smaller tiles only
        if kind in ("nc_state", "nc_out", "c_segsum"):
            return [_cfg(32, 4, 1, wide), _cfg(16, 4, 1, wide)]
        if kind == "c_fwd":
            return [_cfg(32, 4, 1, dv if not big else 64), _cfg(16, 4, 1, dv if not big else 64)]
        return [_cfg(16, 4, 1), _cfg(32, 4, 1)] if big else [_cfg(32, 4, 1), _cfg(16, 4, 1)]
    # measured on an H200 (bf16, D = Dv = 64): the winners first, then variants the tuner may prefer elsewhere
    if kind == "c_segsum":
        return [_cfg(64, 4, 2, wide), _cfg(64, 8, 2, wide, maxnreg=128)]
    # (2026-11-28, all candidates timed: prefetch helps the q-side kernels (nc_out 0.123 vs 0.143 ms, nc_bwd_sum
    # 0.189 vs 0.256) and is noise or slightly worse on the k side (nc_state 0.117 vs 0.113, nc_bwd_kv 0.151 vs
    # 0.142); 8 warps with maxnreg 128 and 4 programs per SM lost everywhere)
    if kind == "nc_state":
        return [_cfg(64, 4, 2, wide, prefetch=False), _cfg(64, 4, 2, wide)]
    if kind == "nc_out":
        return [_cfg(64, 4, 2, wide), _cfg(64, 8, 2, wide, maxnreg=128, prefetch=False)]
    # the q-side pair keeps one config each (the runners-up lost by 20-35%): the fused q-side candidates of
    # nc_bwd_qsum take their compile time instead, so the cold start stays where it was
    if kind == "nc_bwd_q":
        if big:
            return [_cfg(32, 8, 1), _cfg(16, 4, 2)]
        return [_cfg(64, 4, 2)]
    if kind == "nc_bwd_sum":
        if big:
            return [_cfg(32, 8, 1), _cfg(16, 4, 2)]
        return [_cfg(64, 4, 2)]
    if kind == "nc_bwd_kv":
        if big:
            return [_cfg(32, 8, 1), _cfg(16, 4, 2)]
        return [_cfg(64, 4, 2, prefetch=False), _cfg(64, 4, 2)]
    if kind == "c_fwd":
        cdv = dv if not big else 64  # value tiles below 64 crashed (illegal address) under triton 3.6
        return [_cfg(32, 4, 2, cdv), _cfg(64, 8, 2, cdv)]
    if kind in ("c_bwd_q", "c_bwd_kv"):
        if big:
            return [_cfg(32, 8, 1), _cfg(16, 4, 2)]
        return [_cfg(32, 4, 2), _cfg(64, 8, 2)]
    raise KeyError(kind)


def _pick(kind, d, dv, q, plan, run):
    cands = _candidates(kind, d, dv, plan)
    return _tune.choose(kind, (d, dv, _dtype_key(q)), cands, run, q.device)


_CHOSEN: dict[tuple, dict] = {}  # (kind, D, Dv, dtype, device) -> the config that ran: the steady-state fast path


def _tuned_run(kind, d, dv, q, plan, run, reset=None):
    """Pick a config (timing the candidates on the first call of a shape class) and run it once for real.
    ``reset`` clears accumulated outputs after tuning trials (atomic kernels). A config that does not fit
    the device (shared memory, registers) falls through to the next candidate. Later calls of the shape
    class go straight to the config that ran (host time matters: the kernels take tenths of a millisecond)."""
    fast = None if plan.interpret else (kind, d, dv, q.dtype, q.device, QSUM_MODE)
    cfg = _CHOSEN.get(fast) if fast is not None else None
    if cfg is not None:
        run(cfg)
        return cfg
    cfg = _tuned_run_slow(kind, d, dv, q, plan, run, reset)
    if fast is not None:
        _CHOSEN[fast] = cfg
    return cfg


def _tuned_run_slow(kind, d, dv, q, plan, run, reset):
    cfg, tuned = _pick(kind, d, dv, q, plan, run)
    if tuned and reset is not None:
        reset()
    if tuned and reset is None:
        return cfg  # the trials already wrote the (same) result
    cands = [cfg] + [c for c in _candidates(kind, d, dv, plan) if c != cfg]
    for i, c in enumerate(cands):
        try:
            run(c)
            return c
        except Exception as err:
            if type(err).__name__ != "OutOfResources" or i == len(cands) - 1:
                raise
            if reset is not None:
                reset()
    return cfg


def _launch(kernel, grid, cfg, *args, **meta):
    if "PREFETCH" in cfg:
        meta["PREFETCH"] = cfg["PREFETCH"]
    if "maxnreg" in cfg:
        meta["maxnreg"] = cfg["maxnreg"]
    kernel[grid](*args, **meta, num_warps=cfg["num_warps"], num_stages=cfg["num_stages"])


def _rope_mode(sin: torch.Tensor | None, d: int) -> int:
    """HAS_ROPE of the kernels: 0 none, 1 a table value per column (N, D), 2 one per pair (N, D/2)."""
    if sin is None:
        return 0
    return 2 if sin.shape[-1] != d else 1


def _flags(plan: _Plan, sin: torch.Tensor | None, d: int) -> dict:
    return {"HAS_ROPE": _rope_mode(sin, d), "RELU": plan.relu, "VARLEN": plan.varlen, "LOWP": plan.lowp}


# ------------------------------------------------------------------------------------------------
# non-causal
# ------------------------------------------------------------------------------------------------
def _workspace_size(nseq: int, h: int, d: int, dv: int) -> int:
    return nseq * h * 2 * d * (dv + 1)


def _split_workspace(flat: torch.Tensor, nseq: int, h: int, d: int, dv: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A flat fp32 buffer -> the (S, H, 2D, Dv) state sums and the (S, H, 2D) normalizer sums (views)."""
    split = nseq * h * 2 * d * dv
    return flat[:split].view(nseq, h, 2 * d, dv), flat[split:].view(nseq, h, 2 * d)


def _zero_workspaces(nseq: int, h: int, d: int, dv: int, dev) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Zeroed fp32 (S, H, 2D, Dv) and (S, H, 2D) accumulators carved from one allocation (one memset):
    (the flat buffer, the state sums, the normalizer sums)."""
    flat = torch.zeros(_workspace_size(nseq, h, d, dv), dtype=torch.float32, device=dev)
    return (flat, *_split_workspace(flat, nseq, h, d, dv))


def _nc_forward(q, k, v, sin, cos, cu, kmax, plan: _Plan, store_den: bool):
    kern = load_kernels(plan.interpret)
    b, n, h, d = q.shape
    dv = v.shape[-1]
    dev = q.device
    flat, sw, mw = _zero_workspaces(plan.nseq, h, d, dv, dev)
    o = _empty((b, n, h, dv), q.dtype, dev)
    z = _empty((b, h, n), torch.float32, dev) if store_den else None  # denominators, for the backward
    has_rope = sin is not None
    sin_, cos_, cu_ = (sin if has_rope else q), (cos if has_rope else q), (cu if cu is not None else q)
    srn = sin.stride(0) if has_rope else 0
    fl = _flags(plan, sin, d)

    def run_state(cfg):
        split, bps = _split(plan.max_len, cfg["BLOCK"], plan.nseq * h, plan.n_sm, cfg.get("CPS", 2))
        grid = (split * (dv // cfg["BLOCK_DV"]), h, plan.nseq)
        _launch(kern.nc_fwd_state_kernel, grid, cfg, k, v, sin_, cos_, cu_, sw, mw,
                k.stride(0), k.stride(1), k.stride(2), v.stride(0), v.stride(1), v.stride(2), srn,
                n, h, plan.lam, plan.alpha, plan.norm_eps, bps, split, kmax, plan.klimit,
                D=d, DV=dv, BLOCK_N=cfg["BLOCK"], BLOCK_DV=cfg["BLOCK_DV"], POW3=plan.pow3, PER_SPLIT=False, **fl)

    _tuned_run("nc_state", d, dv, q, plan, run_state, reset=lambda: (sw.zero_(), mw.zero_()))

    def run_out(cfg):
        split, bps = _split(plan.max_len, cfg["BLOCK"], plan.nseq * h, plan.n_sm, cfg.get("CPS", 2))
        grid = (split * (dv // cfg["BLOCK_DV"]), h, plan.nseq)
        _launch(kern.nc_fwd_out_kernel, grid, cfg, q, sin_, cos_, cu_, sw, mw, o, z if store_den else o,
                q.stride(0), q.stride(1), q.stride(2), o.stride(0), o.stride(1), o.stride(2), srn,
                n, h, plan.lam, plan.tau, plan.alpha, plan.norm_eps, plan.eps, bps, kmax, plan.klimit,
                D=d, DV=dv, BLOCK_N=cfg["BLOCK"], BLOCK_DV=cfg["BLOCK_DV"], STORE_DEN=store_den, POW3=plan.pow3,
                **fl)

    _tuned_run("nc_out", d, dv, q, plan, run_out)
    return o, z, flat  # flat: the S and m sums (_split_workspace)


def _nc_backward(do, q, k, v, o, z, sin, cos, cu, flat, kmax, plan: _Plan, need_q: bool, need_kv: bool):
    kern = load_kernels(plan.interpret)
    _, n, h, d = q.shape
    dv = v.shape[-1]
    sw, mw = _split_workspace(flat, plan.nseq, h, d, dv)
    dev = q.device
    do = _last_contig(do)
    _, dsw, dmw = _zero_workspaces(plan.nseq, h, d, dv, dev)
    dq = _empty(q.shape, q.dtype, dev) if need_q else None
    has_rope = sin is not None
    sin_, cos_, cu_ = (sin if has_rope else q), (cos if has_rope else q), (cu if cu is not None else q)
    srn = sin.stride(0) if has_rope else 0
    fl = _flags(plan, sin, d)

    qargs = (q.stride(0), q.stride(1), q.stride(2), do.stride(0), do.stride(1), do.stride(2),
             o.stride(0), o.stride(1), o.stride(2))

    def run_qside(cfg, dq_out: bool, sums: bool):
        split, bps = _split(plan.max_len, cfg["BLOCK"], plan.nseq * h, plan.n_sm, cfg.get("CPS", 2))
        dq_ = dq if dq_out else q  # (an unused pointer when dq is not computed)
        _launch(kern.nc_bwd_qside_kernel, (split, h, plan.nseq), cfg, q, do, o, z, sin_, cos_, cu_, sw, mw, dq_,
                dsw, dmw, *qargs, dq_.stride(0), dq_.stride(1), dq_.stride(2), srn,
                n, h, plan.lam, plan.tau, plan.alpha, plan.norm_eps, bps,
                D=d, DV=dv, BLOCK_N=cfg["BLOCK"], DQ_OUT=dq_out, SUMS=sums, **fl)

    def run_q(cfg):
        run_qside(cfg, True, False)

    def run_sum(cfg):
        run_qside(cfg, False, True)

    def reset_sums():
        dsw.zero_()
        dmw.zero_()

    def run_qsum(cfg):
        if cfg.get("SEPARATE"):
            _tuned_run("nc_bwd_q", d, dv, q, plan, run_q)
            _tuned_run("nc_bwd_sum", d, dv, q, plan, run_sum, reset=reset_sums)
        else:
            run_qside(cfg, True, True)

    if need_q and need_kv:
        _tuned_run("nc_bwd_qsum", d, dv, q, plan, run_qsum, reset=reset_sums)
    elif need_q:
        _tuned_run("nc_bwd_q", d, dv, q, plan, run_q)
        return dq, None, None
    else:
        _tuned_run("nc_bwd_sum", d, dv, q, plan, run_sum, reset=reset_sums)
    dk = _empty(k.shape, k.dtype, dev)
    dvv = _empty(v.shape, v.dtype, dev)

    def run_kv(cfg):
        split, bps = _split(plan.max_len, cfg["BLOCK"], plan.nseq * h, plan.n_sm, cfg.get("CPS", 2))
        _launch(kern.nc_bwd_kv_kernel, (split, h, plan.nseq), cfg, k, v, sin_, cos_, cu_, dsw, dmw, dk, dvv,
                k.stride(0), k.stride(1), k.stride(2), v.stride(0), v.stride(1), v.stride(2),
                dk.stride(0), dk.stride(1), dk.stride(2), dvv.stride(0), dvv.stride(1), dvv.stride(2), srn,
                n, h, plan.lam, plan.alpha, plan.norm_eps, bps, kmax, plan.klimit,
                D=d, DV=dv, BLOCK_N=cfg["BLOCK"], POW3=plan.pow3, **fl)

    _tuned_run("nc_bwd_kv", d, dv, q, plan, run_kv)
    return (dq if need_q else None), dk, dvv


class _NonCausal(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, sin, cos, cu, kmax, plan):
        train = any(ctx.needs_input_grad[:3])
        o, z, flat = _nc_forward(q, k, v, sin, cos, cu, kmax, plan, store_den=train)
        if train:
            ctx.save_for_backward(q, k, v, o, z, sin, cos, cu, flat, kmax)
        ctx.plan = plan
        return o

    @staticmethod
    def backward(ctx, do):
        q, k, v, o, z, sin, cos, cu, flat, kmax = ctx.saved_tensors
        nq, nk, nv = ctx.needs_input_grad[:3]
        dq, dk, dv = _nc_backward(do, q, k, v, o, z, sin, cos, cu, flat, kmax, ctx.plan, nq, nk or nv)
        return dq, dk, dv, None, None, None, None, None


# ------------------------------------------------------------------------------------------------
# causal
# ------------------------------------------------------------------------------------------------
CAUSAL_SEGMENTS: int | None = None  # segments per sequence; None = automatic (tests pin it)


def _c_segments(plan: _Plan, h: int) -> tuple[int, int]:
    """(segments per sequence, segment length). Segments run in parallel from the state entering them, so
    that about 2 programs per SM (one whole wave) walk chunks even when B*H is small. Lengths are multiples
    of 64 (of 16 in the interpreter), which every chunk size divides."""
    gran = 16 if plan.interpret else 64
    nblk = _cdiv(plan.max_len, gran)
    want = CAUSAL_SEGMENTS if CAUSAL_SEGMENTS is not None else round(2 * plan.n_sm / (plan.nseq * h))
    nseg = max(1, min(int(want), nblk))
    seg_len = _cdiv(nblk, nseg) * gran
    return _cdiv(plan.max_len, seg_len), seg_len


def _exclusive_prefix(t: torch.Tensor, reverse: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """(exclusive prefix sum over dim 2 (segments), forward or from the end; the total). Inclusive minus self:
    two launches instead of four (fp32 rounding of the difference is far below the fp32 tolerance)."""
    inc = t.flip(2).cumsum(2).flip(2) if reverse else t.cumsum(2)
    return inc - t, inc[:, :, 0] if reverse else inc[:, :, -1]


def _c_forward(q, k, v, sin, cos, kv0, ks0, cnt0, cu, kmax, plan: _Plan, store_final: bool):
    kern = load_kernels(plan.interpret)
    b, n, h, d = q.shape
    dv = v.shape[-1]
    dev = q.device
    o = _empty((b, n, h, dv), q.dtype, dev)
    z = _empty((1 if plan.varlen else b, h, n), torch.float32, dev)
    has_rope = sin is not None
    sin_, cos_, cu_ = (sin if has_rope else q), (cos if has_rope else q), (cu if cu is not None else q)
    srn = sin.stride(0) if has_rope else 0
    fl = _flags(plan, sin, d)
    nseg, seg_len = _c_segments(plan, h)
    sf = mf = None
    if nseg > 1:  # per-segment sums, then the state entering each segment (exclusive prefix + initial state)
        t = _empty((plan.nseq, h, nseg, 2 * d, dv), torch.float32, dev)
        tm = _empty((plan.nseq, h, nseg, 2 * d), torch.float32, dev)

        def run_sum(cfg):
            grid = (nseg * (dv // cfg["BLOCK_DV"]), h, plan.nseq)
            _launch(kern.nc_fwd_state_kernel, grid, cfg, k, v, sin_, cos_, cu_, t, tm,
                    k.stride(0), k.stride(1), k.stride(2), v.stride(0), v.stride(1), v.stride(2), srn,
                    n, h, plan.lam, plan.alpha, plan.norm_eps, seg_len // cfg["BLOCK"], nseg, kmax, plan.klimit,
                    D=d, DV=dv, BLOCK_N=cfg["BLOCK"], BLOCK_DV=cfg["BLOCK_DV"], POW3=plan.pow3, PER_SPLIT=True,
                    **fl)

        _tuned_run("c_segsum", d, dv, q, plan, run_sum)
        p, t_all = _exclusive_prefix(t)
        pm, tm_all = _exclusive_prefix(tm)
        if kv0 is not None:
            p += kv0.to(torch.float32)[:, :, None]
            pm += ks0.to(torch.float32)[:, :, None]
        if store_final:
            sf = t_all if kv0 is None else t_all + kv0.to(torch.float32)
            mf = tm_all if ks0 is None else tm_all + ks0.to(torch.float32)
        s0, m0 = p, pm
        s0st = (p.stride(0), p.stride(1), p.stride(2), p.stride(3))
        m0st = (pm.stride(0), pm.stride(1), pm.stride(2))
    else:
        s0, m0 = kv0, ks0
        s0st = (kv0.stride(0), kv0.stride(1), 0, kv0.stride(2)) if kv0 is not None else (0, 0, 0, 0)
        m0st = (ks0.stride(0), ks0.stride(1), 0) if ks0 is not None else (0, 0, 0)
        if store_final:
            sf = _empty((plan.nseq, h, 2 * d, dv), torch.float32, dev)
            mf = _empty((plan.nseq, h, 2 * d), torch.float32, dev)
    has_init = s0 is not None
    in_kernel_final = store_final and nseg == 1

    def run(cfg):
        grid = (dv // cfg["BLOCK_DV"], h, plan.nseq * nseg)
        _launch(kern.c_fwd_kernel, grid, cfg, q, k, v, sin_, cos_, cu_, s0 if has_init else q,
                m0 if has_init else q, cnt0 if cnt0 is not None else q, o, z,
                sf if in_kernel_final else q, mf if in_kernel_final else q,
                q.stride(0), q.stride(1), q.stride(2), k.stride(0), k.stride(1), k.stride(2),
                v.stride(0), v.stride(1), v.stride(2), o.stride(0), o.stride(1), o.stride(2), srn,
                *s0st, *m0st, n, h, plan.lam, plan.tau, plan.alpha, plan.norm_eps, plan.eps, nseg, seg_len,
                kmax, plan.klimit,
                D=d, DV=dv, BLOCK_C=cfg["BLOCK"], BLOCK_DV=cfg["BLOCK_DV"], POW3=plan.pow3,
                HAS_INIT=has_init, HAS_CNT=cnt0 is not None, STORE_FINAL=in_kernel_final, **fl)

    _tuned_run("c_fwd", d, dv, q, plan, run)
    return o, z, sf, mf, (s0, m0, nseg, seg_len)


def _c_backward(do, dsf, dmf, q, k, v, o, z, sin, cos, s0, m0, nseg, seg_len, cu, kmax, plan: _Plan,
                need_init: bool):
    kern = load_kernels(plan.interpret)
    _, n, h, d = q.shape
    dv = v.shape[-1]
    dev = q.device
    do = torch.zeros_like(o) if do is None else _last_contig(do)
    dq = _empty(q.shape, q.dtype, dev)
    dk = _empty(k.shape, k.dtype, dev)
    dvv = _empty(v.shape, v.dtype, dev)
    dz = _empty(z.shape, torch.float32, dev)
    has_rope = sin is not None
    has_init = s0 is not None
    sin_, cos_, cu_ = (sin if has_rope else q), (cos if has_rope else q), (cu if cu is not None else q)
    srn = sin.stride(0) if has_rope else 0
    if not has_init:
        s0st, m0st = (0, 0, 0, 0), (0, 0, 0)
    elif s0.dim() == 5:
        s0st = (s0.stride(0), s0.stride(1), s0.stride(2), s0.stride(3))
        m0st = (m0.stride(0), m0.stride(1), m0.stride(2))
    else:
        s0st, m0st = (s0.stride(0), s0.stride(1), 0, s0.stride(2)), (m0.stride(0), m0.stride(1), 0)
    fl = _flags(plan, sin, d)
    qsum = nseg > 1
    if qsum:
        tq = _empty((plan.nseq, h, nseg, 2 * d, dv), torch.float32, dev)
        tqm = _empty((plan.nseq, h, nseg, 2 * d), torch.float32, dev)
    else:
        tq = tqm = q

    def run_q(cfg):
        _launch(kern.c_bwd_q_kernel, (1, h, plan.nseq * nseg), cfg, q, k, v, do, o, z, sin_, cos_, cu_,
                s0 if has_init else q, m0 if has_init else q, dq, dz, tq, tqm,
                q.stride(0), q.stride(1), q.stride(2), k.stride(0), k.stride(1), k.stride(2),
                v.stride(0), v.stride(1), v.stride(2), do.stride(0), do.stride(1), do.stride(2),
                o.stride(0), o.stride(1), o.stride(2), dq.stride(0), dq.stride(1), dq.stride(2), srn,
                *s0st, *m0st, n, h, plan.lam, plan.tau, plan.alpha, plan.norm_eps, nseg, seg_len, kmax, plan.klimit,
                D=d, DV=dv, BLOCK_C=cfg["BLOCK"], POW3=plan.pow3, HAS_INIT=has_init, QSUM=qsum, **fl)

    _tuned_run("c_bwd_q", d, dv, q, plan, run_q)

    has_dfinal = dsf is not None or dmf is not None
    if has_dfinal:
        dsf = torch.zeros(plan.nseq, h, 2 * d, dv, dtype=torch.float32, device=dev) if dsf is None \
            else dsf.to(torch.float32).contiguous()
        dmf = torch.zeros(plan.nseq, h, 2 * d, dtype=torch.float32, device=dev) if dmf is None \
            else dmf.to(torch.float32).contiguous()
    ds0 = dm0 = None
    if qsum:  # gradient w.r.t. the state leaving each segment: dS_final + totals of the later segments
        gp, gall = _exclusive_prefix(tq, reverse=True)
        gpm, gmall = _exclusive_prefix(tqm, reverse=True)
        if has_dfinal:
            gp += dsf[:, :, None]
            gpm += dmf[:, :, None]
            gall += dsf
            gmall += dmf
        ds0, dm0 = (gall, gmall) if need_init else (None, None)
        dsf_, dmf_, slots, step, kv_dfinal, kv_dinit = gp.contiguous(), gpm.contiguous(), nseg, 1, True, False
    else:
        dsf_, dmf_, slots, step, kv_dfinal, kv_dinit = dsf, dmf, 1, 0, has_dfinal, need_init
        if need_init:
            ds0 = _empty((plan.nseq, h, 2 * d, dv), torch.float32, dev)
            dm0 = _empty((plan.nseq, h, 2 * d), torch.float32, dev)

    def run_kv(cfg):
        _launch(kern.c_bwd_kv_kernel, (1, h, plan.nseq * nseg), cfg, q, k, v, do, z, dz, sin_, cos_, cu_,
                dsf_ if kv_dfinal else q, dmf_ if kv_dfinal else q, dk, dvv,
                ds0 if kv_dinit else q, dm0 if kv_dinit else q,
                q.stride(0), q.stride(1), q.stride(2), k.stride(0), k.stride(1), k.stride(2),
                v.stride(0), v.stride(1), v.stride(2), do.stride(0), do.stride(1), do.stride(2),
                dk.stride(0), dk.stride(1), dk.stride(2), dvv.stride(0), dvv.stride(1), dvv.stride(2), srn,
                n, h, plan.lam, plan.tau, plan.alpha, plan.norm_eps, nseg, seg_len, slots, step, kmax, plan.klimit,
                D=d, DV=dv, BLOCK_C=cfg["BLOCK"], POW3=plan.pow3, HAS_DFINAL=kv_dfinal,
                STORE_DINIT=kv_dinit, **fl)

    _tuned_run("c_bwd_kv", d, dv, q, plan, run_kv)
    return dq, dk, dvv, ds0, dm0


class _Causal(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, sin, cos, kv0, ks0, cnt0, cu, kmax, plan, store_final):
        o, z, sf, mf, (s0, m0, nseg, seg_len) = _c_forward(q, k, v, sin, cos, kv0, ks0, cnt0, cu, kmax, plan,
                                                          store_final)
        ctx.save_for_backward(q, k, v, o, z, sin, cos, s0, m0, cu, kmax)
        ctx.plan = plan
        ctx.seg = (nseg, seg_len)
        ctx.init_dtypes = (None if kv0 is None else kv0.dtype, None if ks0 is None else ks0.dtype)
        ctx.set_materialize_grads(False)
        if not store_final:
            sf = mf = q.new_zeros(0, dtype=torch.float32)
        return o, sf, mf

    @staticmethod
    def backward(ctx, do, dsf, dmf):
        q, k, v, o, z, sin, cos, s0, m0, cu, kmax = ctx.saved_tensors
        if dsf is not None and dsf.numel() == 0:
            dsf = None
        if dmf is not None and dmf.numel() == 0:
            dmf = None
        has_user_init = ctx.init_dtypes[0] is not None
        need_init = has_user_init and (ctx.needs_input_grad[5] or ctx.needs_input_grad[6])
        dq, dk, dv, ds0, dm0 = _c_backward(do, dsf, dmf, q, k, v, o, z, sin, cos, s0, m0, *ctx.seg, cu, kmax,
                                           ctx.plan, need_init)
        if need_init:
            ds0 = ds0.to(ctx.init_dtypes[0]) if ctx.needs_input_grad[5] else None
            dm0 = dm0.to(ctx.init_dtypes[1]) if ctx.needs_input_grad[6] else None
        return dq, dk, dv, None, None, ds0, dm0, None, None, None, None, None


# ------------------------------------------------------------------------------------------------
# public entry points (inputs already validated by nalaformer.ops.nala)
# ------------------------------------------------------------------------------------------------
@outside_autocast
def nala_attention_triton(
    q, k, v, *, causal=False, rope=None, inhibit="relu", lam=3.0, tau=0.5, alpha=20.0, eps=1e-6, norm_eps=1e-6,
    initial_state: NaLaState | None = None, output_final_state=False, cu_seqlens=None, max_seqlen=None,
):
    plan = _make_plan(q, inhibit, lam, tau, alpha, eps, norm_eps, cu_seqlens, max_seqlen)
    q, k, v, sin, cos, cu = prepare_inputs(q, k, v, rope, cu_seqlens)
    kmax = key_max(k)
    if not causal:
        return _NonCausal.apply(q, k, v, sin, cos, cu, kmax, plan)
    kv0 = ks0 = cnt0 = None
    spow = None
    if initial_state is not None or output_final_state:  # states cross in the caller's units
        spow = key_scale_of(kmax, plan)[1]
    if initial_state is not None:
        kv0, ks0 = (_last_contig(t * spow.to(t.dtype)) for t in (initial_state.kv, initial_state.k_sum))
        cnt0 = initial_state.count.contiguous()
    o, sf, mf = _Causal.apply(q, k, v, sin, cos, kv0, ks0, cnt0, cu, kmax, plan, bool(output_final_state))
    if not output_final_state:
        return o
    sf, mf = sf / spow, mf / spow
    if cu is None:
        lengths = torch.full((plan.nseq,), q.shape[1], dtype=torch.int64, device=q.device)
    else:
        lengths = (cu[1:] - cu[:-1]).to(torch.int64)
    count = lengths if cnt0 is None else cnt0.to(torch.int64) + lengths
    return o, NaLaState(sf, mf, count)


@outside_autocast
def nala_decode_step_triton(q, k, v, state: NaLaState | None, *, rope=None, inhibit="relu", lam=3.0, tau=0.5,
                            alpha=20.0, eps=1e-6, norm_eps=1e-6):
    """One token per sequence, one launch: q, k (B, H, D), v (B, H, Dv) -> (o, new NaLaState)."""
    interpret = q.device.type != "cuda"
    if interpret and not interpreter_enabled():
        raise ValueError("backend: 'triton' runs on CUDA tensors (or on CPU with TRITON_INTERPRET=1)")
    kern = load_kernels(interpret)
    q, k, v = _last_contig(q), _last_contig(k), _last_contig(v)
    bsz, h, d = q.shape
    dv = v.shape[-1]
    dev = q.device
    o = _empty((bsz, h, dv), q.dtype, dev)
    s1 = _empty((bsz, h, 2 * d, dv), torch.float32, dev)
    m1 = _empty((bsz, h, 2 * d), torch.float32, dev)
    has_state = state is not None
    if has_state:
        kv0, ks0, cnt0 = _last_contig(state.kv), _last_contig(state.k_sum), state.count.contiguous()
        s0st, m0st = (kv0.stride(0), kv0.stride(1), kv0.stride(2)), (ks0.stride(0), ks0.stride(1))
    else:
        kv0 = ks0 = cnt0 = q
        s0st, m0st = (0, 0, 0), (0, 0)
    has_rope = rope is not None
    if has_rope:
        sin, cos = _last_contig(rope[0]), _last_contig(rope[1])
        srb = sin.stride(0) if sin.dim() == 2 else 0
    else:
        sin = cos = q
        srb = 0
    block_dv = min(dv, 16 if interpret else 64)
    kern.decode_kernel[(bsz * h, dv // block_dv)](
        q, k, v, kv0, ks0, cnt0, sin, cos, o, s1, m1,
        q.stride(0), q.stride(1), k.stride(0), k.stride(1), v.stride(0), v.stride(1), o.stride(0), o.stride(1),
        *s0st, *m0st, srb, h, float(lam), float(tau), float(alpha), float(norm_eps), float(eps),
        D=d, DV=dv, BLOCK_DV=block_dv, HAS_ROPE=_rope_mode(sin if has_rope else None, d),
        RELU=inhibit == "relu", POW3=float(lam) == 3.0,
        HAS_STATE=has_state, num_warps=4 if d * block_dv >= 64 * 64 else 2)
    count = (cnt0.to(torch.int64) + 1) if has_state else torch.ones(bsz, dtype=torch.int64, device=dev)
    return o, NaLaState(s1, m1, count)


# torch.compile runs these eagerly (a graph break around the op): dynamo cannot trace the launch planning,
# autotuning and Triton launches. (Applied here, not where the package is imported: torch.compiler.disable
# imports dynamo, which imports Triton, and `import nalaformer` must not.)
nala_attention_triton_eager = torch.compiler.disable(nala_attention_triton)
nala_decode_step_triton_eager = torch.compiler.disable(nala_decode_step_triton)
