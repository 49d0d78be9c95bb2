"""run_study: resume skips finished cells, results are written atomically, bad arguments are named."""

from __future__ import annotations

import json

import pytest

from nalaformer.cli import main
from nalaformer.reproduce import sizes
from nalaformer.reproduce.command import run_study
from nalaformer.reproduce.store import ResultsStore

from .conftest import TINY


@pytest.fixture
def tiny_quick(monkeypatch):
    monkeypatch.setitem(sizes.QUICK, "mqar", TINY["mqar"])


def test_study_writes_rows_table_and_plots_then_resumes(tmp_path, tiny_quick, one_thread):
    rows = run_study(["mqar"], ["nala", "softmax"], 1, True, "cpu", tmp_path)
    assert {r["attention"] for r in rows} == {"nala", "softmax"}
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved == json.loads(json.dumps(rows))
    assert all("versions" in r and r["cell_wall_s"] > 0 for r in saved)
    assert "| mqar | accuracy | L=32 kv=2 |" in (tmp_path / "results.md").read_text()
    assert (tmp_path / "plots" / "mqar_heatmaps.png").stat().st_size > 0
    # resume: finished cells are not recomputed; only the new seed runs
    before = (tmp_path / "cells" / "mqar-nala-s0" / "rows.json").stat().st_mtime_ns
    rows2 = run_study(["mqar"], ["nala", "softmax"], 2, True, "cpu", tmp_path)
    assert (tmp_path / "cells" / "mqar-nala-s0" / "rows.json").stat().st_mtime_ns == before
    assert [r for r in rows2 if r["seed"] == 0] == [r for r in saved]
    assert {r["seed"] for r in rows2} == {0, 1}
    assert len(rows2) == 2 * len(rows)


def test_finished_cell_in_results_is_skipped(tmp_path, tiny_quick):
    store = ResultsStore(tmp_path)
    store.add_cell([{"task": "mqar", "attention": "nala", "seed": 0, "metric": "accuracy", "value": 0.5,
                     "size": "quick", "seq_len": 32, "num_kv_pairs": 2}])
    rows = run_study(["mqar"], ["nala"], 1, True, "cpu", tmp_path)
    assert len(rows) == 1 and not (tmp_path / "cells").exists()


def test_store_rejects_incomplete_rows_and_bad_files(tmp_path):
    with pytest.raises(ValueError, match="lacks"):
        ResultsStore(tmp_path).add_cell([{"task": "mqar"}])
    (tmp_path / "results.json").write_text("{not json")
    with pytest.raises(ValueError, match="--output-dir"):
        ResultsStore(tmp_path)


@pytest.mark.parametrize("kwargs, flag", [
    (dict(tasks=["imagenet"]), "--tasks"), (dict(kinds=["flash"]), "--attentions"), (dict(seeds=0), "--seeds"),
])
def test_bad_arguments_name_the_flag(tmp_path, kwargs, flag):
    args = dict(tasks=["mqar"], kinds=["nala"], seeds=1, quick=True, device="cpu", output_dir=tmp_path)
    args.update(kwargs)
    with pytest.raises(ValueError, match=flag):
        run_study(**args)


def test_cli_reports_bad_kind_in_one_line(tmp_path, capsys):
    assert main(["reproduce", "--quick", "--attentions", "flash", "--output-dir", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "--attentions" in err and "'flash'" in err and "nala" in err
