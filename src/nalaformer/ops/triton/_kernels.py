"""Triton kernels of NaLa attention (spec §2-§3).

Do not import this module directly: :mod:`._loader` executes it once compiled (CUDA) and once
interpreted (``TRITON_INTERPRET=1``, CPU tensors), as two separate module objects.

Feature layout inside the kernels. A (BLOCK, D) tile of q or k is split into its even and odd
columns (``xe``, ``xo``, each (BLOCK, D/2)); every map is elementwise given the row norm, so the
2D features come out as four half-width tiles ``h0e, h1e, h0o, h1o`` (half 0/1 of the feature =
relu(+)/relu(-) part, or the two parts of the cosine map; even/odd column). The rotary rotation
pairs ``(h*e, h*o)`` with the same index, so it is elementwise too. For the matrix products the halves are
joined into two
(BLOCK, D) tiles, ``E = join(h0e, h1e)`` and ``O = join(h0o, h1o)``: column ``c`` of E is the
true feature ``(c % 2) * D + 2 * (c // 2)``, column ``c`` of O the one after it. States and
workspaces are stored in the true feature order (``rowE``/``rowO`` map between the two).

All sums are fp32. ``LOWP`` feeds bf16 operands to ``tl.dot`` (16-bit inputs on a GPU); otherwise
the dot runs in IEEE fp32 (fp32 inputs, and always in the interpreter, where bf16 dots are wrong).
"""

import triton
import triton.language as tl


# ----------------------------------------------------------------------------------------------
# small helpers
# ----------------------------------------------------------------------------------------------
@triton.jit
def _tanh(x):
    e = tl.exp(-2.0 * tl.abs(x))
    t = (1.0 - e) / (1.0 + e)
    return tl.where(x < 0, -t, t)


@triton.jit
def _dot(a, b, acc, LOWP: tl.constexpr):
    if LOWP:
        out = tl.dot(a.to(tl.bfloat16), b.to(tl.bfloat16), acc)
    else:
        out = tl.dot(a, b, acc, input_precision="ieee")
    return out


@triton.jit
def _join(a, b, BN: tl.constexpr, D: tl.constexpr):
    return tl.reshape(tl.join(a, b), (BN, D))


