"""Every attention kind: O(N) path vs an independent float64 explicit-matrix oracle (forward, gradients),
explicit rows == O(N) output, chunked / recurrent / packed == one pass, hard inputs finite."""

from __future__ import annotations

import pytest
import torch

from nalaformer.layers.kinds import KINDS, create_core, get_kind
from tests.conftest import rel_err
from tests.layers.kinds import zoo_math

ALL = tuple(KINDS)
RECURRENT = tuple(k for k in KINDS if KINDS[k].recurrent)


def _inputs(b, n, h, d, seed, scale=1.0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    q, k = (torch.randn(b, n, h, d, generator=g, dtype=torch.float64) * scale for _ in range(2))
    v = torch.randn(b, n, h, d, generator=g, dtype=torch.float64)
    return [t.to(dtype) for t in (q, k, v)]


def grad_err(actual: torch.Tensor, expected: torch.Tensor) -> float:
    """rel_err with a floor of 1 on the scale: gradients that are ~0 in exact arithmetic (one key: the
    output does not depend on q) are compared absolutely."""
    if not torch.isfinite(actual).all():
        return float("inf")
    return ((actual.double() - expected).abs().max() / expected.abs().max().clamp_min(1.0)).item()


def _core(kind, h, d, seed=0):
    core = create_core(kind, h, d)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():  # move the learnable per-channel parameters off their init
        for p in core.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.5)
    return core


def _oracle_params(core) -> dict:
    """The core's learned values in float64, as the oracle takes them."""
    if hasattr(core, "feature_params"):
        return {k: v.double() if isinstance(v, torch.Tensor) else v for k, v in core.feature_params().items()}
    return {}


def _weights_out(core, w, v):
    """Apply explicit rows (B, H, [G,] N, N) to v (B, N, H, Dv)."""
    vt = v.transpose(1, 2)
    if w.dim() == 5:
        o = torch.einsum("bhgij,bhjge->bhige", w, vt.unflatten(-1, (w.shape[2], -1))).flatten(-2)
    else:
        o = w @ vt
    return o.transpose(1, 2)


@pytest.mark.parametrize("kind", ALL)
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("n", [1, 37, 70])
def test_fp32_forward_and_gradients_match_the_float64_oracle(kind, causal, n):
    h, d = 2, 8
    core = _core(kind, h, d, seed=n)
    q, k, v = (t.requires_grad_(True) for t in _inputs(2, n, h, d, seed=n + 1))
    q64, k64, v64 = (t.detach().double().requires_grad_(True) for t in (q, k, v))
    o = core(q, k, v, causal=causal)
    params64 = {key: (val.detach().requires_grad_(True) if isinstance(val, torch.Tensor) else val)
                for key, val in _oracle_params(core).items()}
    o64 = zoo_math.attention(kind, q64, k64, v64, causal, **params64)
    assert o.dtype == torch.float32 and o.shape == v.shape
    assert rel_err(o, o64) <= 1e-5
    grad = torch.randn_like(o64)
    o.backward(grad.float())
    o64.backward(grad)
    for name, a, e in (("q", q, q64), ("k", k, k64), ("v", v, v64)):
        assert grad_err(a.grad, e.grad) <= 1e-4, name
    learned = dict(core.named_parameters())
    if learned:  # gradients of the learned parameters through the chain rule of the float64 oracle
        raw64 = {name: p.detach().double().requires_grad_(True) for name, p in learned.items()}
        replica = create_core(kind, h, d).double()
        replica.load_state_dict({name: t for name, t in raw64.items()})
        o64b = zoo_math.attention(kind, q64.detach(), k64.detach(), v64.detach(), causal,
                                  **_oracle_params(replica))
        o64b.backward(grad)
        for name, p in replica.named_parameters():
            assert grad_err(learned[name].grad, p.grad) <= 1e-4, name


@pytest.mark.parametrize("kind", ALL)
@pytest.mark.parametrize("causal", [False, True])
def test_explicit_rows_give_the_o_n_output(kind, causal):
    core = _core(kind, 2, 8).double()
    q, k, v = _inputs(1, 23, 2, 8, seed=5, dtype=torch.float64)
    w = core.weights(q, k, causal=causal)
    expected_shape = (1, 2, 2, 23, 23) if kind == "polarity" else (1, 2, 23, 23)
    assert w.shape == expected_shape
    assert rel_err(core(q, k, v, causal=causal), _weights_out(core, w, v)) <= 1e-12
    sums = w.sum(-1)  # 1 for softmax; den / (den + eps) for the linear kinds (a weak first causal row: less)
    assert (sums <= 1 + 1e-12).all() and (sums >= 0).all() and sums.median() > 1 - 1e-4


