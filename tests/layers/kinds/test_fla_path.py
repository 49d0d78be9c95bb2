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


@pytest.mark.parametrize("kind", ["relu_linear", "elu_linear", "focused", "polarity"])
def test_fla_causal_path_matches_torch(kind):
    torch.manual_seed(0)
    core = create_core(kind, 4, 64).cuda()
    q, k, v = (torch.randn(2, 300, 4, 64, device="cuda") for _ in range(3))
    _, state = core(q[:, :37], k[:, :37], v[:, :37], causal=True, output_final_state=True, backend="torch")
    args = (q[:, 37:], k[:, 37:], v[:, 37:])
    fla_o, fla_state = core(*args, causal=True, initial_state=state, output_final_state=True, backend="fla")
    ref_o, ref_state = core(*(t.double() for t in args), causal=True, output_final_state=True, backend="torch",
                            initial_state=type(state)(state.kv.double(), state.k_sum.double(), state.count))
    assert rel_err(fla_o, ref_o) <= 1e-4  # fla's kernels accumulate in fp32 with TF32 dots allowed
    assert rel_err(fla_state.kv, ref_state.kv) <= 1e-4 and torch.equal(fla_state.count, ref_state.count)
