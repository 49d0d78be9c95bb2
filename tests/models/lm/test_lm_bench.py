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
    assert all(r["compiled"] and r["warmup_s"] > 0 for r in train.values())  # warm-up (compilation) reported apart


def test_a_model_that_does_not_compile_is_measured_eagerly_with_the_reason(monkeypatch):
    import torch

    from nalaformer.models.lm import NaLaConfig, NaLaForCausalLM

    def no_compile(model):
        def fail(*args, **kwargs):
            raise torch._dynamo.exc.Unsupported("fla's kernel is opaque to dynamo")
        return fail

    monkeypatch.setattr(torch, "compile", no_compile)
    model = NaLaForCausalLM(NaLaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                       num_attention_heads=2))
    result = bench_lm.bench_training(model, 16, 32, torch.device("cpu"), torch.float32, iters=1, warmup=1,
                                     compile=True)
    assert not result["compiled"] and "opaque" in result["compile_error"] and result["tokens_per_s"] > 0


def test_compile_flag_selects_models():
    parser = argparse.ArgumentParser()
    bench_lm.add_arguments(parser)
    assert parser.parse_args([]).compile == ""
    everything = parser.parse_args(["--compile"]).compile
    assert bench_lm._compiled(everything, "llama") and bench_lm._compiled(everything, "nala")
    only_nala = parser.parse_args(["--compile", "nala"]).compile
    assert bench_lm._compiled(only_nala, "nala") and not bench_lm._compiled(only_nala, "llama")
    assert not bench_lm._compiled("", "nala")


def test_static_llama_decoder_equals_dynamic_cache_decoding():
    import torch

    llama = bench_lm.build_models(["llama"], "nala-tiny")["llama"].eval()
    prompt = torch.randint(0, llama.config.vocab_size, (2, 40), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        key = bench_lm._cache_kwarg(llama)  # past_key_values (transformers 5.17) or cache (later 5.x)
        out = llama(prompt, use_cache=True)
        cache, token = bench_lm._output_cache(out), out.logits[:, -1:].argmax(-1)
        # a chunked prefill (16 + 16 + 8) into 48 slots, then static steps at positions 40, 41, 42
        replay, static_token = bench_lm.llama_static_decoder(llama, prompt, 48, prefill_chunk=16, use_graph=False)
        assert torch.equal(static_token, token)
        for _ in range(3):
            want = llama(token, use_cache=True, **{key: cache})
            cache = bench_lm._output_cache(want)
            got = replay()
            torch.testing.assert_close(got, want.logits[:, -1], rtol=1e-5, atol=1e-5)
            token = want.logits[:, -1:].argmax(-1)
            static_token.copy_(token)
    result = bench_lm.bench_graph_decoding(llama, "llama", 40, 2, 3, torch.device("cpu"), 1, prefill_chunk=16)
    assert result.get("graph_tokens_per_s", 0) > 0, result


def test_graph_decoding_reports_models_without_a_static_step():
    import torch

    from tests.models.lm.helpers import tiny_model

    hybrid = tiny_model("hybrid-conv")
    result = bench_lm.bench_graph_decoding(hybrid, "nala", 8, 1, 2, torch.device("cpu"), 1)
    assert result["error"].startswith("n/a (cache: layer 1")


def test_compile_names_must_be_benchmarked_models(tmp_path):
    import pytest

    parser = argparse.ArgumentParser()
    bench_lm.add_arguments(parser)
    with pytest.raises(ValueError, match="--compile"):
        bench_lm.run(parser.parse_args(["--quick", "--models", "nala", "--compile", "NaLa",
                                        "--json", str(tmp_path / "b.json")]))


def test_zoo_kinds_are_benchmarked_in_our_lm_frame():
    """nala:KIND[@BACKEND]: our LM with another attention kind (same frame, same size), its backend set."""
    import pytest

    models = bench_lm.build_models(["nala", "nala:relu_linear", "nala:polarity@torch"], "nala-tiny")
    assert models["nala:relu_linear"].config.attn_type == "relu_linear"
    assert models["nala:relu_linear"].config.attn_backend == "auto"
    assert models["nala:polarity@torch"].config.attn_backend == "torch"
    sizes = {name: sum(p.numel() for p in m.parameters()) for name, m in models.items()}
    assert max(sizes.values()) / min(sizes.values()) < 1.05
    with pytest.raises(ValueError, match="attn_type"):
        bench_lm.build_models(["nala:linear"], "nala-tiny")