@pytest.mark.parametrize("kind", ALL)
def test_zero_and_huge_norm_rows_are_finite_and_exact(kind):
    core = _core(kind, 2, 8)
    q, k, v = _inputs(1, 9, 2, 8, seed=2)
    q[0, 0], k[0, 1] = 0.0, 0.0  # zero query and zero key
    q[0, 2] *= 1e4
    k[0, 3] *= 30.0
    for causal in (False, True):
        o = core(q, k, v, causal=causal)
        assert torch.isfinite(o).all()
        o64 = zoo_math.attention(kind, q.double(), k.double(), v.double(), causal, **_oracle_params(core))
        assert rel_err(o, o64) <= 1e-5
        (g,) = torch.autograd.grad(core(q.requires_grad_(True), k, v, causal=causal).sum(), q)
        assert torch.isfinite(g).all()
        q = q.detach()


@pytest.mark.parametrize("kind", RECURRENT)
def test_chunked_state_and_decoding_equal_one_pass(kind):
    core = _core(kind, 2, 8).double()
    q, k, v = _inputs(2, 29, 2, 8, seed=11, dtype=torch.float64)
    full, state = core(q, k, v, causal=True, output_final_state=True)
    first, mid = core(q[:, :10], k[:, :10], v[:, :10], causal=True, output_final_state=True)
    second, end = core(q[:, 10:], k[:, 10:], v[:, 10:], causal=True, initial_state=mid, output_final_state=True)
    assert rel_err(torch.cat([first, second], 1), full) <= 1e-12
    for a, b in zip(end, state):
        assert torch.equal(a, b) if not a.is_floating_point() else rel_err(a, b) <= 1e-12
    st, steps = None, []
    for t in range(q.shape[1]):
        o, st = core.step(q[:, t], k[:, t], v[:, t], st)
        steps.append(o)
    assert rel_err(torch.stack(steps, 1), full) <= 1e-12
    assert rel_err(st.kv, state.kv) <= 1e-12 and torch.equal(st.count, state.count)


@pytest.mark.parametrize("kind", [k for k in RECURRENT if not k.startswith("nala")])
def test_packed_sequences_equal_separate_runs(kind):
    core = _core(kind, 2, 8).double()
    q, k, v = _inputs(1, 20, 2, 8, seed=4, dtype=torch.float64)
    cu = torch.tensor([0, 7, 7, 20])
    for causal in (False, True):
        packed = core(q, k, v, causal=causal, cu_seqlens=cu)
        parts = [core(q[:, s:e], k[:, s:e], v[:, s:e], causal=causal) for s, e in ((0, 7), (7, 20))]
        assert rel_err(packed, torch.cat(parts, 1)) <= 1e-12


def test_chunk_size_does_not_change_the_causal_result():
    from nalaformer.ops.linear_attn import linear_attention

    g = torch.Generator().manual_seed(0)
    phq, phk = torch.rand(1, 45, 2, 2, 6, generator=g, dtype=torch.float64), torch.rand(1, 45, 2, 6, generator=g,
                                                                                        dtype=torch.float64)
    v = torch.randn(1, 45, 2, 8, generator=g, dtype=torch.float64)
    ref = linear_attention(phq, phk, v, causal=True, chunk_size=45)
    for chunk in (1, 8, 64):
        assert rel_err(linear_attention(phq, phk, v, causal=True, chunk_size=chunk), ref) <= 1e-12


def test_bf16_inputs_compute_in_float32():
    core = _core("polarity", 2, 8)
    q, k, v = _inputs(1, 16, 2, 8, seed=1)
    o = core(q.bfloat16(), k.bfloat16(), v.bfloat16())
    o64 = zoo_math.attention("polarity", q.bfloat16().double(), k.bfloat16().double(), v.bfloat16().double(), False,
                             **_oracle_params(core))
    assert o.dtype == torch.bfloat16 and rel_err(o, o64) <= 1e-2