@triton.jit
def _split(x, BN: tl.constexpr, D: tl.constexpr):
    return tl.split(tl.reshape(x, (BN, D // 2, 2)))


@triton.jit
def _load_pairs(base, rows, stride, mask, BN: tl.constexpr, D: tl.constexpr):
    """(BN, D) tile at rows (int32, absolute) -> even, odd columns as fp32 (BN, D/2); masked rows 0."""
    cols = tl.arange(0, D)
    x = tl.load(base + (rows.to(tl.int64) * stride)[:, None] + cols[None, :], mask=mask[:, None], other=0.0)
    return _split(x.to(tl.float32), BN, D)


@triton.jit
def _load_raw(base, rows, hi, stride, D: tl.constexpr):
    """(BN, D) tile at rows < hi in the storage dtype (kept compact while it waits in a prefetch)."""
    cols = tl.arange(0, D)
    return tl.load(base + (rows.to(tl.int64) * stride)[:, None] + cols[None, :], mask=(rows < hi)[:, None],
                   other=0.0)


@triton.jit
def _prefetch_first(base, rows, hi, stride, D: tl.constexpr, PREFETCH: tl.constexpr):
    if PREFETCH:
        x = _load_raw(base, rows, hi, stride, D)
    else:
        x = 0.0
    return x


@triton.jit
def _fetch(base, rows, hi, stride, nxt, BN: tl.constexpr, D: tl.constexpr, PREFETCH: tl.constexpr):
    """The (BN, D) tile at ``rows`` split into fp32 even/odd columns, and the prefetch for the next block.

    With PREFETCH, ``nxt`` holds this block's tile (loaded one iteration ahead) and the load of the next
    block is issued before any math on this one, so its latency hides behind the block's work."""
    if PREFETCH:
        cur = nxt
        nxt = _load_raw(base, rows + BN, hi, stride, D)
    else:
        cur = _load_raw(base, rows, hi, stride, D)
    xe, xo = _split(cur.to(tl.float32), BN, D)
    return xe, xo, nxt


@triton.jit
def _load_tile(base, rows, stride, col0, mask, BN: tl.constexpr, W: tl.constexpr):
    cols = col0 + tl.arange(0, W)
    x = tl.load(base + (rows.to(tl.int64) * stride)[:, None] + cols[None, :], mask=mask[:, None], other=0.0)
    return x.to(tl.float32)


@triton.jit
def _store_tile(base, rows, stride, col0, mask, x, BN: tl.constexpr, W: tl.constexpr):
    cols = col0 + tl.arange(0, W)
    tl.store(base + (rows.to(tl.int64) * stride)[:, None] + cols[None, :],
             x.to(base.dtype.element_ty), mask=mask[:, None])


@triton.jit
def _load_rope(SIN, COS, rows, srn, mask, BN: tl.constexpr, D: tl.constexpr, HAS_ROPE: tl.constexpr):
    """cos, sin of the even and odd columns, each (BN, D/2) fp32. HAS_ROPE == 2: the tables hold one value
    per pair (N, D/2), half the loads and registers of per-column tables (HAS_ROPE == 1)."""
    if HAS_ROPE == 2:
        s = _load_tile(SIN, rows, srn, 0, mask, BN, D // 2)
        c = _load_tile(COS, rows, srn, 0, mask, BN, D // 2)
        ce, se, co, so = c, s, c, s
    else:
        se, so = _load_pairs(SIN, rows, srn, mask, BN, D)
        ce, co = _load_pairs(COS, rows, srn, mask, BN, D)
    return ce, se, co, so


@triton.jit
def _rot(xe, xo, ce, se, co, so):
    """Pair (2i, 2i+1) -> (x0 c0 - x1 s0, x1 c1 + x0 s1)."""
    return xe * ce - xo * se, xo * co + xe * so


@triton.jit
def _rot_t(ge, go, ce, se, co, so):
    """Transpose of :func:`_rot` (the backward of the rotation)."""
    return ge * ce + go * so, go * co - ge * se


@triton.jit
def _rows_eo(D: tl.constexpr):
    c = tl.arange(0, D)
    row_e = (c % 2) * D + 2 * (c // 2)
    return row_e, row_e + 1


@triton.jit
def _load_m(base, scale, D: tl.constexpr):
    """Vector of 2D (true order) -> the four half tiles' (D/2,) parts, times scale."""
    j = tl.arange(0, D // 2)
    m0e = tl.load(base + 2 * j).to(tl.float32) * scale
    m1e = tl.load(base + D + 2 * j).to(tl.float32) * scale
    m0o = tl.load(base + 2 * j + 1).to(tl.float32) * scale
    m1o = tl.load(base + D + 2 * j + 1).to(tl.float32) * scale
    return m0e, m1e, m0o, m1o


@triton.jit
def _store_m(base, m0e, m1e, m0o, m1o, D: tl.constexpr, ATOMIC: tl.constexpr):
    j = tl.arange(0, D // 2)
    if ATOMIC:
        tl.atomic_add(base + 2 * j, m0e)
        tl.atomic_add(base + D + 2 * j, m1e)
        tl.atomic_add(base + 2 * j + 1, m0o)
        tl.atomic_add(base + D + 2 * j + 1, m1o)
    else:
        tl.store(base + 2 * j, m0e.to(base.dtype.element_ty))
        tl.store(base + D + 2 * j, m1e.to(base.dtype.element_ty))
        tl.store(base + 2 * j + 1, m0o.to(base.dtype.element_ty))
        tl.store(base + D + 2 * j + 1, m1o.to(base.dtype.element_ty))


@triton.jit
def _load_state(base, stride_f, col0, scale, D: tl.constexpr, W: tl.constexpr):
    """(2D, DV) state (true order rows, unit column stride) -> E, O row blocks (D, W) fp32."""
    row_e, row_o = _rows_eo(D)
    cols = col0 + tl.arange(0, W)
    se = tl.load(base + row_e[:, None] * stride_f + cols[None, :]).to(tl.float32) * scale
    so = tl.load(base + row_o[:, None] * stride_f + cols[None, :]).to(tl.float32) * scale
    return se, so


@triton.jit
def _store_state(base, stride_f, col0, se, so, D: tl.constexpr, W: tl.constexpr, ATOMIC: tl.constexpr):
    row_e, row_o = _rows_eo(D)
    cols = col0 + tl.arange(0, W)
    pe = base + row_e[:, None] * stride_f + cols[None, :]
    po = base + row_o[:, None] * stride_f + cols[None, :]
    if ATOMIC:
        tl.atomic_add(pe, se)
        tl.atomic_add(po, so)
    else:
        tl.store(pe, se.to(base.dtype.element_ty))
        tl.store(po, so.to(base.dtype.element_ty))


@triton.jit
def _seq_bounds(CU, pid_s, N, VARLEN: tl.constexpr):
    if VARLEN:  # offsets unchecked on the host (max_seqlen given): clamp so that 0 <= start <= end <= N
        start = tl.minimum(tl.maximum(tl.load(CU + pid_s).to(tl.int32), 0), N)
        end = tl.minimum(tl.maximum(tl.load(CU + pid_s + 1).to(tl.int32), start), N)
        b = pid_s * 0
    else:
        start = pid_s * 0
        end = start + N
        b = pid_s
    return b.to(tl.int64), start, end


# ----------------------------------------------------------------------------------------------
# feature maps (spec §2) and their backward
# ----------------------------------------------------------------------------------------------
@triton.jit
def _cos_pair(m, x, alpha):
    """The cosine-inhibit pair in the library's non-negative basis (feature_maps._inhibit):
    [m sin(pi/2 sigmoid(w)), m sin(pi/2 sigmoid(-w))], w = 2 alpha x (= m [cos, sin](pi/4 - theta))."""
    s1 = 1.0 / (1.0 + tl.exp(-2.0 * alpha * x))
    s2 = 1.0 / (1.0 + tl.exp(2.0 * alpha * x))
    return m * tl.sin(1.5707963267948966 * s1), m * tl.sin(1.5707963267948966 * s2)


@triton.jit
def _cos_pair_bwd(m, x, alpha, g0, g1):
    """Gradients (d m, d x) of :func:`_cos_pair` given the gradients g0, g1 of its two outputs."""
    s1 = 1.0 / (1.0 + tl.exp(-2.0 * alpha * x))
    s2 = 1.0 / (1.0 + tl.exp(2.0 * alpha * x))
    a1 = tl.sin(1.5707963267948966 * s1)
    a2 = tl.sin(1.5707963267948966 * s2)
    return g0 * a1 + g1 * a2, (3.141592653589793 * alpha) * s1 * s2 * m * (g0 * a2 - g1 * a1)


@triton.jit
def _log2_safe(a):
    return tl.log2(tl.maximum(a, 1e-30))


@triton.jit
def _nonzero(x):
    return tl.where(x == 0, 1.0, x)


@triton.jit
def _powu(au, lg, p):
    """|u|^p from |u| and log2|u| (0^p = 0 for p > 0, 1 for p = 0, like torch.pow; NaN stays NaN)."""
    return tl.where(au > 0, tl.exp2(p * lg), tl.where(au != au, au, tl.where(p > 0, 0.0, 1.0)))


@triton.jit
def _q_features(qe, qo, lam, tau, alpha, norm_eps, RELU: tl.constexpr):
    n = tl.sqrt(tl.sum(qe * qe, 1) + tl.sum(qo * qo, 1))
    inv = 1.0 / tl.maximum(n, norm_eps)
    p = (lam * (tau + _tanh(n)))[:, None]
    ue = qe * inv[:, None]
    uo = qo * inv[:, None]
    aue = tl.abs(ue)
    auo = tl.abs(uo)
    ae = _powu(aue, _log2_safe(aue), p)
    ao = _powu(auo, _log2_safe(auo), p)
    if RELU:  # a NaN direction gives NaN in both halves (the magnitude is 0 at 0), as in feature_maps
        h0e = tl.where(ue < 0, 0.0, ae)
        h1e = tl.where(ue > 0, 0.0, ae)
        h0o = tl.where(uo < 0, 0.0, ao)
        h1o = tl.where(uo > 0, 0.0, ao)
    else:
        h0e, h1e = _cos_pair(ae, ue, alpha)
        h0o, h1o = _cos_pair(ao, uo, alpha)
    return h0e, h1e, h0o, h1o


@triton.jit
def _q_features_bwd(qe, qo, g0e, g1e, g0o, g1o, lam, tau, alpha, norm_eps, RELU: tl.constexpr):
    n = tl.sqrt(tl.sum(qe * qe, 1) + tl.sum(qo * qo, 1))
    inv = 1.0 / tl.maximum(n, norm_eps)
    th = _tanh(n)
    p = (lam * (tau + th))[:, None]
    ue = qe * inv[:, None]
    uo = qo * inv[:, None]
    aue = tl.abs(ue)
    auo = tl.abs(uo)
    lge = _log2_safe(aue)
    lgo = _log2_safe(auo)
    ae = _powu(aue, lge, p)
    ao = _powu(auo, lgo, p)
    if RELU:
        gae = tl.where(ue > 0, g0e, 0.0) + tl.where(ue < 0, g1e, 0.0)
        gao = tl.where(uo > 0, g0o, 0.0) + tl.where(uo < 0, g1o, 0.0)
        gue = gae * tl.where(aue > 0, p * ae / _nonzero(ue), 0.0)
        guo = gao * tl.where(auo > 0, p * ao / _nonzero(uo), 0.0)
    else:
        gae, gue = _cos_pair_bwd(ae, ue, alpha, g0e, g1e)
        gao, guo = _cos_pair_bwd(ao, uo, alpha, g0o, g1o)
        gue += gae * tl.where(aue > 0, p * ae / _nonzero(ue), 0.0)
        guo += gao * tl.where(auo > 0, p * ao / _nonzero(uo), 0.0)
    # d a / d p = a ln|u|  ->  d p / d n = lam (1 - tanh(n)^2)
    gp = (tl.sum(tl.where(aue > 0, gae * ae * lge, 0.0), 1)
          + tl.sum(tl.where(auo > 0, gao * ao * lgo, 0.0), 1)) * 0.6931471805599453
    gn = gp * lam * (1.0 - th * th)
    # u = q / max(n, eps): the projection term only where the floor is inactive
    udg = tl.sum(ue * gue, 1) + tl.sum(uo * guo, 1)
    corr = tl.where(n >= norm_eps, udg * inv, 0.0)[:, None]
    gq = (gn * tl.where(n > 0, 1.0 / _nonzero(n), 0.0))[:, None]
    dqe = gue * inv[:, None] - corr * ue + gq * qe
    dqo = guo * inv[:, None] - corr * uo + gq * qo
    return dqe, dqo


@triton.jit
def _kmag(k, lam, POW3: tl.constexpr):
    ak = tl.abs(k)
    if POW3:
        b = k * k * ak
        db = 3.0 * k * ak
    else:
        b = tl.where(ak > 0, tl.exp2(lam * _log2_safe(ak)), tl.where(ak != ak, ak, 0.0))
        db = tl.where(ak > 0, lam * b / _nonzero(k), 0.0)
    return b, db


@triton.jit
def _k_features(ke, ko, lam, alpha, norm_eps, RELU: tl.constexpr, POW3: tl.constexpr):
    be, _dbe = _kmag(ke, lam, POW3)
    bo, _dbo = _kmag(ko, lam, POW3)
    if RELU:  # NaN keys give NaN features, as in feature_maps
        h0e = tl.where(ke < 0, 0.0, be)
        h1e = tl.where(ke > 0, 0.0, be)
        h0o = tl.where(ko < 0, 0.0, bo)
        h1o = tl.where(ko > 0, 0.0, bo)
    else:
        n = tl.sqrt(tl.sum(ke * ke, 1) + tl.sum(ko * ko, 1))
        inv = (1.0 / tl.maximum(n, norm_eps))[:, None]
        h0e, h1e = _cos_pair(be, ke * inv, alpha)
        h0o, h1o = _cos_pair(bo, ko * inv, alpha)
    return h0e, h1e, h0o, h1o


@triton.jit
def _k_features_bwd(ke, ko, g0e, g1e, g0o, g1o, lam, alpha, norm_eps, RELU: tl.constexpr, POW3: tl.constexpr):
    be, dbe = _kmag(ke, lam, POW3)
    bo, dbo = _kmag(ko, lam, POW3)
    if RELU:
        dke = (tl.where(ke > 0, g0e, 0.0) + tl.where(ke < 0, g1e, 0.0)) * dbe
        dko = (tl.where(ko > 0, g0o, 0.0) + tl.where(ko < 0, g1o, 0.0)) * dbo
    else:
        n = tl.sqrt(tl.sum(ke * ke, 1) + tl.sum(ko * ko, 1))
        inv = 1.0 / tl.maximum(n, norm_eps)
        ue = ke * inv[:, None]
        uo = ko * inv[:, None]
        gbe, gue = _cos_pair_bwd(be, ue, alpha, g0e, g1e)
        gbo, guo = _cos_pair_bwd(bo, uo, alpha, g0o, g1o)
        udg = tl.sum(ue * gue, 1) + tl.sum(uo * guo, 1)
        corr = tl.where(n >= norm_eps, udg * inv, 0.0)[:, None]
        dke = gbe * dbe + gue * inv[:, None] - corr * ue
        dko = gbo * dbo + guo * inv[:, None] - corr * uo
    return dke, dko


@triton.jit
def _op(x, LOWP: tl.constexpr):
    """A tile as a dot operand: bf16 on the GPU for 16-bit inputs, else fp32."""
    if LOWP:
        y = x.to(tl.bfloat16)
    else:
        y = x
    return y


@triton.jit
def _rotated(h0e, h1e, h0o, h1o, SIN, COS, rows, srn, mask, BN: tl.constexpr, D: tl.constexpr,
             HAS_ROPE: tl.constexpr, LOWP: tl.constexpr):
    """Joined (BN, D) E/O dot operands of the rotated features (the tables live only in here)."""
    if HAS_ROPE:
        ce, se, co, so = _load_rope(SIN, COS, rows, srn, mask, BN, D, HAS_ROPE)
        r0e, r0o = _rot(h0e, h0o, ce, se, co, so)
        r1e, r1o = _rot(h1e, h1o, ce, se, co, so)
        re = _op(_join(r0e, r1e, BN, D), LOWP)
        ro = _op(_join(r0o, r1o, BN, D), LOWP)
    else:
        re = _op(_join(h0e, h1e, BN, D), LOWP)
        ro = _op(_join(h0o, h1o, BN, D), LOWP)
    return re, ro


@triton.jit
def _grad_rot(dre, dro, SIN, COS, rows, srn, mask, BN: tl.constexpr, D: tl.constexpr, HAS_ROPE: tl.constexpr):
    """Gradient w.r.t. the joined rotated E/O tiles -> gradient w.r.t. the unrotated halves."""
    d0e, d1e = _split(dre, BN, D)
    d0o, d1o = _split(dro, BN, D)
    if HAS_ROPE:
        ce, se, co, so = _load_rope(SIN, COS, rows, srn, mask, BN, D, HAS_ROPE)
        d0e, d0o = _rot_t(d0e, d0o, ce, se, co, so)
        d1e, d1o = _rot_t(d1e, d1o, ce, se, co, so)
    return d0e, d1e, d0o, d1o


@triton.jit
def _den_state(h0e, h1e, h0o, h1o, m0e, m1e, m0o, m1o):
    return tl.sum(h0e * m0e[None, :] + h1e * m1e[None, :] + h0o * m0o[None, :] + h1o * m1o[None, :], 1)


# ----------------------------------------------------------------------------------------------
# non-causal: pass 1 (state sums), pass 2 (outputs), backward q side, backward k/v side
@triton.jit
def _key_scale(KMAX, klimit, lam, POW3: tl.constexpr):
    """(s, s^lam): the power of two the keys are multiplied by before their power (NaLa is scale free in k;
    see _ops.key_scale_of). s = 1 unless max|k| (*KMAX) >= 2^klimit; a NaN or inf maximum is not scaled.
    Integer bit arithmetic, so s is exactly the PyTorch side's."""
    bits = tl.load(KMAX).to(tl.int32, bitcast=True)
    expo = (bits >> 23) & 255
    ceil_log2 = expo - 127 + ((bits & 8388607) != 0).to(tl.int32)
    excess = tl.maximum(ceil_log2 - klimit, 0)
    excess = tl.where(expo == 255, 0, excess)
    s = ((127 - excess) << 23).to(tl.float32, bitcast=True)
    if POW3:
        spow = s * s * s
    else:
        spow = tl.exp2(-excess.to(tl.float32) * lam)
    return s, spow


@triton.jit
def _scaled_eps(eps, spow):
    """eps in the scaled keys' units (never flushed to 0: a row with no feature mass stays 0 / eps)."""
    return tl.maximum(eps * spow, 1.1754943508222875e-38)


# ----------------------------------------------------------------------------------------------
@triton.jit
def nc_fwd_state_kernel(
    K, V, SIN, COS, CU, SW, MW,
    skb, skn, skh, svb, svn, svh, srn,
    N, H, lam, alpha, norm_eps, blocks_per_split, n_split, KMAX, klimit,
    D: tl.constexpr, DV: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_DV: tl.constexpr,
    HAS_ROPE: tl.constexpr, RELU: tl.constexpr, POW3: tl.constexpr, VARLEN: tl.constexpr,
    LOWP: tl.constexpr, PREFETCH: tl.constexpr, PER_SPLIT: tl.constexpr,
):
    """Sums over a split of N: S = sum R phi_k v^T, m = sum phi_k. PER_SPLIT stores each split's sums in its
    own slot of (S, H, n_split, 2D, Dv) (causal segment totals); otherwise fp32 atomics into (S, H, 2D, Dv)."""
    NV: tl.constexpr = DV // BLOCK_DV
    pid0 = tl.program_id(0)
    h = tl.program_id(1)
    ks, kpow = _key_scale(KMAX, klimit, lam, POW3)
    s = tl.program_id(2)
    pid_split = pid0 // NV
    col0 = (pid0 % NV) * BLOCK_DV
    b, start, end = _seq_bounds(CU, s, N, VARLEN)
    lo = start + pid_split * blocks_per_split * BLOCK_N
    hi = tl.minimum(lo + blocks_per_split * BLOCK_N, end)
    kbase = K + b * skb + h * skh
    vbase = V + b * svb + h * svh
    offs = tl.arange(0, BLOCK_N)
    acc_e = tl.zeros((D, BLOCK_DV), tl.float32)
    acc_o = tl.zeros((D, BLOCK_DV), tl.float32)
    m0e = tl.zeros((D // 2,), tl.float32)
    m1e = tl.zeros((D // 2,), tl.float32)
    m0o = tl.zeros((D // 2,), tl.float32)
    m1o = tl.zeros((D // 2,), tl.float32)
    k_nx = _prefetch_first(kbase, lo + offs, hi, skn, D, PREFETCH)
    for n0 in range(lo, hi, BLOCK_N):
        rows = n0 + offs
        mask = rows < hi
        ke, ko, k_nx = _fetch(kbase, rows, hi, skn, k_nx, BLOCK_N, D, PREFETCH)
        h0e, h1e, h0o, h1o = _k_features(ke * ks, ko * ks, lam, alpha, norm_eps * ks, RELU, POW3)
        m0e += tl.sum(h0e, 0)
        m1e += tl.sum(h1e, 0)
        m0o += tl.sum(h0o, 0)
        m1o += tl.sum(h1o, 0)
        re, ro = _rotated(h0e, h1e, h0o, h1o, SIN, COS, rows, srn, mask, BLOCK_N, D, HAS_ROPE, LOWP)
        v = _op(_load_tile(vbase, rows, svn, col0, mask, BLOCK_N, BLOCK_DV), LOWP)
        acc_e = _dot(tl.trans(re), v, acc_e, LOWP)
        acc_o = _dot(tl.trans(ro), v, acc_o, LOWP)
    if PER_SPLIT:
        sh = ((s * H + h) * n_split + pid_split).to(tl.int64)
        _store_state(SW + sh * (2 * D * DV), DV, col0, acc_e, acc_o, D, BLOCK_DV, False)
        if col0 == 0:
            _store_m(MW + sh * (2 * D), m0e, m1e, m0o, m1o, D, False)
    else:
        sh = (s * H + h).to(tl.int64)
        _store_state(SW + sh * (2 * D * DV), DV, col0, acc_e, acc_o, D, BLOCK_DV, True)
        if col0 == 0:
            _store_m(MW + sh * (2 * D), m0e, m1e, m0o, m1o, D, True)


@triton.jit
def nc_fwd_out_kernel(
    Q, SIN, COS, CU, SW, MW, O, Z,
    sqb, sqn, sqh, sob, son, soh, srn,
    N, H, lam, tau, alpha, norm_eps, eps, blocks_per_split, KMAX, klimit,
    D: tl.constexpr, DV: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_DV: tl.constexpr,
    HAS_ROPE: tl.constexpr, RELU: tl.constexpr, VARLEN: tl.constexpr, LOWP: tl.constexpr, PREFETCH: tl.constexpr,
    STORE_DEN: tl.constexpr, POW3: tl.constexpr,
):
    """o = (R phi_q)^T S / (phi_q . m + eps); with STORE_DEN also the denominator per token into Z (B, H, N)."""
    NV: tl.constexpr = DV // BLOCK_DV
    pid0 = tl.program_id(0)
    h = tl.program_id(1)
    ks, kpow = _key_scale(KMAX, klimit, lam, POW3)
    s = tl.program_id(2)
    pid_split = pid0 // NV
    col0 = (pid0 % NV) * BLOCK_DV
    b, start, end = _seq_bounds(CU, s, N, VARLEN)
    lo = start + pid_split * blocks_per_split * BLOCK_N
    hi = tl.minimum(lo + blocks_per_split * BLOCK_N, end)
    if lo < hi:
        inv_len = 1.0 / (end - start).to(tl.float32)
        sh = (s * H + h).to(tl.int64)
        s_e, s_o = _load_state(SW + sh * (2 * D * DV), DV, col0, inv_len, D, BLOCK_DV)
        s_e = _op(s_e, LOWP)
        s_o = _op(s_o, LOWP)
        m0e, m1e, m0o, m1o = _load_m(MW + sh * (2 * D), inv_len, D)
        qbase = Q + b * sqb + h * sqh
        obase = O + b * sob + h * soh
        zbase = Z + (b * H + h) * N
        offs = tl.arange(0, BLOCK_N)
        q_nx = _prefetch_first(qbase, lo + offs, hi, sqn, D, PREFETCH)
        for n0 in range(lo, hi, BLOCK_N):
            rows = n0 + offs
            mask = rows < hi
            qe, qo, q_nx = _fetch(qbase, rows, hi, sqn, q_nx, BLOCK_N, D, PREFETCH)
            h0e, h1e, h0o, h1o = _q_features(qe, qo, lam, tau, alpha, norm_eps, RELU)
            den = _den_state(h0e, h1e, h0o, h1o, m0e, m1e, m0o, m1o) + _scaled_eps(eps, kpow)
            re, ro = _rotated(h0e, h1e, h0o, h1o, SIN, COS, rows, srn, mask, BLOCK_N, D, HAS_ROPE, LOWP)
            num = _dot(re, s_e, None, LOWP)
            num = _dot(ro, s_o, num, LOWP)
            _store_tile(obase, rows, son, col0, mask, num / den[:, None], BLOCK_N, BLOCK_DV)
            if STORE_DEN:
                tl.store(zbase + rows, den, mask=mask & (col0 == 0))


@triton.jit
def _nc_out_grads(dobase, obase, zbase, rows, sdon, son, mask, DV: tl.constexpr, BLOCK_N: tl.constexpr):
    """From the forward's o and denominator: g = dO / den, gden = -(dO . num) / den^2 = -(g . o)."""
    den = tl.load(zbase + rows, mask=mask, other=1.0)
    g = _load_tile(dobase, rows, sdon, 0, mask, BLOCK_N, DV) / den[:, None]
    gden = -tl.sum(g * _load_tile(obase, rows, son, 0, mask, BLOCK_N, DV), 1)
    return g, gden


@triton.jit
def nc_bwd_qside_kernel(
    Q, DO, O, Z, SIN, COS, CU, SW, MW, DQ, DSW, DMW,
    sqb, sqn, sqh, sdob, sdon, sdoh, sob, son, soh, sdqb, sdqn, sdqh, srn,
    N, H, lam, tau, alpha, norm_eps, blocks_per_split,
    D: tl.constexpr, DV: tl.constexpr, BLOCK_N: tl.constexpr,
    HAS_ROPE: tl.constexpr, RELU: tl.constexpr, VARLEN: tl.constexpr, LOWP: tl.constexpr, PREFETCH: tl.constexpr,
    DQ_OUT: tl.constexpr, SUMS: tl.constexpr,
):
    """The q side of the non-causal backward, from the forward's o and denominator (g = dO / den,
    gden = -(g . o)). DQ_OUT: dq = J_q^T (R^T S g + gden m) (needs only the forward's S and m). SUMS:
    dS = sum_i R phi_q_i g_i^T, dm = sum_i phi_q_i gden_i (fp32 atomics into workspaces). Both in one launch
    read q, dO, o and compute phi_q once."""
    pid_split = tl.program_id(0)
    h = tl.program_id(1)
    s = tl.program_id(2)
    b, start, end = _seq_bounds(CU, s, N, VARLEN)
    lo = start + pid_split * blocks_per_split * BLOCK_N
    hi = tl.minimum(lo + blocks_per_split * BLOCK_N, end)
    if lo < hi:
        sh = (s * H + h).to(tl.int64)
        if DQ_OUT:
            inv_len = 1.0 / (end - start).to(tl.float32)
            s_e, s_o = _load_state(SW + sh * (2 * D * DV), DV, 0, inv_len, D, DV)
            s_e = _op(s_e, LOWP)
            s_o = _op(s_o, LOWP)
            m0e, m1e, m0o, m1o = _load_m(MW + sh * (2 * D), inv_len, D)
        if SUMS:
            ds_e = tl.zeros((D, DV), tl.float32)
            ds_o = tl.zeros((D, DV), tl.float32)
            dm0e = tl.zeros((D // 2,), tl.float32)
            dm1e = tl.zeros((D // 2,), tl.float32)
            dm0o = tl.zeros((D // 2,), tl.float32)
            dm1o = tl.zeros((D // 2,), tl.float32)
        qbase = Q + b * sqb + h * sqh
        dobase = DO + b * sdob + h * sdoh
        obase = O + b * sob + h * soh
        dqbase = DQ + b * sdqb + h * sdqh
        zbase = Z + (b * H + h) * N
        offs = tl.arange(0, BLOCK_N)
        q_nx = _prefetch_first(qbase, lo + offs, hi, sqn, D, PREFETCH)
        for n0 in range(lo, hi, BLOCK_N):
            rows = n0 + offs
            mask = rows < hi
            g, gden = _nc_out_grads(dobase, obase, zbase, rows, sdon, son, mask, DV, BLOCK_N)
            gd = gden[:, None]
            g = _op(g, LOWP)
            if SUMS:
                qe, qo, q_nx = _fetch(qbase, rows, hi, sqn, q_nx, BLOCK_N, D, PREFETCH)
                h0e, h1e, h0o, h1o = _q_features(qe, qo, lam, tau, alpha, norm_eps, RELU)
                dm0e += tl.sum(h0e * gd, 0)
                dm1e += tl.sum(h1e * gd, 0)
                dm0o += tl.sum(h0o * gd, 0)
                dm1o += tl.sum(h1o * gd, 0)
                re, ro = _rotated(h0e, h1e, h0o, h1o, SIN, COS, rows, srn, mask, BLOCK_N, D, HAS_ROPE, LOWP)
                ds_e = _dot(tl.trans(re), g, ds_e, LOWP)
                ds_o = _dot(tl.trans(ro), g, ds_o, LOWP)
            if DQ_OUT:
                dre = _dot(g, tl.trans(s_e), None, LOWP)
                dro = _dot(g, tl.trans(s_o), None, LOWP)
                g0e, g1e, g0o, g1o = _grad_rot(dre, dro, SIN, COS, rows, srn, mask, BLOCK_N, D, HAS_ROPE)
                g0e += gd * m0e[None, :]
                g1e += gd * m1e[None, :]
                g0o += gd * m0o[None, :]
                g1o += gd * m1o[None, :]
                if not SUMS:  # dq alone: load q late (shorter live range)
                    qe, qo, q_nx = _fetch(qbase, rows, hi, sqn, q_nx, BLOCK_N, D, PREFETCH)
                dqe, dqo = _q_features_bwd(qe, qo, g0e, g1e, g0o, g1o, lam, tau, alpha, norm_eps, RELU)
                _store_tile(dqbase, rows, sdqn, 0, mask, _join(dqe, dqo, BLOCK_N, D), BLOCK_N, D)
        if SUMS:
            _store_state(DSW + sh * (2 * D * DV), DV, 0, ds_e, ds_o, D, DV, True)
            _store_m(DMW + sh * (2 * D), dm0e, dm1e, dm0o, dm1o, D, True)


@triton.jit
def nc_bwd_kv_kernel(
    K, V, SIN, COS, CU, DSW, DMW, DK, DVv,
    skb, skn, skh, svb, svn, svh, sdkb, sdkn, sdkh, sdvb, sdvn, sdvh, srn,
    N, H, lam, alpha, norm_eps, blocks_per_split, KMAX, klimit,
    D: tl.constexpr, DV: tl.constexpr, BLOCK_N: tl.constexpr,
    HAS_ROPE: tl.constexpr, RELU: tl.constexpr, POW3: tl.constexpr, VARLEN: tl.constexpr,
    LOWP: tl.constexpr, PREFETCH: tl.constexpr,
):
    pid_split = tl.program_id(0)
    h = tl.program_id(1)
    ks, kpow = _key_scale(KMAX, klimit, lam, POW3)
    s = tl.program_id(2)
    b, start, end = _seq_bounds(CU, s, N, VARLEN)
    lo = start + pid_split * blocks_per_split * BLOCK_N
    hi = tl.minimum(lo + blocks_per_split * BLOCK_N, end)
    if lo < hi:
        inv_len = 1.0 / (end - start).to(tl.float32)
        sh = (s * H + h).to(tl.int64)
        ds_e, ds_o = _load_state(DSW + sh * (2 * D * DV), DV, 0, inv_len, D, DV)
        ds_e = _op(ds_e, LOWP)
        ds_o = _op(ds_o, LOWP)
        dm0e, dm1e, dm0o, dm1o = _load_m(DMW + sh * (2 * D), inv_len, D)
        kbase = K + b * skb + h * skh
        vbase = V + b * svb + h * svh
        dkbase = DK + b * sdkb + h * sdkh
        dvbase = DVv + b * sdvb + h * sdvh
        offs = tl.arange(0, BLOCK_N)
        k_nx = _prefetch_first(kbase, lo + offs, hi, skn, D, PREFETCH)
        for n0 in range(lo, hi, BLOCK_N):
            rows = n0 + offs
            mask = rows < hi
            ke, ko, k_nx = _fetch(kbase, rows, hi, skn, k_nx, BLOCK_N, D, PREFETCH)
            h0e, h1e, h0o, h1o = _k_features(ke * ks, ko * ks, lam, alpha, norm_eps * ks, RELU, POW3)
            re, ro = _rotated(h0e, h1e, h0o, h1o, SIN, COS, rows, srn, mask, BLOCK_N, D, HAS_ROPE, LOWP)
            dv = _dot(re, ds_e, None, LOWP)
            dv = _dot(ro, ds_o, dv, LOWP)
            _store_tile(dvbase, rows, sdvn, 0, mask, dv, BLOCK_N, DV)
            v = _op(_load_tile(vbase, rows, svn, 0, mask, BLOCK_N, DV), LOWP)
            dre = _dot(v, tl.trans(ds_e), None, LOWP)
            dro = _dot(v, tl.trans(ds_o), None, LOWP)
            g0e, g1e, g0o, g1o = _grad_rot(dre, dro, SIN, COS, rows, srn, mask, BLOCK_N, D, HAS_ROPE)
            g0e += dm0e[None, :]
            g1e += dm1e[None, :]
            g0o += dm0o[None, :]
            g1o += dm1o[None, :]
            dke, dko = _k_features_bwd(ke * ks, ko * ks, g0e, g1e, g0o, g1o, lam, alpha, norm_eps * ks, RELU, POW3)
            _store_tile(dkbase, rows, sdkn, 0, mask, _join(dke * ks, dko * ks, BLOCK_N, D), BLOCK_N, D)


# ----------------------------------------------------------------------------------------------
# causal, chunkwise: one program per (sequence, head[, value tile]) walks the chunks in order
# ----------------------------------------------------------------------------------------------
@triton.jit
def c_fwd_kernel(
    Q, K, V, SIN, COS, CU, S0, M0, CNT0, O, Z, SF, MF,
    sqb, sqn, sqh, skb, skn, skh, svb, svn, svh, sob, son, soh, srn,
    s0s, s0h, s0g, s0f, m0s, m0h, m0g,
    N, H, lam, tau, alpha, norm_eps, eps, n_seg, seg_len, KMAX, klimit,
    D: tl.constexpr, DV: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_DV: tl.constexpr,
    HAS_ROPE: tl.constexpr, RELU: tl.constexpr, POW3: tl.constexpr, VARLEN: tl.constexpr,
    HAS_INIT: tl.constexpr, HAS_CNT: tl.constexpr, STORE_FINAL: tl.constexpr, LOWP: tl.constexpr,
):
    """Tokens [lo, hi) of one segment of one sequence, from the state entering the segment (S0[s, h, seg])."""
    col0 = tl.program_id(0) * BLOCK_DV
    h = tl.program_id(1)
    ks, kpow = _key_scale(KMAX, klimit, lam, POW3)
    s = tl.program_id(2) // n_seg
    seg = tl.program_id(2) % n_seg
    b, start, end = _seq_bounds(CU, s, N, VARLEN)
    lo = start + seg * seg_len
    hi = tl.minimum(lo + seg_len, end)
    if HAS_CNT:
        cnt0 = tl.load(CNT0 + s).to(tl.float32)
    else:
        cnt0 = 0.0
    if HAS_INIT:
        s_e, s_o = _load_state(S0 + s.to(tl.int64) * s0s + h * s0h + seg * s0g, s0f, col0, 1.0, D, BLOCK_DV)
        m0e, m1e, m0o, m1o = _load_m(M0 + s.to(tl.int64) * m0s + h * m0h + seg * m0g, 1.0, D)
    else:
        s_e = tl.zeros((D, BLOCK_DV), tl.float32)
        s_o = tl.zeros((D, BLOCK_DV), tl.float32)
        m0e = tl.zeros((D // 2,), tl.float32)
        m1e = tl.zeros((D // 2,), tl.float32)
        m0o = tl.zeros((D // 2,), tl.float32)
        m1o = tl.zeros((D // 2,), tl.float32)
    qbase = Q + b * sqb + h * sqh
    kbase = K + b * skb + h * skh
    vbase = V + b * svb + h * svh
    obase = O + b * sob + h * soh
    zbase = Z + (b * H + h) * N
    offs = tl.arange(0, BLOCK_C)
    causal = offs[:, None] >= offs[None, :]
    for c0 in range(lo, hi, BLOCK_C):
        rows = c0 + offs
        mask = rows < hi
        ke, ko = _load_pairs(kbase, rows, skn, mask, BLOCK_C, D)
        k0e, k1e, k0o, k1o = _k_features(ke * ks, ko * ks, lam, alpha, norm_eps * ks, RELU, POW3)
        ks0e = tl.sum(k0e, 0)
        ks1e = tl.sum(k1e, 0)
        ks0o = tl.sum(k0o, 0)
        ks1o = tl.sum(k1o, 0)
        kue = _op(_join(k0e, k1e, BLOCK_C, D), LOWP)
        kuo = _op(_join(k0o, k1o, BLOCK_C, D), LOWP)
        rke, rko = _rotated(k0e, k1e, k0o, k1o, SIN, COS, rows, srn, mask, BLOCK_C, D, HAS_ROPE, LOWP)
        qe, qo = _load_pairs(qbase, rows, sqn, mask, BLOCK_C, D)
        q0e, q1e, q0o, q1o = _q_features(qe, qo, lam, tau, alpha, norm_eps, RELU)
        den = _den_state(q0e, q1e, q0o, q1o, m0e, m1e, m0o, m1o)
        dsc = _dot(_op(_join(q0e, q1e, BLOCK_C, D), LOWP), tl.trans(kue), None, LOWP)
        dsc = _dot(_op(_join(q0o, q1o, BLOCK_C, D), LOWP), tl.trans(kuo), dsc, LOWP)
        den += tl.sum(tl.where(causal, dsc, 0.0), 1)
        z = den + _scaled_eps(eps, kpow) * (cnt0 + (rows - start + 1).to(tl.float32))
        rqe, rqo = _rotated(q0e, q1e, q0o, q1o, SIN, COS, rows, srn, mask, BLOCK_C, D, HAS_ROPE, LOWP)
        sc = _dot(rqe, tl.trans(rke), None, LOWP)
        sc = _op(tl.where(causal, _dot(rqo, tl.trans(rko), sc, LOWP), 0.0), LOWP)
        v = _op(_load_tile(vbase, rows, svn, col0, mask, BLOCK_C, BLOCK_DV), LOWP)
        num = _dot(sc, v, None, LOWP)
        num = _dot(rqe, _op(s_e, LOWP), num, LOWP)
        num = _dot(rqo, _op(s_o, LOWP), num, LOWP)
        _store_tile(obase, rows, son, col0, mask, num / z[:, None], BLOCK_C, BLOCK_DV)
        tl.store(zbase + rows, z, mask=mask & (col0 == 0))
        s_e = _dot(tl.trans(rke), v, s_e, LOWP)
        s_o = _dot(tl.trans(rko), v, s_o, LOWP)
        m0e += ks0e
        m1e += ks1e
        m0o += ks0o
        m1o += ks1o
    if STORE_FINAL:
        sh = (s * H + h).to(tl.int64)
        _store_state(SF + sh * (2 * D * DV), DV, col0, s_e, s_o, D, BLOCK_DV, False)
        if col0 == 0:
            _store_m(MF + sh * (2 * D), m0e, m1e, m0o, m1o, D, False)


@triton.jit
def c_bwd_q_kernel(
    Q, K, V, DO, O, Z, SIN, COS, CU, S0, M0, DQ, DZ, TQ, TQM,
    sqb, sqn, sqh, skb, skn, skh, svb, svn, svh, sdob, sdon, sdoh, sob, son, soh, sdqb, sdqn, sdqh, srn,
    s0s, s0h, s0g, s0f, m0s, m0h, m0g,
    N, H, lam, tau, alpha, norm_eps, n_seg, seg_len, KMAX, klimit,
    D: tl.constexpr, DV: tl.constexpr, BLOCK_C: tl.constexpr,
    HAS_ROPE: tl.constexpr, RELU: tl.constexpr, POW3: tl.constexpr, VARLEN: tl.constexpr,
    HAS_INIT: tl.constexpr, QSUM: tl.constexpr, LOWP: tl.constexpr,
):
    """Forward sweep over one segment: dq (needs the prefix state) and dz = -(dO . o) / z per token.
    QSUM: also store the segment's totals sum R phi_q dnum^T and sum phi_q dz into TQ/TQM (S, H, n_seg, ...)."""
    h = tl.program_id(1)
    ks, kpow = _key_scale(KMAX, klimit, lam, POW3)
    s = tl.program_id(2) // n_seg
    seg = tl.program_id(2) % n_seg
    b, start, end = _seq_bounds(CU, s, N, VARLEN)
    lo = start + seg * seg_len
    hi = tl.minimum(lo + seg_len, end)
    if HAS_INIT:
        s_e, s_o = _load_state(S0 + s.to(tl.int64) * s0s + h * s0h + seg * s0g, s0f, 0, 1.0, D, DV)
        m0e, m1e, m0o, m1o = _load_m(M0 + s.to(tl.int64) * m0s + h * m0h + seg * m0g, 1.0, D)
    else:
        s_e = tl.zeros((D, DV), tl.float32)
        s_o = tl.zeros((D, DV), tl.float32)
        m0e = tl.zeros((D // 2,), tl.float32)
        m1e = tl.zeros((D // 2,), tl.float32)
        m0o = tl.zeros((D // 2,), tl.float32)
        m1o = tl.zeros((D // 2,), tl.float32)
    qbase = Q + b * sqb + h * sqh
    kbase = K + b * skb + h * skh
    vbase = V + b * svb + h * svh
    dobase = DO + b * sdob + h * sdoh
    obase = O + b * sob + h * soh
    dqbase = DQ + b * sdqb + h * sdqh
    zbase = Z + (b * H + h) * N
    dzbase = DZ + (b * H + h) * N
    offs = tl.arange(0, BLOCK_C)
    causal = offs[:, None] >= offs[None, :]
    if QSUM:
        t_e = tl.zeros((D, DV), tl.float32)
        t_o = tl.zeros((D, DV), tl.float32)
        t0e = tl.zeros((D // 2,), tl.float32)
        t1e = tl.zeros((D // 2,), tl.float32)
        t0o = tl.zeros((D // 2,), tl.float32)
        t1o = tl.zeros((D // 2,), tl.float32)
    for c0 in range(lo, hi, BLOCK_C):
        rows = c0 + offs
        mask = rows < hi
        ke, ko = _load_pairs(kbase, rows, skn, mask, BLOCK_C, D)
        k0e, k1e, k0o, k1o = _k_features(ke * ks, ko * ks, lam, alpha, norm_eps * ks, RELU, POW3)
        ks0e = tl.sum(k0e, 0)
        ks1e = tl.sum(k1e, 0)
        ks0o = tl.sum(k0o, 0)
        ks1o = tl.sum(k1o, 0)
        kue = _op(_join(k0e, k1e, BLOCK_C, D), LOWP)
        kuo = _op(_join(k0o, k1o, BLOCK_C, D), LOWP)
        rke, rko = _rotated(k0e, k1e, k0o, k1o, SIN, COS, rows, srn, mask, BLOCK_C, D, HAS_ROPE, LOWP)
        z = tl.load(zbase + rows, mask=mask, other=1.0)
        dnum = _load_tile(dobase, rows, sdon, 0, mask, BLOCK_C, DV) / z[:, None]
        dz = -tl.sum(dnum * _load_tile(obase, rows, son, 0, mask, BLOCK_C, DV), 1)
        tl.store(dzbase + rows, dz, mask=mask)
        dnum = _op(dnum, LOWP)
        v = _op(_load_tile(vbase, rows, svn, 0, mask, BLOCK_C, DV), LOWP)
        a = _op(tl.where(causal, _dot(dnum, tl.trans(v), None, LOWP), 0.0), LOWP)
        dre = _dot(a, rke, None, LOWP)
        dre = _dot(dnum, tl.trans(_op(s_e, LOWP)), dre, LOWP)
        dro = _dot(a, rko, None, LOWP)
        dro = _dot(dnum, tl.trans(_op(s_o, LOWP)), dro, LOWP)
        w = _op(tl.where(causal, dz[:, None], 0.0), LOWP)
        dpe = _dot(w, kue, None, LOWP)
        dpo = _dot(w, kuo, None, LOWP)
        g0e, g1e, g0o, g1o = _grad_rot(dre, dro, SIN, COS, rows, srn, mask, BLOCK_C, D, HAS_ROPE)
        p0e, p1e = _split(dpe, BLOCK_C, D)
        p0o, p1o = _split(dpo, BLOCK_C, D)
        dzc = dz[:, None]
        g0e += p0e + dzc * m0e[None, :]
        g1e += p1e + dzc * m1e[None, :]
        g0o += p0o + dzc * m0o[None, :]
        g1o += p1o + dzc * m1o[None, :]
        qe, qo = _load_pairs(qbase, rows, sqn, mask, BLOCK_C, D)
        dqe, dqo = _q_features_bwd(qe, qo, g0e, g1e, g0o, g1o, lam, tau, alpha, norm_eps, RELU)
        _store_tile(dqbase, rows, sdqn, 0, mask, _join(dqe, dqo, BLOCK_C, D), BLOCK_C, D)
        s_e = _dot(tl.trans(rke), v, s_e, LOWP)
        s_o = _dot(tl.trans(rko), v, s_o, LOWP)
        m0e += ks0e
        m1e += ks1e
        m0o += ks0o
        m1o += ks1o
        if QSUM:
            q0e, q1e, q0o, q1o = _q_features(qe, qo, lam, tau, alpha, norm_eps, RELU)
            t0e += tl.sum(q0e * dzc, 0)
            t1e += tl.sum(q1e * dzc, 0)
            t0o += tl.sum(q0o * dzc, 0)
            t1o += tl.sum(q1o * dzc, 0)
            rqe, rqo = _rotated(q0e, q1e, q0o, q1o, SIN, COS, rows, srn, mask, BLOCK_C, D, HAS_ROPE, LOWP)
            t_e = _dot(tl.trans(rqe), dnum, t_e, LOWP)
            t_o = _dot(tl.trans(rqo), dnum, t_o, LOWP)
    if QSUM:
        sg = ((s * H + h) * n_seg + seg).to(tl.int64)
        _store_state(TQ + sg * (2 * D * DV), DV, 0, t_e, t_o, D, DV, False)
        _store_m(TQM + sg * (2 * D), t0e, t1e, t0o, t1o, D, False)


@triton.jit
def c_bwd_kv_kernel(
    Q, K, V, DO, Z, DZ, SIN, COS, CU, DSF, DMF, DK, DVv, DS0, DM0,
    sqb, sqn, sqh, skb, skn, skh, svb, svn, svh, sdob, sdon, sdoh, sdkb, sdkn, sdkh, sdvb, sdvn, sdvh, srn,
    N, H, lam, tau, alpha, norm_eps, n_seg, seg_len, dsf_slots, dsf_step, KMAX, klimit,
    D: tl.constexpr, DV: tl.constexpr, BLOCK_C: tl.constexpr,
    HAS_ROPE: tl.constexpr, RELU: tl.constexpr, POW3: tl.constexpr, VARLEN: tl.constexpr,
    HAS_DFINAL: tl.constexpr, STORE_DINIT: tl.constexpr, LOWP: tl.constexpr,
):
    """Reverse sweep over one segment: dk, dv, and the gradient of the state entering it.
    The gradient w.r.t. the state leaving the segment is read from DSF/DMF at slot (s, h[, seg])."""
    h = tl.program_id(1)
    ks, kpow = _key_scale(KMAX, klimit, lam, POW3)
    s = tl.program_id(2) // n_seg
    seg = tl.program_id(2) % n_seg
    b, start, end = _seq_bounds(CU, s, N, VARLEN)
    lo = start + seg * seg_len
    hi = tl.minimum(lo + seg_len, end)
    sh = (s * H + h).to(tl.int64)
    if HAS_DFINAL:
        sg = sh * dsf_slots + seg * dsf_step
        g_e, g_o = _load_state(DSF + sg * (2 * D * DV), DV, 0, 1.0, D, DV)
        gm0e, gm1e, gm0o, gm1o = _load_m(DMF + sg * (2 * D), 1.0, D)
    else:
        g_e = tl.zeros((D, DV), tl.float32)
        g_o = tl.zeros((D, DV), tl.float32)
        gm0e = tl.zeros((D // 2,), tl.float32)
        gm1e = tl.zeros((D // 2,), tl.float32)
        gm0o = tl.zeros((D // 2,), tl.float32)
        gm1o = tl.zeros((D // 2,), tl.float32)
    qbase = Q + b * sqb + h * sqh
    kbase = K + b * skb + h * skh
    vbase = V + b * svb + h * svh
    dobase = DO + b * sdob + h * sdoh
    dkbase = DK + b * sdkb + h * sdkh
    dvbase = DVv + b * sdvb + h * sdvh
    zbase = Z + (b * H + h) * N
    dzbase = DZ + (b * H + h) * N
    offs = tl.arange(0, BLOCK_C)
    later = offs[None, :] >= offs[:, None]  # [j, i]: query i at or after key j
    n_chunks = tl.cdiv(tl.maximum(hi - lo, 0), BLOCK_C)
    for it in range(n_chunks):
        c0 = lo + (n_chunks - 1 - it) * BLOCK_C
        rows = c0 + offs
        mask = rows < hi
        dz = tl.load(dzbase + rows, mask=mask, other=0.0)
        qe, qo = _load_pairs(qbase, rows, sqn, mask, BLOCK_C, D)
        q0e, q1e, q0o, q1o = _q_features(qe, qo, lam, tau, alpha, norm_eps, RELU)
        dzc = dz[:, None]
        qz0e = tl.sum(q0e * dzc, 0)
        qz1e = tl.sum(q1e * dzc, 0)
        qz0o = tl.sum(q0o * dzc, 0)
        qz1o = tl.sum(q1o * dzc, 0)
        que = _op(_join(q0e, q1e, BLOCK_C, D), LOWP)
        quo = _op(_join(q0o, q1o, BLOCK_C, D), LOWP)
        rqe, rqo = _rotated(q0e, q1e, q0o, q1o, SIN, COS, rows, srn, mask, BLOCK_C, D, HAS_ROPE, LOWP)
        z = tl.load(zbase + rows, mask=mask, other=1.0)
        dnum = _op(_load_tile(dobase, rows, sdon, 0, mask, BLOCK_C, DV) / z[:, None], LOWP)
        ke, ko = _load_pairs(kbase, rows, skn, mask, BLOCK_C, D)
        k0e, k1e, k0o, k1o = _k_features(ke * ks, ko * ks, lam, alpha, norm_eps * ks, RELU, POW3)
        rke, rko = _rotated(k0e, k1e, k0o, k1o, SIN, COS, rows, srn, mask, BLOCK_C, D, HAS_ROPE, LOWP)
        v = _op(_load_tile(vbase, rows, svn, 0, mask, BLOCK_C, DV), LOWP)
        ge_op = _op(g_e, LOWP)
        go_op = _op(g_o, LOWP)
        sct = _dot(rke, tl.trans(rqe), None, LOWP)
        sct = _op(tl.where(later, _dot(rko, tl.trans(rqo), sct, LOWP), 0.0), LOWP)
        dv = _dot(sct, dnum, None, LOWP)
        dv = _dot(rke, ge_op, dv, LOWP)
        dv = _dot(rko, go_op, dv, LOWP)
        _store_tile(dvbase, rows, sdvn, 0, mask, dv, BLOCK_C, DV)
        bm = _op(tl.where(later, _dot(v, tl.trans(dnum), None, LOWP), 0.0), LOWP)
        dre = _dot(bm, rqe, None, LOWP)
        dre = _dot(v, tl.trans(ge_op), dre, LOWP)
        dro = _dot(bm, rqo, None, LOWP)
        dro = _dot(v, tl.trans(go_op), dro, LOWP)
        w = _op(tl.where(later, dz[None, :], 0.0), LOWP)
        dpe = _dot(w, que, None, LOWP)
        dpo = _dot(w, quo, None, LOWP)
        g_e = _dot(tl.trans(rqe), dnum, g_e, LOWP)
        g_o = _dot(tl.trans(rqo), dnum, g_o, LOWP)
        g0e, g1e, g0o, g1o = _grad_rot(dre, dro, SIN, COS, rows, srn, mask, BLOCK_C, D, HAS_ROPE)
        p0e, p1e = _split(dpe, BLOCK_C, D)
        p0o, p1o = _split(dpo, BLOCK_C, D)
        g0e += p0e + gm0e[None, :]
        g1e += p1e + gm1e[None, :]
        g0o += p0o + gm0o[None, :]
        g1o += p1o + gm1o[None, :]
        ke, ko = _load_pairs(kbase, rows, skn, mask, BLOCK_C, D)
        dke, dko = _k_features_bwd(ke * ks, ko * ks, g0e, g1e, g0o, g1o, lam, alpha, norm_eps * ks, RELU, POW3)
        _store_tile(dkbase, rows, sdkn, 0, mask, _join(dke * ks, dko * ks, BLOCK_C, D), BLOCK_C, D)
        gm0e += qz0e
        gm1e += qz1e
        gm0o += qz0o
        gm1o += qz1o
    if STORE_DINIT:
        _store_state(DS0 + sh * (2 * D * DV), DV, 0, g_e, g_o, D, DV, False)
        _store_m(DM0 + sh * (2 * D), gm0e, gm1e, gm0o, gm1o, D, False)


# ----------------------------------------------------------------------------------------------
# decode: one token per sequence, state in/out (true feature order)
# ----------------------------------------------------------------------------------------------
@triton.jit
def decode_kernel(
    Q, K, V, S0, M0, CNT0, SIN, COS, O, S1, M1,
    sqb, sqh, skb, skh, svb, svh, sob, soh, s0b, s0h, s0f, m0b, m0h, srb,
    H, lam, tau, alpha, norm_eps, eps,
    D: tl.constexpr, DV: tl.constexpr, BLOCK_DV: tl.constexpr,
    HAS_ROPE: tl.constexpr, RELU: tl.constexpr, POW3: tl.constexpr, HAS_STATE: tl.constexpr,
):
    pid = tl.program_id(0)
    col0 = tl.program_id(1) * BLOCK_DV
    b = (pid // H).to(tl.int64)
    h = pid % H
    one = tl.arange(0, 1)
    mask = one < 1
    qe, qo = _load_pairs(Q + b * sqb + h * sqh, one, 0, mask, 1, D)
    ke, ko = _load_pairs(K + b * skb + h * skh, one, 0, mask, 1, D)
    q0e, q1e, q0o, q1o = _q_features(qe, qo, lam, tau, alpha, norm_eps, RELU)
    k0e, k1e, k0o, k1o = _k_features(ke, ko, lam, alpha, norm_eps, RELU, POW3)
    rqe, rqo = _rotated(q0e, q1e, q0o, q1o, SIN + b * srb, COS + b * srb, one, 0, mask, 1, D, HAS_ROPE, False)
    rke, rko = _rotated(k0e, k1e, k0o, k1o, SIN + b * srb, COS + b * srb, one, 0, mask, 1, D, HAS_ROPE, False)
    v = _load_tile(V + b * svb + h * svh, one, 0, col0, mask, 1, BLOCK_DV)  # (1, BLOCK_DV)
    if HAS_STATE:
        s_e, s_o = _load_state(S0 + b * s0b + h * s0h, s0f, col0, 1.0, D, BLOCK_DV)
        m0e, m1e, m0o, m1o = _load_m(M0 + b * m0b + h * m0h, 1.0, D)
        cnt = tl.load(CNT0 + b).to(tl.float32) + 1.0
    else:
        s_e = tl.zeros((D, BLOCK_DV), tl.float32)
        s_o = tl.zeros((D, BLOCK_DV), tl.float32)
        m0e = tl.zeros((D // 2,), tl.float32)
        m1e = tl.zeros((D // 2,), tl.float32)
        m0o = tl.zeros((D // 2,), tl.float32)
        m1o = tl.zeros((D // 2,), tl.float32)
        cnt = 1.0
    s_e += tl.trans(rke) * v
    s_o += tl.trans(rko) * v
    m0e += tl.sum(k0e, 0)
    m1e += tl.sum(k1e, 0)
    m0o += tl.sum(k0o, 0)
    m1o += tl.sum(k1o, 0)
    num = tl.sum(tl.trans(rqe) * s_e, 0) + tl.sum(tl.trans(rqo) * s_o, 0)  # (BLOCK_DV,)
    den = _den_state(q0e, q1e, q0o, q1o, m0e, m1e, m0o, m1o)  # (1,)
    o = (num[None, :] / cnt) / (den[:, None] / cnt + eps)
    _store_tile(O + b * sob + h * soh, one, 0, col0, mask, o, 1, BLOCK_DV)
    bh = b * H + h
    _store_state(S1 + bh * (2 * D * DV), DV, col0, s_e, s_o, D, BLOCK_DV, False)
    if col0 == 0:
        _store_m(M1 + bh * (2 * D), m0e, m1e, m0o, m1o, D, False)
