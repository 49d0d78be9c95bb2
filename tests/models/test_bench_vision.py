"""The vision benchmark's pieces on CPU: the authors'-math baseline equals ours, the report table renders."""

from __future__ import annotations

import pytest
import torch

from nalaformer.bench.vision import Settings, build_pair, check_equal, format_table, parse_args


def test_authors_baseline_matches_ours_on_released_xt():
    ours, authors, authors_autocast = build_pair("nalaformer_xt", "cpu")
    check = check_equal(ours, authors, Settings(device="cpu", image_size=64, check_batch=1))
    assert check["passed"], check
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(authors_autocast.eval()(x), authors(x))  # same weights, no autocast: same math


def test_quick_settings_and_table():
    settings, out = parse_args(["--out", "somewhere", "--device", "cpu", "--quick", "--iters", "3"])
    assert settings.iters == 3 and settings.models == ("nalaformer_t",) and str(out) == "somewhere"
    report = {
        "settings": {"references": ["swin"]},
        "results": [
            {"model": "m", "impl": "ours", "mode": "inference", "img_per_s": 30.0, "ms_per_iter": 1.0,
             "peak_mem_gib": None, "note": ""},
            {"model": "m", "impl": "authors", "mode": "inference", "img_per_s": 10.0, "ms_per_iter": 3.0,
             "peak_mem_gib": None, "note": ""},
            {"model": "swin", "impl": "timm", "mode": "inference", "img_per_s": 20.0, "ms_per_iter": 2.0,
             "peak_mem_gib": None, "note": ""},
            {"model": "m", "impl": "ours", "mode": "train_mem_1024", "img_per_s": None, "ms_per_iter": None,
             "peak_mem_gib": 2.0, "note": ""},
            {"model": "m", "impl": "authors", "mode": "train_mem_1024", "img_per_s": None, "ms_per_iter": None,
             "peak_mem_gib": 8.0, "note": ""},
        ],
        "correctness": {"m": {"passed": True, "rel_err_fp32": 1e-7, "rel_err_bf16": 1e-2, "tolerance_fp32": 1e-4,
                              "tolerance_bf16": 3e-2, "authors_bf16_rel_err": 1e-2}},
        "compiled_vs_eager": {"m": {"passed": False, "rel_err_bf16": 0.5, "tolerance_bf16": 3e-2}},
    }
    table = format_table(report)
    assert "3.00x" in table and "1.50x" in table and "0.25x" in table and "PASS m" in table
    assert "FAIL m: torch.compile vs eager" in table


def test_compiled_check_compares_against_the_eager_module():
    import copy

    import timm

    from nalaformer.bench.vision import check_compiled

    settings = Settings(device="cpu", image_size=64, infer_batch=1)
    model = timm.create_model("nalaformer_xt", num_classes=10)
    assert check_compiled(model, model, settings)["passed"]
    other = copy.deepcopy(model)
    with torch.no_grad():
        other.head.fc.weight.mul_(2.0)
    check = check_compiled(other, model, settings)
    assert not check["passed"] and check["rel_err_bf16"] > 0.1


def test_fp32_check_runs_without_tf32_and_restores_the_flags():
    """cuDNN's default TF32 convolutions move fp32 logits ~3e-4 on a GPU: the fp32 check turns TF32 off."""
    import pytest

    from nalaformer.bench.vision import exact_fp32

    seen = []

    class Probe(torch.nn.Module):
        def forward(self, x):
            seen.append((torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32))
            return x.flatten(1)

    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = True
    try:
        check = check_equal(Probe(), Probe(), Settings(device="cpu", image_size=8, check_batch=1))
        assert check["passed"] and seen and all(flags == (False, False) for flags in seen)
        assert (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32) == (True, True)
        with pytest.raises(RuntimeError), exact_fp32():
            raise RuntimeError("inside")
        assert (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32) == (True, True)
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def test_absent_baseline_says_what_it_needs(tmp_path, monkeypatch):
    from nalaformer.bench import vision

    monkeypatch.setenv(vision.BASELINES_ENV, str(tmp_path))
    with pytest.raises(FileNotFoundError, match="from a checkout of the repository.*NALAFORMER_BASELINES"):
        vision.authors_model_class()


def test_compile_flag_compiles_every_model_and_warmup_is_reported_apart(monkeypatch):
    import torch

    from nalaformer.bench import vision

    compiled = []

    def fake_compile(model):  # records what would be compiled; compiling for real takes minutes on a CPU
        compiled.append(type(model).__name__)
        return model

    monkeypatch.setattr(torch, "compile", fake_compile)
    monkeypatch.setattr(vision, "check_compiled", lambda *a: {"passed": True, "rel_err_bf16": 0.0,
                                                              "tolerance_bf16": 3e-2})
    settings, _ = parse_args(["--out", "x", "--device", "cpu", "--quick", "--compile", "--img-size", "32",
                              "--warmup", "1", "--iters", "1", "--references", "resnet10t"])
    assert settings.image_size == 32 and settings.compile
    report = vision.run(settings)
    assert compiled == ["NaLaFormer", "AuthorsNaLaFormer", "AuthorsNaLaFormer", "ResNet"]
    timed = [r for r in report["results"] if r["mode"] in ("inference", "training")]
    assert len(timed) == 8 and all(r["warmup_s"] > 0 and r["extra"]["compiled"] for r in timed)
    assert "every model torch.compile'd" in format_table(report)


def test_impls_choose_which_implementations_are_timed():
    from nalaformer.bench import vision

    settings, _ = parse_args(["--out", "x", "--device", "cpu", "--quick", "--impls", "ours", "--references",
                              "--warmup", "1", "--iters", "1"])
    assert settings.impls == ("ours",)
    report = vision.run(settings)
    assert {r["impl"] for r in report["results"]} == {"ours"}
    assert report["correctness"]["nalaformer_t"]["passed"]  # the check against the authors' math still runs
    assert "ours" in format_table(report)
    with pytest.raises(SystemExit):
        parse_args(["--out", "x", "--impls", "theirs"])


def test_references_alone_and_the_compile_mode():
    from nalaformer.bench import vision

    settings, _ = parse_args(["--out", "x", "--device", "cpu", "--quick", "--models", "--references", "resnet10t",
                              "--warmup", "1", "--iters", "1", "--compile-mode", "reduce-overhead"])
    assert settings.models == () and settings.compile_mode == "reduce-overhead" and not settings.compile
    report = vision.run(settings)
    assert {r["model"] for r in report["results"]} == {"resnet10t"} and report["correctness"] == {}
