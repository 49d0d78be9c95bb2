"""Bad input to nala_attention / nala_decode_step: clear errors naming the argument."""

from __future__ import annotations

import pytest
import torch

import nalaformer as nf


def qkv(b=1, n=6, h=2, d=8, dv=8, dtype=torch.float32):
    return torch.randn(b, n, h, d, dtype=dtype), torch.randn(b, n, h, d, dtype=dtype), torch.randn(b, n, h, dv,
                                                                                                   dtype=dtype)


def expect(exc, match, *args, **kwargs):
    with pytest.raises(exc, match=match):
        nf.nala_attention(*args, **kwargs)


def test_wrong_rank():
    q, k, v = qkv()
    expect(ValueError, r"q: expected a 4-D tensor \(B, N, H, D\)", q[0], k, v)
    expect(ValueError, r"v: expected a 4-D tensor", q, k, v[0])


def test_mismatched_shapes():
    q, k, v = qkv()
    expect(ValueError, r"k: expected shape \(1, 6, 2, 8\)", q, k[:, :5], v)
    expect(ValueError, r"k: expected shape", q, torch.randn(1, 6, 2, 4), v)
    expect(ValueError, r"v: expected shape \(1, 6, 2, Dv\)", q, k, v[:, :, :1])
    expect(ValueError, r"v: expected shape", q, k, torch.randn(2, 6, 2, 8))


def test_types_dtypes_devices():
    q, k, v = qkv()
    expect(TypeError, r"q: expected a torch.Tensor", q.numpy(), k, v)
    expect(TypeError, r"k: expected dtype torch.float32 like q, got torch.float64", q, k.double(), v)
    expect(TypeError, r"v: expected a floating-point dtype", q, k, v.long())
    expect(ValueError, r"k: expected device cpu like q, got meta", q, k.to("meta"), v)


def test_hyperparameters_and_backend():
    q, k, v = qkv()
    expect(ValueError, r"inhibit: expected one of \('relu', 'cosine'\), got 'softplus'", q, k, v, inhibit="softplus")
    expect(ValueError, r"lam: expected a positive power", q, k, v, lam=0.0)
    expect(ValueError, r"eps: expected a positive", q, k, v, eps=0.0)
    expect(ValueError, r"backend: expected one of", q, k, v, backend="cuda")
    expect(TypeError, r"causal: expected a bool", q, k, v, causal="yes")


def test_rope_errors():
    q, k, v = qkv(d=7)
    sin, cos = torch.zeros(6, 7), torch.zeros(6, 7)
    expect(ValueError, r"rope: rotary features need an even head dim D, got D=7", q, k, v, rope=(sin, cos))
    q, k, v = qkv()
    sin, cos = nf.rope_1d(5, 8)
    expect(ValueError, r"rope: expected sin of shape \(6, 8\)", q, k, v, rope=(sin, cos))
    expect(TypeError, r"rope: expected a pair \(sin, cos\)", q, k, v, rope=sin)
    with pytest.raises(ValueError, match="head_dim: expected a positive multiple of 4"):
        nf.rope_2d(2, 3, 6)
    with pytest.raises(ValueError, match="head_dim: expected a positive even number"):
        nf.rope_1d(4, 5)


def test_cu_seqlens_errors():
    q, k, v = qkv(n=10)
    expect(ValueError, r"cu_seqlens: expected non-decreasing", q, k, v, cu_seqlens=torch.tensor([0, 6, 4, 10]))
    expect(ValueError, r"cu_seqlens: expected offsets from 0 to N = 10, got 0 .. 9", q, k, v,
           cu_seqlens=torch.tensor([0, 4, 9]))
    expect(ValueError, r"cu_seqlens: expected offsets from 0", q, k, v, cu_seqlens=torch.tensor([1, 4, 10]))
    expect(TypeError, r"cu_seqlens: expected dtype int32 or int64", q, k, v, cu_seqlens=torch.tensor([0., 10.]))
    q2, k2, v2 = qkv(b=2, n=10)
    expect(ValueError, r"cu_seqlens: packed sequences need batch size B = 1, got B = 2", q2, k2, v2,
           cu_seqlens=torch.tensor([0, 10]))
    expect(ValueError, r"cu_seqlens: expected a 1-D tensor", q, k, v, cu_seqlens=torch.tensor([[0, 10]]))


def test_max_seqlen_errors():
    q, k, v = qkv(n=10)
    cu = torch.tensor([0, 4, 10])
    expect(ValueError, r"max_seqlen: a hint for packed sequences, given without cu_seqlens", q, k, v, max_seqlen=4)
    expect(ValueError, r"max_seqlen: expected an int in \[0, N = 10\]", q, k, v, cu_seqlens=cu, max_seqlen=11)
    expect(ValueError, r"max_seqlen: expected an int", q, k, v, cu_seqlens=cu, max_seqlen=6.0)
    expect(ValueError, r"max_seqlen: expected an int", q, k, v, cu_seqlens=cu, max_seqlen=True)
    # the offsets are checked with the hint too (on the host: no device sync), on every backend
    for backend in ("torch", "reference", "triton"):
        for bad, match in (([0, 6, 4, 10], "non-decreasing"), ([0, 4, 12], "from 0 to N = 10"),
                           ([0, 8, 10], "max_seqlen: 6 is shorter than the longest sequence")):
            expect(ValueError, match, q, k, v, cu_seqlens=torch.tensor(bad), max_seqlen=6, backend=backend)
    # the PyTorch paths read the offsets anyway: a hint changes nothing there
    torch.testing.assert_close(nf.nala_attention(q, k, v, cu_seqlens=cu, max_seqlen=6),
                               nf.nala_attention(q, k, v, cu_seqlens=cu))


def test_state_errors():
    q, k, v = qkv()
    good = nf.NaLaState.zeros(1, 2, 8, 8)
    expect(ValueError, r"initial_state.kv: expected shape \(1, 2, 16, 8\)", q, k, v, causal=True,
           initial_state=nf.NaLaState.zeros(1, 2, 4, 8))
    expect(ValueError, r"initial_state.count: expected shape \(1,\)", q, k, v, causal=True,
           initial_state=(good.kv, good.k_sum, torch.zeros(3, dtype=torch.long)))
    expect(TypeError, r"initial_state.count: expected an integer tensor", q, k, v, causal=True,
           initial_state=(good.kv, good.k_sum, torch.zeros(1)))
    expect(ValueError, r"a recurrent state exists only with causal=True", q, k, v, initial_state=good)
    expect(ValueError, r"a recurrent state exists only with causal=True", q, k, v, output_final_state=True)
    expect(TypeError, r"initial_state: expected a NaLaState", q, k, v, causal=True, initial_state=good.kv)


def test_decode_step_errors():
    q, k, v = (t[:, 0] for t in qkv(b=2))
    with pytest.raises(ValueError, match=r"q: expected a 3-D tensor \(B, H, D\)"):
        nf.nala_decode_step(q[None], k, v)
    with pytest.raises(ValueError, match=r"state.kv: expected shape \(2, 2, 16, 8\)"):
        nf.nala_decode_step(q, k, v, nf.NaLaState.zeros(1, 2, 8, 8))
    with pytest.raises(ValueError, match=r"rope: expected sin of shape \(8,\) or \(2, 8\)"):
        nf.nala_decode_step(q, k, v, rope=nf.rope_1d(3, 8))


def test_import_is_lazy():
    import subprocess
    import sys

    code = ("import sys, nalaformer; heavy = [m for m in ('triton', 'timm', 'transformers') if m in sys.modules]; "
            "print(heavy); sys.exit(1 if heavy else 0)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