def test_auto_backend_takes_fla_only_for_causal_half_precision_cuda_inputs(monkeypatch):
    """The choice itself, on CPU: with fla-core present, "auto" takes it only where its TF32 accuracy is inside the
    inputs' tolerance (causal bf16/fp16 CUDA, unpacked); model-wide NaLa backends mean the PyTorch path."""
    from nalaformer.ops.linear_attn import core as lin

    class FakeCuda:  # resolve_backend reads only dtype and is_cuda
        def __init__(self, dtype, is_cuda=True):
            self.dtype, self.is_cuda = dtype, is_cuda

    monkeypatch.setattr(lin, "_fla_numerator", lambda: object())
    half = FakeCuda(torch.bfloat16)
    assert lin.resolve_backend("auto", half, causal=True) == "fla"
    assert lin.resolve_backend("auto", FakeCuda(torch.float16), causal=True) == "fla"
    assert lin.resolve_backend("auto", half, causal=False) == "torch"
    assert lin.resolve_backend("auto", half, causal=True, cu_seqlens=torch.tensor([0, 4])) == "torch"
    assert lin.resolve_backend("auto", FakeCuda(torch.float32), causal=True) == "torch"
    assert lin.resolve_backend("auto", FakeCuda(torch.bfloat16, is_cuda=False), causal=True) == "torch"
    assert lin.resolve_backend("triton", half, causal=True) == "torch"
    assert lin.resolve_backend("fla", FakeCuda(torch.float32), causal=True) == "fla"
    monkeypatch.setattr(lin, "_fla_numerator", lambda: None)
    assert lin.resolve_backend("auto", half, causal=True) == "torch"


def test_fla_backend_on_cpu_is_refused_naming_the_argument():
    phq = torch.rand(1, 4, 1, 1, 8)
    with pytest.raises(ValueError, match="backend: 'fla' takes causal CUDA"):
        from nalaformer.ops.linear_attn import linear_attention
        linear_attention(phq, phq[:, :, :, 0], torch.rand(1, 4, 1, 8), causal=True, backend="fla")


def test_unknown_kind_is_refused_naming_the_choices():
    with pytest.raises(ValueError, match="kind: expected one of .*'softmax'.*got 'linear'"):
        get_kind("linear")
    with pytest.raises(ValueError, match="head_dim"):
        create_core("polarity", 2, 7)
    with pytest.raises(ValueError, match="power"):
        create_core("focused", 2, 8, power=float("inf"))


@pytest.mark.parametrize("kind", ["relu_linear", "polarity"])
@pytest.mark.parametrize("causal", [False, True])
def test_rotary_numerator_matches_the_oracle(kind, causal):
    """Linear kinds take NaLa's position encoding: rotary angles on the numerator's features only."""
    from nalaformer import rope_1d

    core = _core(kind, 2, 8).double()
    q, k, v = _inputs(2, 23, 2, 8, seed=5, dtype=torch.float64)
    sin, cos = rope_1d(23, 8, per_pair=True, dtype=torch.float64)
    out = core(q, k, v, causal=causal, rope=(sin, cos))
    oracle = getattr(zoo_math, f"{kind}_rotary")
    params = _oracle_params(core)
    for b in range(2):
        for h in range(2):
            hp = {n: t[h] if isinstance(t, torch.Tensor) else t for n, t in params.items()}
            want = oracle(q[b, :, h], k[b, :, h], v[b, :, h], causal, sin, cos, **hp)
            assert rel_err(out[b, :, h], want) <= 1e-12
    assert rel_err(out, core(q, k, v, causal=causal)) > 1e-3  # the angles do change the result


@pytest.mark.parametrize("kind", [k for k in RECURRENT if k not in ("nala", "nala_cosine")])
def test_rotary_state_and_decoding_equal_one_pass(kind):
    from nalaformer import rope_1d

    core = _core(kind, 2, 8).double()
    q, k, v = _inputs(2, 21, 2, 8, seed=12, dtype=torch.float64)
    sin, cos = rope_1d(21, 8, per_pair=True, dtype=torch.float64)
    full, state = core(q, k, v, causal=True, rope=(sin, cos), output_final_state=True)
    _, mid = core(q[:, :9], k[:, :9], v[:, :9], causal=True, rope=(sin[:9], cos[:9]), output_final_state=True)
    second = core(q[:, 9:], k[:, 9:], v[:, 9:], causal=True, rope=(sin[9:], cos[9:]), initial_state=mid)
    assert rel_err(second, full[:, 9:]) <= 1e-12
    st, steps = None, []
    for t in range(21):
        o, st = core.step(q[:, t], k[:, t], v[:, t], st, rope=(sin[t], cos[t]))
        steps.append(o)
    assert rel_err(torch.stack(steps, 1), full) <= 1e-12 and rel_err(st.kv, state.kv) <= 1e-12
    restart = tuple(torch.cat([t[:9], t[:12]]) for t in (sin, cos))  # each packed sequence from position 0
    packed = core(q[:1], k[:1], v[:1], causal=True, rope=restart, cu_seqlens=torch.tensor([0, 9, 21]))
    parts = [core(q[:1, s:e], k[:1, s:e], v[:1, s:e], causal=True, rope=(sin[:e - s], cos[:e - s]))
             for s, e in ((0, 9), (9, 21))]
    assert rel_err(packed, torch.cat(parts, 1)) <= 1e-12
