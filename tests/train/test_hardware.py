"""The run header's CPU features and the speed probe behind its time estimate."""

from __future__ import annotations

import pytest
import torch

from nalaformer.train.core.hardware import cpu_features, cpu_summary, estimate_run_seconds, probe_step_seconds


def test_cpu_features_are_torchs_view():
    f = cpu_features()
    assert f["capability"] == torch.backends.cpu.get_cpu_capability()
    assert f["threads"] == torch.get_num_threads() and f["name"]
    assert (" 1 thread (" in cpu_summary(dict(f, threads=1))) and (" 2 threads (" in cpu_summary(dict(f, threads=2)))
    line = cpu_summary(f)
    assert line.startswith(f"cpu: {f['name']}") and f"torch kernels {f['capability']}" in line
    for name in ("AVX2", "AVX-512", "AVX512-BF16", "AMX"):
        assert f" {name} yes" in line or f" {name} no" in line


def test_summary_names_an_instruction_set_override():
    f = dict(cpu_features(), capability="AVX2", avx512=True, overrides={"ATEN_CPU_CAPABILITY": "avx2"})
    line = cpu_summary(f)
    assert "torch kernels AVX2" in line and "AVX-512 yes" in line and "ATEN_CPU_CAPABILITY=avx2" in line


def test_probe_times_steps_and_leaves_model_and_rng_alone():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.Dropout(0.5),
                                torch.nn.Flatten(), torch.nn.Linear(4 * 6 * 6, 3))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    batch = torch.randn(5, 1, 8, 8)
    rng = torch.get_rng_state()
    train_s, eval_s = probe_step_seconds(model, batch, torch.nn.CrossEntropyLoss(), 3)
    assert 0 < train_s < 60 and 0 < eval_s < 60
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # BN statistics too
    assert all(p.grad is None for p in model.parameters()) and model.training
    assert torch.equal(torch.get_rng_state(), rng)
    with pytest.raises(ValueError, match="steps"):
        probe_step_seconds(model, torch.randn(2, 1, 8, 8), torch.nn.CrossEntropyLoss(), 3, steps=0)


def test_estimate_adds_training_and_eval_per_epoch():
    assert estimate_run_seconds(500.0, 2000.0, 60000, 10000, 2) == pytest.approx(2 * (120 + 5))
    with pytest.raises(ValueError, match="train_img_per_s"):
        estimate_run_seconds(0.0, 1.0, 1, 1, 1)
