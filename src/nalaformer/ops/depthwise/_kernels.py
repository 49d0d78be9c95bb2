"""Triton kernels of the depthwise stride-1 'same' convolution, channels-last (C stride 1).

A program owns a tile of ROWS x BLOCK_W positions of one image (flattened, row-major) by BLOCK_C channels and
walks the k*k taps with shifted, masked loads of that tile (neighbouring taps hit L1/L2). Accumulation is fp32
whatever the storage dtype. Loaded by ``ops.triton._loader`` compiled (CUDA) or interpreted (``TRITON_INTERPRET=1``).

  dwconv_fwd    y[b, h, w, c] = sum_ij x[b, h + i - kh//2, w + j - kw//2, c] * wt[i * kw + j, c] (+ bias[c]);
                FLIP mirrors the taps, which makes it the input gradient (dy in, dx out)
  dwconv_wgrad  per program, for each tap, the sum over its positions of dy[b, h, w, c] * x[b, h + i - kh//2,
                w + j - kw//2, c] (and of dy, for the bias), written to a (programs, kh*kw, C) fp32 workspace: no
                atomics, the host sums the partials (deterministic). dy is loaded once per program.
"""

import triton
import triton.language as tl


@triton.jit
def _tile(pid, H, W, ROWS: tl.constexpr, BLOCK_W: tl.constexpr):
    """(image, rows, columns) of program ``pid``'s ROWS*BLOCK_W positions."""
    n_wb = tl.cdiv(W, BLOCK_W)
    n_rb = tl.cdiv(H, ROWS)
    wb = pid % n_wb
    rb = (pid // n_wb) % n_rb
    b = pid // (n_wb * n_rb)
    p = tl.arange(0, ROWS * BLOCK_W)
    return b, rb * ROWS + p // BLOCK_W, wb * BLOCK_W + p % BLOCK_W


@triton.jit
def dwconv_fwd(X, Wt, Bias, Y, H, W, C, sxb, sxh, sxw, syb, syh, syw,
               KH: tl.constexpr, KW: tl.constexpr, FLIP: tl.constexpr, HAS_BIAS: tl.constexpr,
               ROWS: tl.constexpr, BLOCK_W: tl.constexpr, BLOCK_C: tl.constexpr):
    b, rows, cols = _tile(tl.program_id(0), H, W, ROWS, BLOCK_W)
    chans = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    cmask = chans < C
    xb = X + b.to(tl.int64) * sxb
    acc = tl.zeros((ROWS * BLOCK_W, BLOCK_C), dtype=tl.float32)
    for i in tl.static_range(KH):
        if FLIP:
            hh = rows + (KH // 2 - i)
        else:
            hh = rows + (i - KH // 2)
        row_ok = (hh >= 0) & (hh < H)
        for j in tl.static_range(KW):
            if FLIP:
                ww = cols + (KW // 2 - j)
            else:
                ww = cols + (j - KW // 2)
            m = (row_ok & (ww >= 0) & (ww < W))[:, None] & cmask[None, :]
            xv = tl.load(xb + (hh * sxh + ww * sxw)[:, None] + chans[None, :], mask=m, other=0.0)
            wv = tl.load(Wt + (i * KW + j) * C + chans, mask=cmask, other=0.0)
            acc += xv.to(tl.float32) * wv.to(tl.float32)[None, :]
    if HAS_BIAS:
        acc += tl.load(Bias + chans, mask=cmask, other=0.0).to(tl.float32)[None, :]
    om = ((rows < H) & (cols < W))[:, None] & cmask[None, :]
    yb = Y + b.to(tl.int64) * syb
    tl.store(yb + (rows * syh + cols * syw)[:, None] + chans[None, :], acc.to(Y.dtype.element_ty), mask=om)


@triton.jit
def dwconv_wgrad(X, DY, DWP, DBP, H, W, C, sxb, sxh, sxw, sdb, sdh, sdw,
                 KH: tl.constexpr, KW: tl.constexpr, HAS_BIAS: tl.constexpr,
                 ROWS: tl.constexpr, BLOCK_W: tl.constexpr, BLOCK_C: tl.constexpr):
    pid = tl.program_id(0)
    b, rows, cols = _tile(pid, H, W, ROWS, BLOCK_W)
    chans = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    cmask = chans < C
    xb = X + b.to(tl.int64) * sxb
    gm = ((rows < H) & (cols < W))[:, None] & cmask[None, :]
    g = tl.load(DY + b.to(tl.int64) * sdb + (rows * sdh + cols * sdw)[:, None] + chans[None, :], mask=gm,
                other=0.0).to(tl.float32)
    out = DWP + pid.to(tl.int64) * (KH * KW * C)
    for i in tl.static_range(KH):
        hh = rows + (i - KH // 2)
        row_ok = (hh >= 0) & (hh < H)
        for j in tl.static_range(KW):
            ww = cols + (j - KW // 2)
            xm = (row_ok & (ww >= 0) & (ww < W))[:, None] & gm
            xv = tl.load(xb + (hh * sxh + ww * sxw)[:, None] + chans[None, :], mask=xm, other=0.0)
            tl.store(out + (i * KW + j) * C + chans, tl.sum(g * xv.to(tl.float32), axis=0), mask=cmask)
    if HAS_BIAS:
        tl.store(DBP + pid.to(tl.int64) * C + chans, tl.sum(g, axis=0), mask=cmask)
