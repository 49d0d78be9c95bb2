"""Triton kernels of the depthwise stride-1 'same' convolution, channels-last (C stride 1).

Programs tile (image, ROWS rows, BLOCK_W columns) x BLOCK_C channels; each walks its rows one by one, so the
k*k shifted loads of neighbouring rows hit the L1/L2 copy of the tile. Accumulation is fp32 whatever the
storage dtype. Loaded by ``ops.triton._loader`` compiled (CUDA) or interpreted (``TRITON_INTERPRET=1``).

  dwconv_fwd    y[b, h, w, c] = sum_ij x[b, h + i - kh//2, w + j - kw//2, c] * wt[i * kw + j, c] (+ bias[c]);
                FLIP mirrors the taps, which makes it the input gradient (dy in, dx out)
  dwconv_wgrad  per program partial sums of dy[b, h, w, c] * x[b, h + i - kh//2, w + j - kw//2, c] for each
                tap (and of dy for the bias), written to a (programs, kh*kw, C) fp32 workspace: no atomics,
                the host sums the partials (deterministic)
"""

import triton
import triton.language as tl


@triton.jit
def _tile(pid, H, W, ROWS: tl.constexpr, BLOCK_W: tl.constexpr):
    """(image, first row, column offsets) of program ``pid``."""
    n_wb = tl.cdiv(W, BLOCK_W)
    n_rb = tl.cdiv(H, ROWS)
    wb = pid % n_wb
    rb = (pid // n_wb) % n_rb
    b = pid // (n_wb * n_rb)
    return b, rb * ROWS, wb * BLOCK_W + tl.arange(0, BLOCK_W)


@triton.jit
def dwconv_fwd(X, Wt, Bias, Y, H, W, C, sxb, sxh, sxw, syb, syh, syw,
               KH: tl.constexpr, KW: tl.constexpr, FLIP: tl.constexpr, HAS_BIAS: tl.constexpr,
               ROWS: tl.constexpr, BLOCK_W: tl.constexpr, BLOCK_C: tl.constexpr):
    b, row0, cols = _tile(tl.program_id(0), H, W, ROWS, BLOCK_W)
    chans = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    cmask = chans < C
    xb = X + b.to(tl.int64) * sxb
    yb = Y + b.to(tl.int64) * syb
    if HAS_BIAS:
        bias = tl.load(Bias + chans, mask=cmask, other=0.0).to(tl.float32)
    for r in range(ROWS):
        h = row0 + r
        acc = tl.zeros((BLOCK_W, BLOCK_C), dtype=tl.float32)
        for i in tl.static_range(KH):
            if FLIP:
                hh = h + (KH // 2 - i)
            else:
                hh = h + (i - KH // 2)
            row_ok = (hh >= 0) & (hh < H)
            for j in tl.static_range(KW):
                if FLIP:
                    ww = cols + (KW // 2 - j)
                else:
                    ww = cols + (j - KW // 2)
                m = (row_ok & (ww >= 0) & (ww < W))[:, None] & cmask[None, :]
                xv = tl.load(xb + hh * sxh + ww[:, None] * sxw + chans[None, :], mask=m, other=0.0)
                wv = tl.load(Wt + (i * KW + j) * C + chans, mask=cmask, other=0.0)
                acc += xv.to(tl.float32) * wv.to(tl.float32)[None, :]
        if HAS_BIAS:
            acc += bias[None, :]
        om = ((h < H) & (cols < W))[:, None] & cmask[None, :]
        tl.store(yb + h * syh + cols[:, None] * syw + chans[None, :], acc.to(Y.dtype.element_ty), mask=om)


@triton.jit
def dwconv_wgrad(X, DY, DWP, DBP, H, W, C, sxb, sxh, sxw, sdb, sdh, sdw,
                 KH: tl.constexpr, KW: tl.constexpr, HAS_BIAS: tl.constexpr,
                 ROWS: tl.constexpr, BLOCK_W: tl.constexpr, BLOCK_C: tl.constexpr):
    pid = tl.program_id(0)
    b, row0, cols = _tile(pid, H, W, ROWS, BLOCK_W)
    chans = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    cmask = chans < C
    xb = X + b.to(tl.int64) * sxb
    db = DY + b.to(tl.int64) * sdb
    out = DWP + pid.to(tl.int64) * (KH * KW * C)
    for i in tl.static_range(KH):
        for j in tl.static_range(KW):
            acc = tl.zeros((BLOCK_W, BLOCK_C), dtype=tl.float32)
            ww = cols + (j - KW // 2)
            for r in range(ROWS):
                h = row0 + r
                hh = h + (i - KH // 2)
                gm = ((h < H) & (cols < W))[:, None] & cmask[None, :]
                g = tl.load(db + h * sdh + cols[:, None] * sdw + chans[None, :], mask=gm, other=0.0)
                xm = ((hh >= 0) & (hh < H) & (ww >= 0) & (ww < W))[:, None] & gm
                xv = tl.load(xb + hh * sxh + ww[:, None] * sxw + chans[None, :], mask=xm, other=0.0)
                acc += g.to(tl.float32) * xv.to(tl.float32)
            tl.store(out + (i * KW + j) * C + chans, tl.sum(acc, axis=0), mask=cmask)
    if HAS_BIAS:
        acc = tl.zeros((BLOCK_W, BLOCK_C), dtype=tl.float32)
        for r in range(ROWS):
            h = row0 + r
            gm = ((h < H) & (cols < W))[:, None] & cmask[None, :]
            acc += tl.load(db + h * sdh + cols[:, None] * sdw + chans[None, :], mask=gm, other=0.0).to(tl.float32)
        tl.store(DBP + pid.to(tl.int64) * C + chans, tl.sum(acc, axis=0), mask=cmask)
