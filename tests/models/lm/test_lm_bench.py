"""The LM benchmark's --quick smoke run on CPU (the real run is for a GPU)."""

from __future__ import annotations

import argparse
import json

from nalaformer.bench import lm as bench_lm


def test_quick_benchmark_runs_and_writes_json(tmp_path, capsys):
    parser = argparse.ArgumentParser()
    bench_lm.add_arguments(parser)
    out = tmp_path / "bench.json"
    assert bench_lm.run(parser.parse_args(["--quick", "--models", "nala,llama,fla", "--json", str(out)])) == 0
    results = json.loads(out.read_text())
    nala, llama = results["models"]["nala"], results["models"]["llama"]
    assert abs(nala["params"] / llama["params"] - 1) < 0.05  # same-size baseline
    for entry in (nala, llama):
        assert all(r["tokens_per_s"] > 0 for r in entry["train"].values())
        assert all(r["tokens_per_s"] > 0 for r in entry["decode"].values())
        # the static (CUDA-graph on GPU, eager here) decode steps ran for both model kinds
        assert all(r["graph_tokens_per_s"] > 0 for r in entry["decode"].values()), entry["decode"]
    small, large = (nala["decode"][c]["cache_mib"] for c in sorted(nala["decode"], key=int))
    assert small == large  # NaLa's decode state does not grow with the context
    assert "nala/llama" in capsys.readouterr().out


def test_quick_benchmark_with_compiled_training(tmp_path):
    parser = argparse.ArgumentParser()
    bench_lm.add_arguments(parser)
    out = tmp_path / "bench.json"
    assert bench_lm.run(parser.parse_args(["--quick", "--models", "nala", "--compile", "--json", str(out)])) == 0
    train = json.loads(out.read_text())["models"]["nala"]["train"]
    assert train and all("error" not in r and r["tokens_per_s"] > 0 for r in train.values())


def test_compile_flag_selects_models():
    parser = argparse.ArgumentParser()
    bench_lm.add_arguments(parser)
    assert parser.parse_args([]).compile == ""
    everything = parser.parse_args(["--compile"]).compile
    assert bench_lm._compiled(everything, "llama") and bench_lm._compiled(everything, "nala")
    only_nala = parser.parse_args(["--compile", "nala"]).compile
    assert bench_lm._compiled(only_nala, "nala") and not bench_lm._compiled(only_nala, "llama")
    assert not bench_lm._compiled("", "nala")


def test_static_llama_decode_with_a_chunked_prefill():
    import torch

    models = bench_lm.build_models(["llama"], "nala-tiny")
    llama = models["llama"].eval()
    result = bench_lm.bench_graph_decoding(llama, "llama", 40, 2, 3, torch.device("cpu"), 1, prefill_chunk=16)
    assert result.get("graph_tokens_per_s", 0) > 0, result
