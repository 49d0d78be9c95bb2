"""nala_attention (torch path) against the float64 reference and the authors' golden tensors."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

import nalaformer as nf
from tests.conftest import rel_err

MODES = ("relu", "cosine")


def make_inputs(b, n, h, d, dv=None, dtype=torch.float32, seed=0, scale=1.0, requires_grad=False):
    g = torch.Generator().manual_seed(seed)
    dv = dv or d
    q, k = (torch.randn(b, n, h, d, generator=g, dtype=torch.float64) * scale for _ in range(2))
    v = torch.randn(b, n, h, dv, generator=g, dtype=torch.float64)
    return [t.to(dtype).requires_grad_(requires_grad) for t in (q, k, v)]


def rope_for(n, d, dtype=torch.float64):
    return tuple(t.to(dtype) for t in nf.rope_1d(n, d, dtype=torch.float64))


def as64(*ts):
    return [t.detach().double().requires_grad_(True) for t in ts]


def check_fwd_bwd(q, k, v, tol, rope=None, **kw):
    """Forward and all input gradients of the torch path vs the float64 reference."""
    q, k, v = (t.detach().clone().requires_grad_(True) for t in (q, k, v))
    q64, k64, v64 = as64(q, k, v)
    rope64 = None if rope is None else tuple(t.double() for t in rope)
    o = nf.nala_attention(q, k, v, rope=rope, backend="torch", **kw)
    o64 = nf.nala_attention_reference(q64, k64, v64, rope=rope64, **kw)
    assert o.dtype == q.dtype and o.shape == v.shape
    assert rel_err(o, o64) <= tol
    grad = torch.randn_like(o64)
    o.backward(grad.to(o.dtype))
    o64.backward(grad)
    for name, a, e in (("q", q, q64), ("k", k, k64), ("v", v, v64)):
        assert rel_err(a.grad, e.grad) <= tol * 10, name  # gradients sum over N: a little more rounding


@pytest.mark.parametrize("inhibit", MODES)
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("use_rope", [False, True])
@pytest.mark.parametrize("shape", [(2, 1, 3, 8, 8), (1, 37, 2, 16, 8), (2, 130, 2, 8, 12)])
def test_fp32_matches_float64(inhibit, causal, use_rope, shape):
    b, n, h, d, dv = shape
    q, k, v = make_inputs(b, n, h, d, dv, seed=n + d)
    rope = rope_for(n, d, torch.float32) if use_rope else None
    check_fwd_bwd(q, k, v, 1e-5, rope=rope, causal=causal, inhibit=inhibit)


def test_long_causal_sequence():
    q, k, v = make_inputs(1, 1031, 2, 16, seed=3)
    check_fwd_bwd(q, k, v, 1e-5, rope=rope_for(1031, 16, torch.float32), causal=True)


@pytest.mark.parametrize("inhibit", MODES)
@pytest.mark.parametrize("causal", [False, True])
def test_gradcheck_float64(inhibit, causal):
    q, k, v = make_inputs(1, 5, 2, 4, 3, dtype=torch.float64, seed=7, requires_grad=True)
    rope = rope_for(5, 4)
    fn = lambda q, k, v: nf.nala_attention(q, k, v, causal=causal, rope=rope, inhibit=inhibit)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (q, k, v), eps=1e-6, atol=1e-6, rtol=1e-4)


def test_gradcheck_through_initial_state():
    q, k, v = make_inputs(1, 4, 1, 4, 2, dtype=torch.float64, seed=8, requires_grad=True)
    _, state = nf.nala_attention_reference(*make_inputs(1, 3, 1, 4, 2, dtype=torch.float64, seed=9), causal=True,
                                           output_final_state=True)
    kv, ks = state.kv.clone().requires_grad_(), state.k_sum.clone().requires_grad_()

    def fn(q, k, v, kv, ks):
        return nf.nala_attention(q, k, v, causal=True, initial_state=(kv, ks, state.count))

    assert torch.autograd.gradcheck(fn, (q, k, v, kv, ks), eps=1e-6, atol=1e-6, rtol=1e-4)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("causal", [False, True])
def test_low_precision_inputs(dtype, causal):
    q, k, v = make_inputs(2, 67, 2, 16, dtype=dtype, seed=11)
    check_fwd_bwd(q, k, v, 1e-2, rope=rope_for(67, 16, dtype), causal=causal)


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("backend", ["torch", "reference"])
def test_varlen_equals_per_segment_loop(causal, backend):
    lengths = [5, 1, 17, 64, 9]
    cu = torch.tensor([0] + torch.tensor(lengths).cumsum(0).tolist(), dtype=torch.int32)
    total = sum(lengths)
    q, k, v = make_inputs(1, total, 2, 8, seed=12)
    # positions restart in every packed document
    positions = torch.cat([torch.arange(n) for n in lengths])
    rope = nf.rope_1d(positions, 8)
    o = nf.nala_attention(q, k, v, causal=causal, rope=rope, cu_seqlens=cu, backend=backend)
    for s, e in zip(cu[:-1].tolist(), cu[1:].tolist()):
        seg = nf.nala_attention(q[:, s:e], k[:, s:e], v[:, s:e], causal=causal, rope=nf.rope_1d(e - s, 8),
                                backend=backend)
        assert rel_err(o[:, s:e], seg) <= 1e-6


def test_varlen_state_per_segment():
    cu = torch.tensor([0, 7, 20], dtype=torch.int64)
    q, k, v = make_inputs(1, 20, 2, 8, seed=13)
    o, state = nf.nala_attention(q, k, v, causal=True, cu_seqlens=cu, output_final_state=True)
    assert state.kv.shape == (2, 2, 16, 8) and state.count.tolist() == [7, 13]
    _, s1 = nf.nala_attention(q[:, 7:], k[:, 7:], v[:, 7:], causal=True, output_final_state=True)
    assert rel_err(state.kv[1:], s1.kv) <= 1e-6


@pytest.mark.parametrize("backend", ["torch", "reference"])
@pytest.mark.parametrize("split", [1, 33, 64, 99])
def test_state_carry_equals_one_run(backend, split):
    n, d = 100, 8
    q, k, v = make_inputs(2, n, 2, d, seed=14)
    sin, cos = nf.rope_1d(n, d)
    full, full_state = nf.nala_attention(q, k, v, causal=True, rope=(sin, cos), output_final_state=True,
                                         backend=backend)
    o1, st = nf.nala_attention(q[:, :split], k[:, :split], v[:, :split], causal=True,
                               rope=(sin[:split], cos[:split]), output_final_state=True, backend=backend)
    o2, st2 = nf.nala_attention(q[:, split:], k[:, split:], v[:, split:], causal=True,
                                rope=(sin[split:], cos[split:]), initial_state=st, output_final_state=True,
                                backend=backend)
    assert rel_err(torch.cat([o1, o2], 1), full) <= 1e-5
    assert rel_err(st2.kv, full_state.kv) <= 1e-5 and st2.count.tolist() == [n, n]


@pytest.mark.parametrize("inhibit", MODES)
def test_decode_steps_equal_full_forward(inhibit):
    n, d = 12, 8
    q, k, v = make_inputs(3, n, 2, d, seed=15)
    sin, cos = nf.rope_1d(n, d)
    full = nf.nala_attention(q, k, v, causal=True, rope=(sin, cos), inhibit=inhibit)
    prefix = 5
    o, state = nf.nala_attention(q[:, :prefix], k[:, :prefix], v[:, :prefix], causal=True, inhibit=inhibit,
                                 rope=(sin[:prefix], cos[:prefix]), output_final_state=True)
    outs = [o]
    for t in range(prefix, n):
        o_t, state = nf.nala_decode_step(q[:, t], k[:, t], v[:, t], state, rope=(sin[t], cos[t]), inhibit=inhibit)
        outs.append(o_t[:, None])
    assert rel_err(torch.cat(outs, 1), full) <= 1e-5
    assert state.count.tolist() == [n] * 3


def test_decode_step_per_sequence_positions():
    d = 8
    q, k, v = make_inputs(2, 1, 2, d, seed=16)
    sin, cos = nf.rope_1d(torch.tensor([3, 0]), d)
    o, _ = nf.nala_decode_step(q[:, 0], k[:, 0], v[:, 0], rope=(sin, cos))
    for b in range(2):
        ob = nf.nala_attention(q[b:b + 1], k[b:b + 1], v[b:b + 1], causal=True, rope=(sin[b:b + 1], cos[b:b + 1]))
        assert rel_err(o[b], ob[0, 0]) <= 1e-6


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("inhibit", MODES)
@pytest.mark.parametrize("lam,tau", [(3.0, 0.5), (2.5, 0.3)])  # lam*tau < 1: |u|^p has an infinite slope at 0
def test_zero_queries_and_keys_are_finite(causal, inhibit, lam, tau):
    q, k, v = make_inputs(1, 9, 2, 8, seed=17, requires_grad=False)
    q = q.clone()
    q[:, 3] = 0
    k = k.clone()
    k[:, 0] = 0
    q.requires_grad_()
    k.requires_grad_()
    o = nf.nala_attention(q, k, v, causal=causal, inhibit=inhibit, lam=lam, tau=tau)
    o64 = nf.nala_attention_reference(q.double(), k.double(), v.double(), causal=causal, inhibit=inhibit, lam=lam,
                                      tau=tau)
    assert torch.isfinite(o).all() and rel_err(o, o64) <= 1e-5
    assert o[:, 3].abs().max() == 0  # phi(0) = 0: the zero query attends to nothing
    o.sum().backward()
    assert torch.isfinite(q.grad).all() and torch.isfinite(k.grad).all()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("causal", [False, True])
def test_huge_norms_are_finite(dtype, causal):
    q, k, v = make_inputs(1, 33, 2, 8, dtype=dtype, seed=18, scale=1e3)
    o = nf.nala_attention(q, k, v, causal=causal)
    o64 = nf.nala_attention_reference(q.double(), k.double(), v.double(), causal=causal)
    assert torch.isfinite(o).all()
    assert rel_err(o, o64) <= (1e-5 if dtype == torch.float32 else 1e-2)


@pytest.mark.parametrize("inhibit", MODES)
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("magnitude", [1e12, 1e20, 1e30])
def test_huge_keys_are_exact(causal, inhibit, magnitude):
    """|k|^3 overflows float32 from |k| ~ 7e12 (and its sums much earlier); NaLa is scale free in k, so the
    torch path scales huge keys by a power of two and eps alike: forward and gradients stay exact."""
    q, k, v = make_inputs(1, 37, 2, 8, seed=21)
    check_fwd_bwd(q, k * magnitude, v, 1e-5, rope=rope_for(37, 8, torch.float32), causal=causal, inhibit=inhibit)


def test_huge_keys_carry_the_state_exactly():
    q, k, v = make_inputs(1, 20, 2, 8, seed=22)
    k = k * 1e10  # the state itself (~1e31) still fits float32; the sums inside a chunk did not
    o1, state = nf.nala_attention(q[:, :9], k[:, :9], v[:, :9], causal=True, output_final_state=True)
    o2, final = nf.nala_attention(q[:, 9:], k[:, 9:], v[:, 9:], causal=True, initial_state=state,
                                  output_final_state=True)
    o64, final64 = nf.nala_attention_reference(q.double(), k.double(), v.double(), causal=True,
                                               output_final_state=True)
    assert rel_err(torch.cat([o1, o2], 1), o64) <= 1e-5
    assert rel_err(final.kv, final64.kv) <= 1e-5 and rel_err(final.k_sum, final64.k_sum) <= 1e-5


def test_ordinary_keys_are_not_rescaled():
    assert nf.ops.feature_maps.key_scale(torch.full((3, 4), 2.0e6), 3.0).item() == 1.0
    assert nf.ops.feature_maps.key_scale(torch.zeros(3, 4), 3.0).item() == 1.0
    assert nf.ops.feature_maps.key_scale(torch.tensor([1e12, float("nan"), float("inf")]), 3.0).item() == 2.0 ** -19


def assert_nan_pattern(causal: bool, inhibit: str, lam: float, backend: str) -> None:
    """A NaN in query i or key j gives NaN exactly where softmax attention's output has it: row i, or every
    row that attends to j (all rows, or rows >= j when causal); every other row stays finite."""
    torch.manual_seed(0)
    n, j = 9, 4
    attends = torch.arange(n) >= j if causal else torch.ones(n, dtype=torch.bool)
    for which, rows in (("q", torch.arange(n) == j), ("k", attends)):
        q, k, v = (torch.randn(1, n, 2, 16) for _ in range(3))
        {"q": q, "k": k}[which][0, j, 1, 3] = float("nan")
        o = nf.nala_attention(q, k, v, causal=causal, inhibit=inhibit, lam=lam, backend=backend)
        scores = torch.einsum("bihd,bjhd->bhij", q, k).masked_fill(causal & ~torch.ones(n, n).tril().bool(),
                                                                      -torch.inf)
        softmax = torch.einsum("bhij,bjhd->bihd", scores.softmax(-1), v)  # SDPA's math (its CPU kernel hides NaN)
        for out in (o, softmax):
            assert torch.equal(out.isnan()[0, :, 1].all(-1), rows), (which, out.isnan()[0, :, 1].any(-1))
            assert torch.isfinite(out[0, :, 0]).all() and torch.isfinite(out[0, ~rows]).all()


@pytest.mark.parametrize("backend", ["torch", "reference"])
@pytest.mark.parametrize("inhibit", MODES)
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("lam", [3.0, 2.5])
def test_nan_propagates_like_softmax_attention(causal, inhibit, lam, backend):
    assert_nan_pattern(causal, inhibit, lam, backend)


@pytest.mark.parametrize("inhibit", MODES)
def test_decode_step_propagates_nan(inhibit):
    q, k, v = (torch.randn(2, 2, 8) for _ in range(3))
    q[0, 1, 2] = k[1, 0, 5] = float("nan")
    o, state = nf.nala_decode_step(q, k, v, inhibit=inhibit)
    assert o[0, 1].isnan().all() and o[1, 0].isnan().all()
    assert torch.isfinite(o[0, 0]).all() and torch.isfinite(o[1, 1]).all() and state.k_sum[1, 0].isnan().any()


def test_n_equals_one_non_causal_is_value_weighted():
    q, k, v = make_inputs(2, 1, 3, 8, seed=19)
    o = nf.nala_attention(q, k, v)
    assert rel_err(o, nf.nala_attention_reference(q.double(), k.double(), v.double())) <= 1e-6


def test_non_contiguous_inputs():
    q, k, v = make_inputs(2, 3, 10, 8, seed=20)  # (B, H', N', D) viewed as (B, N, H, D) via transpose
    q, k, v = (t.transpose(1, 2) for t in (q, k, v))
    assert not q.is_contiguous()
    for causal in (False, True):
        o = nf.nala_attention(q, k, v, causal=causal)
        assert rel_err(o, nf.nala_attention(q.contiguous(), k.contiguous(), v.contiguous(), causal=causal)) == 0


def test_feature_maps_match_spec():
    g = torch.Generator().manual_seed(21)
    q, k = torch.randn(2, 5, 8, generator=g, dtype=torch.float64), torch.randn(2, 5, 8, generator=g,
                                                                                 dtype=torch.float64)
    phq, phk = nf.nala_feature_maps(q, k)
    n = q.norm(dim=-1, keepdim=True)
    u, p = q / n, 3.0 * (0.5 + torch.tanh(n))
    assert torch.allclose(phq, torch.cat([u.clamp_min(0) ** p, (-u).clamp_min(0) ** p], -1))
    assert torch.allclose(phk, torch.cat([k.clamp_min(0) ** 3, (-k).clamp_min(0) ** 3], -1))
    cq, ck = nf.nala_feature_maps(q, k, inhibit="cosine", alpha=20.0)
    assert (cq >= 0).all() and (ck >= 0).all()  # the cancellation-free basis
    # every q-k inner product equals the spec's literal cosine map: |u|^p |k|^3 cos(theta_q - theta_k) per dim
    theta_q = torch.pi / 4 * torch.tanh(20.0 * u)
    theta_k = torch.pi / 4 * torch.tanh(20.0 * k / k.norm(dim=-1, keepdim=True))
    spec_q = torch.cat([u.abs() ** p * torch.cos(theta_q), u.abs() ** p * torch.sin(theta_q)], -1)
    spec_k = torch.cat([k.abs() ** 3 * torch.cos(theta_k), k.abs() ** 3 * torch.sin(theta_k)], -1)
    assert torch.allclose(cq @ ck.transpose(-1, -2), spec_q @ spec_k.transpose(-1, -2), rtol=1e-9, atol=1e-15)
    # relu is the alpha -> infinity limit of cosine
    big_q, big_k = nf.nala_feature_maps(q, k, inhibit="cosine", alpha=1e12)
    assert torch.allclose(big_q, phq, atol=1e-12) and torch.allclose(big_k, phk, atol=1e-12)
    assert phq.dtype == torch.float64 and nf.nala_feature_maps(q.float(), k.float())[0].dtype == torch.float32


def test_rope_tables():
    sin, cos = nf.rope_1d(6, 8, base=100.0)
    pos = torch.arange(6.0)[:, None]
    freq = 100.0 ** (-torch.arange(0, 8, 2) / 8)
    assert torch.allclose(sin[:, 0::2], torch.sin(pos * freq)) and torch.equal(sin[:, 0::2], sin[:, 1::2])
    assert torch.allclose(cos[:, 1::2], torch.cos(pos * freq))
    s2, c2 = nf.rope_2d(3, 5, 8)
    a = 1.0 / 10000 ** torch.linspace(0, 1, 2)
    r, c = 1, 4  # token index r*W + c
    expected = torch.cat([(r * a).repeat_interleave(2), (c * a).repeat_interleave(2)])
    assert torch.allclose(s2[r * 5 + c], torch.sin(expected))
    off_sin, _ = nf.rope_1d(3, 8, offset=3)
    assert torch.allclose(off_sin, nf.rope_1d(6, 8)[0][3:])


def test_rotary_is_the_pairwise_rotation_to_the_bit():
    """rotate_columns (four contiguous passes) equals the textbook (x0 cos - x1 sin, x1 cos + x0 sin) exactly;
    apply_rotary's complex-multiply CPU form equals it to rounding (forward and gradients, float32 and float64),
    and rotate_features / rotate_halves rotate both D-halves of the 2D features alike."""
    from nalaformer.ops.reference import rotate_features
    from nalaformer.ops.rope import rotate_columns, rotate_halves, rotation_tables

    sin, cos = nf.rope_1d(7, 8, per_pair=True)
    s, c = sin[:, None], cos[:, None]
    for dtype, tol in ((torch.float32, 1e-6), (torch.float64, 1e-15)):
        x = torch.randn(7, 3, 8, dtype=dtype, requires_grad=True)
        x0, x1 = x.unflatten(-1, (-1, 2)).unbind(-1)
        sd, cd = s.to(dtype), c.to(dtype)
        textbook = torch.stack((x0 * cd - x1 * sd, x1 * cd + x0 * sd), dim=-1).flatten(-2)
        assert torch.equal(rotate_columns(x, *rotation_tables(sd, cd, 8)), textbook)
        fast = nf.apply_rotary(x, sd, cd)
        assert rel_err(fast, textbook) < tol
        g = torch.randn_like(fast)
        (grad_fast,) = torch.autograd.grad(fast, x, g)
        (grad_ref,) = torch.autograd.grad(textbook, x, g)
        assert rel_err(grad_fast, grad_ref) < tol
    features = torch.randn(7, 3, 16)
    both = rotate_features(features, (sin, cos))
    assert rel_err(rotate_halves(features, (sin, cos)), both) < 1e-6
    for half in (slice(0, 8), slice(8, 16)):
        assert torch.equal(both[..., half], rotate_columns(features[..., half], *rotation_tables(s, c, 8)))
    odd = torch.randn(7, 3, 9)[..., 1:]  # an odd storage offset cannot be viewed as complex: the column form
    assert torch.equal(nf.apply_rotary(odd, s, c), rotate_columns(odd, *rotation_tables(s, c, 8)))


def test_per_pair_rope_tables_equal_per_column():
    """Tables with one value per pair (N, D/2) give the same rotation and the same attention as (N, D)."""
    full, pair = nf.rope_1d(7, 8), nf.rope_1d(7, 8, per_pair=True)
    assert pair[0].shape == (7, 4) and torch.equal(pair[0], full[0][:, 0::2])
    full2, pair2 = nf.rope_2d(3, 5, 8), nf.rope_2d(3, 5, 8, per_pair=True)
    assert torch.allclose(pair2[1], full2[1][:, 1::2], atol=0, rtol=0)
    x = torch.randn(2, 7, 3, 8, dtype=torch.float64)
    assert torch.allclose(nf.apply_rotary(x, full[0][:, None].double(), full[1][:, None].double()),
                          nf.apply_rotary(x, pair[0][:, None].double(), pair[1][:, None].double()), atol=1e-15)
    q, k, v = make_inputs(2, 7, 3, 8, seed=4)
    for causal in (False, True):
        for backend in ("torch", "reference"):
            a = nf.nala_attention(q, k, v, rope=full, causal=causal, backend=backend)
            b = nf.nala_attention(q, k, v, rope=pair, causal=causal, backend=backend)
            assert rel_err(b, a) < 1e-6
    st = nf.nala_attention(q, k, v, causal=True, rope=full, output_final_state=True)[1]
    step = [nf.nala_decode_step(q[:, 3], k[:, 3], v[:, 3], st, rope=(t[3], t2[3]))[0]
            for t, t2 in (full, pair)]
    assert rel_err(step[1], step[0]) < 1e-6
    with pytest.raises(ValueError, match="rope: expected sin of shape"):
        nf.nala_attention(q, k, v, rope=(full[0][:, :3], full[1][:, :3]))


def test_golden_op_tensors(golden_path):
    g = load_file(str(golden_path))
    q, k, v = (g[f"op.{n}"].transpose(1, 2) for n in "qkv")
    h, w = 6, 8
    assert q.shape[1] == h * w
    sin, cos = nf.rope_2d(h, w, q.shape[-1])
    assert rel_err(sin, g["op.rope_sin"]) <= 1e-6 and rel_err(cos, g["op.rope_cos"]) <= 1e-6
    for backend in ("torch", "reference"):
        assert rel_err(nf.nala_attention(q, k, v, backend=backend).transpose(1, 2), g["op.out_norope"]) <= 1e-5
        out = nf.nala_attention(q, k, v, rope=(sin, cos), backend=backend).transpose(1, 2)
        assert rel_err(out, g["op.out_rope"]) <= 1e-5


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("causal", [False, True])
def test_fp32_inside_autocast(dtype, causal):
    """Autocast must not push the op's float32 sums back to 16 bits (fp16 k^3 v sums overflow)."""
    q, k, v = make_inputs(1, 200, 2, 16, seed=22, scale=30.0)
    ref = nf.nala_attention_reference(q.double(), k.double(), v.double(), causal=causal)
    with torch.autocast("cpu", dtype=dtype):
        o = nf.nala_attention(q, k, v, causal=causal)
        o_step, _ = nf.nala_decode_step(q[:, 0], k[:, 0], v[:, 0])
    assert o.dtype == torch.float32 and o_step.dtype == torch.float32
    assert rel_err(o, ref) <= 1e-5
