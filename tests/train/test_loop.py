"""fit_steps: trains through the core's precision and gradient path; refuses bad input."""

from __future__ import annotations

import itertools

import pytest
import torch

from nalaformer.train.core.loop import fit_steps


def _regression_batches(seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    w = torch.tensor([[2.0], [-1.0]])
    while True:
        x = torch.randn(32, 2, generator=generator)
        yield x, x @ w


def test_fit_steps_reduces_the_loss():
    torch.manual_seed(0)
    model = torch.nn.Linear(2, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    def mse(batch):
        return torch.nn.functional.mse_loss(model(batch[0]), batch[1])

    losses = fit_steps(model, optimizer, _regression_batches(), mse, 50, device=torch.device("cpu"), clip=10.0)
    assert len(losses) == 50 and losses[-1] < 0.01 * losses[0]


def test_fit_steps_bad_steps_and_non_finite_loss():
    model = torch.nn.Linear(2, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(ValueError, match="steps"):
        fit_steps(model, optimizer, _regression_batches(), lambda b: model(b[0]).sum(), 0, device=torch.device("cpu"))
    with pytest.raises(FloatingPointError, match="step 0"):
        fit_steps(model, optimizer, itertools.repeat(None), lambda b: model.weight.sum() * float("nan"), 3,
                  device=torch.device("cpu"))
