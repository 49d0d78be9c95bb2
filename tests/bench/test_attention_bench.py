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


def test_shapes_presets_and_explicit_rows():
    rows = bench.parse_shapes("vision,causal:2:300:4:32")
    assert rows[0] == ("noncausal", 128, 3136, 1, 64) and rows[-1] == ("causal", 2, 300, 4, 32)
    assert len(bench.parse_shapes("kernels")) == len(bench.SHAPE_PRESETS["kernels"])
    for bad in ("sideways:1:2:3:4", "causal:1:2:3", "causal:0:2:3:4", "huge"):
        with pytest.raises(ValueError, match="--shapes"):
            bench.parse_shapes(bad)


def test_byte_floor_counts_the_passes_the_op_must_make():
    floor = bench.byte_floor(128, 3136, 1, 64, 2)  # one (B, N, H, D) bf16 tensor: 51.4 MB
    one = 128 * 3136 * 64 * 2
    assert floor == {"fwd_bytes": 4 * one, "fwdbwd_bytes": 11 * one}


def test_shape_rows_set_gpu_time_against_the_floor():
    row = {"mode": "noncausal", "B": 128, "N": 3136, "H": 1, "D": 64, "fwd_floor_ms": 0.05, "fwdbwd_floor_ms": 0.1,
           "methods": {"triton": {"fwd_ms": 0.4, "fwdbwd_ms": 1.2, "graph_fwd_ms": 0.2, "graph_fwdbwd_ms": 0.65,
                                  "host_fwd_ms": 0.3, "host_fwdbwd_ms": 0.9, "errors": {"o": 3e-3, "dq": 4e-3}},
                       "sdpa_cudnn": {"fwd_ms": 1.0, "fwdbwd_ms": 2.4}, "sdpa_flash": {"error": "no"}}}
    text = bench.render_shape_rows({"shapes": [row]})
    assert ("| noncausal B128 H1 N3136 D64 | 0.050 / 0.100 | 0.200 / 0.650 (4.0x / 6.5x) | 0.300 / 0.900 | 1.200 |"
            in text)
    assert "sdpa_cudnn 2.400 (2.00x); sdpa_flash failed" in text and "3.0e-03 / 4.0e-03" in text


def test_shapes_run_writes_a_row_per_shape(tmp_path, monkeypatch):
    """run_shapes' wiring (the timing itself needs a GPU): bandwidth once, one row per shape, files written."""
    monkeypatch.setattr(bench, "copy_bandwidth", lambda: 4.0e12)
    seen = []

    class FakeRunner:
        notes = []

        def time_shape(self, mode, b, n, h, d, methods, bandwidth):
            seen.append((mode, b, n, h, d, tuple(methods), bandwidth))
            floor = bench.byte_floor(b, n, h, d, 2)
            return {"mode": mode, "B": b, "N": n, "H": h, "D": d, "methods": {},
                    "fwd_floor_ms": floor["fwd_bytes"] / bandwidth * 1e3,
                    "fwdbwd_floor_ms": floor["fwdbwd_bytes"] / bandwidth * 1e3}

    env = {}
    assert bench.run_shapes(FakeRunner(), env, bench.parse_shapes("vision"), ["triton"], str(tmp_path)) == 0
    assert env["copy_bandwidth_gbs"] == 4000 and len(seen) == 4 and seen[0][-1] == 4.0e12
    assert (tmp_path / "attention_shapes.json").exists()
    assert "noncausal B8 H1 N50176 D64" in (tmp_path / "attention_shapes.md").read_text()
