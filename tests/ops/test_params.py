"""NaLaParams: one validated object for NaLa's hyper-parameters, used by the op's keywords too."""

from __future__ import annotations

import pytest
import torch

import nalaformer as nf
from nalaformer.ops import NaLaParams


@pytest.mark.parametrize("name, value, error", [
    ("lam", float("inf"), ValueError), ("tau", float("inf"), ValueError), ("eps", float("inf"), ValueError),
    ("alpha", float("nan"), ValueError), ("norm_eps", 0.0, ValueError), ("lam", -1.0, ValueError),
    ("lam", "3", TypeError), ("tau", None, TypeError), ("eps", True, TypeError), ("inhibit", "tanh", ValueError),
])
def test_bad_values_are_refused_naming_the_argument(name, value, error):
    with pytest.raises(error, match=f"^{name}: expected"):
        NaLaParams(**{name: value})
    q = torch.randn(1, 3, 1, 4)
    with pytest.raises(error, match=f"^{name}: expected"):
        nf.nala_attention(q, q, q, **{name: value})
    with pytest.raises(error, match=f"^{name}: expected"):
        nf.nala_decode_step(q[:, 0], q[:, 0], q[:, 0], **{name: value})


def test_params_object_equals_the_keywords_and_is_frozen():
    q, k, v = (torch.randn(1, 6, 2, 8) for _ in range(3))
    p = NaLaParams(inhibit="cosine", lam=2, tau=0.25)
    assert p.lam == 2.0 and isinstance(p.lam, float)
    assert torch.equal(nf.nala_attention(q, k, v, params=p), nf.nala_attention(q, k, v, inhibit="cosine", lam=2.0,
                                                                               tau=0.25))
    with pytest.raises(AttributeError):
        p.lam = 1.0
    with pytest.raises(ValueError, match="params: give either"):
        nf.nala_attention(q, k, v, params=p, lam=2.0)
    with pytest.raises(TypeError, match="params: expected a NaLaParams"):
        nf.nala_attention(q, k, v, params={"lam": 2.0})


def test_negative_state_count_is_refused():
    q = torch.randn(2, 3, 1, 4)
    _, state = nf.nala_attention(q, q, q, causal=True, output_final_state=True)
    bad = nf.NaLaState(state.kv, state.k_sum, torch.tensor([3, -1]))
    with pytest.raises(ValueError, match=r"initial_state.count: expected token counts >= 0, got -1"):
        nf.nala_attention(q, q, q, causal=True, initial_state=bad)
    with pytest.raises(ValueError, match=r"^state.count: expected token counts >= 0"):
        nf.nala_decode_step(q[:, 0], q[:, 0], q[:, 0], bad)
