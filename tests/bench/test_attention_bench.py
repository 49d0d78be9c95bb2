"""The attention benchmark's report (the timing itself needs a GPU: docs/benchmarks.md)."""

from __future__ import annotations

import pytest
import torch

from nalaformer.bench import attention as bench


def _report():
    env = {"gpu": "GPU", "torch": "2", "triton": "3", "cuda": "13", "dtype": "bf16", "heads": 8, "dim": 64,
           "tokens": 65536, "date": "today"}
    target = {"mode": "noncausal", "B": 16, "H": 8, "N": 4096, "D": 64, "target_ms": 0.5, "fwd_ms": 0.25,
              "fwdbwd_ms": 1.2, "graph_fwd_ms": 0.23, "graph_fwdbwd_ms": 0.8, "host_fwd_ms": 0.34,
              "host_fwdbwd_ms": 1.2, "first_call_s": 13.0, "errors": {"o": 3e-3, "dq": 4e-3, "dk": 4e-3, "dv": 4e-3}}
    point = {"mode": "noncausal", "N": 4096, "B": 16, "H": 8, "D": 64, "triton_errors": {"o": 3e-3, "dq": 4e-3},
             "methods": {"triton": {"fwd_ms": 0.25, "fwdbwd_ms": 1.0, "peak_mem_mb": 266},
                         "sdpa_cudnn": {"fwd_ms": 1.1, "fwdbwd_ms": 4.4, "peak_mem_mb": 388},
                         "compile": {"error": "boom"}}}
    decode = [{"B": 1, "H": 16, "D": 64, "triton_graph_ms": 0.01, "triton_host_ms": 0.09, "torch_graph_ms": 0.05,
               "torch_host_ms": 0.6, "error_o": 1e-3, "error_state": 1e-7}, {"B": 16, "error": "RuntimeError: x"}]
    return {"env": env, "targets": [target], "decode": decode, "results": [point], "notes": ["a note"]}


def test_table_has_targets_gpu_time_host_time_and_ratios():
    text = bench.render_table(_report())
    assert "| noncausal | B16 H8 N4096 D64 | 0.250 | 1.200 | 0.230 / 0.800 | 0.340 / 1.200 | 0.5 | 13.0 |" in text
    assert "1.100 / 4.400 (4.40x) / 388" in text  # ratio to Triton's fwd+bwd
    assert "failed" in text and "note: a note" in text
    assert "| B1 H16 D64 | 0.010 / 0.090 | 0.050 / 0.600 | 1.0e-03 / 1.0e-07 |" in text
    assert "| B16 | failed: RuntimeError: x" in text


def test_without_cuda_it_says_so(tmp_path, capsys):
    if torch.cuda.is_available():
        pytest.skip("a GPU is present: the real benchmark would run")
    assert bench.main(["--out", str(tmp_path)]) == 1
    assert "no CUDA device" in capsys.readouterr().err
