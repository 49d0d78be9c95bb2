"""The linear kinds' causal path on fla-core's kernel (CUDA, fla installed) == the PyTorch path."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from nalaformer.layers.kinds import create_core
from tests.conftest import rel_err

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"),
    pytest.mark.skipif(importlib.util.find_spec("fla") is None, reason="fla-core is not installed"),
]


def _run(kind, dtype, rope: bool):
    """fla path on (dtype) inputs with a carried state (and rotary tables) against the float64 PyTorch path."""
    from nalaformer import rope_1d

    torch.manual_seed(0)
    core = create_core(kind, 4, 64).cuda()
    q, k, v = (torch.randn(2, 300, 4, 64, device="cuda") for _ in range(3))
    sin, cos = rope_1d(300, 64, per_pair=True, device="cuda") if rope else (None, None)
    head = dict(rope=(sin[:37], cos[:37])) if rope else {}
    tail = (lambda dt: dict(rope=(sin[37:].to(dt), cos[37:].to(dt)))) if rope else (lambda dt: {})
    _, state = core(q[:, :37], k[:, :37], v[:, :37], causal=True, output_final_state=True, backend="torch", **head)
    args = (q[:, 37:], k[:, 37:], v[:, 37:])
    fla_o, fla_state = core(*(t.to(dtype) for t in args), causal=True, initial_state=state,
                            output_final_state=True, backend="fla", **tail(torch.float32))
    ref_o, ref_state = core(*(t.double() for t in args), causal=True, output_final_state=True, backend="torch",
                            initial_state=type(state)(state.kv.double(), state.k_sum.double(), state.count),
                            **tail(torch.float64))
    assert torch.isfinite(fla_o).all() and torch.equal(fla_state.count, ref_state.count)
    return rel_err(fla_o, ref_o), rel_err(fla_state.kv, ref_state.kv)


@pytest.mark.parametrize("kind", ["relu_linear", "elu_linear", "focused", "polarity"])
@pytest.mark.parametrize("rope", [False, True])
def test_fla_path_bf16_matches_float64(kind, rope):
    out_err, state_err = _run(kind, torch.bfloat16, rope)
    assert out_err <= 1e-2 and state_err <= 1e-2


@pytest.mark.parametrize("kind", ["relu_linear", "polarity"])
def test_fla_path_fp32_is_tf32_accurate(kind):
    """fla's kernels round fp32 operands to TF32 in their dot products: 0.8-1.5e-3 relative error measured on an
    H200 (2026-12-02), short of our fp32 standard (1e-5), so fp32 calls never take this path by default."""
    out_err, state_err = _run(kind, torch.float32, False)
    assert out_err <= 3e-3 and state_err <= 3e-3


@pytest.mark.parametrize("kind", ["relu_linear", "focused"])
def test_auto_backend_runs_fla_for_bf16_inputs(kind):
    """backend="auto" on causal bf16 CUDA inputs is the fla path (identical output), within 1e-2 of float64."""
    torch.manual_seed(1)
    core = create_core(kind, 4, 64).cuda()
    q, k, v = (torch.randn(2, 257, 4, 64, device="cuda") for _ in range(3))
    half = [t.bfloat16() for t in (q, k, v)]
    auto = core(*half, causal=True)
    assert torch.equal(auto, core(*half, causal=True, backend="fla"))
    ref = core(*(t.double() for t in half), causal=True, backend="torch")
    assert torch.isfinite(auto).all() and rel_err(auto, ref) <= 1e-2
