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


def _row(attention, seed=0, value=0.5):
    return {"task": "mqar", "attention": attention, "seed": seed, "metric": "accuracy", "value": value,
            "size": "quick", "seq_len": 32, "num_kv_pairs": 2}


def test_processes_sharing_a_directory_keep_each_others_cells(tmp_path):
    first, second = ResultsStore(tmp_path), ResultsStore(tmp_path)  # both opened before either wrote
    first.add_cell([_row("nala")])
    second.add_cell([_row("softmax")])
    second.add_cell([_row("softmax", value=0.75)])  # a cell written again replaces its rows, never doubles them
    rows = ResultsStore(tmp_path).rows
    assert sorted((r["attention"], r["value"]) for r in rows) == [("nala", 0.5), ("softmax", 0.75)]


def test_cell_finished_by_another_process_meanwhile_is_skipped(tmp_path, tiny_quick, monkeypatch):
    from nalaformer.reproduce import tasks

    ran = []

    def fake_mqar(cell):  # while the first cell runs, "another process" finishes the second
        ran.append(cell.attention)
        ResultsStore(tmp_path).add_cell([_row("softmax")])
        return [cell.row("accuracy", 0.25, seq_len=32, num_kv_pairs=2)]

    monkeypatch.setitem(tasks.TASKS, "mqar", fake_mqar)
    rows = run_study(["mqar"], ["nala", "softmax"], 1, True, "cpu", tmp_path)
    assert ran == ["nala"] and {r["attention"] for r in rows} == {"nala", "softmax"}


def test_data_locations_reach_every_task(tmp_path, tiny_quick, monkeypatch):
    from nalaformer.reproduce import tasks

    seen = {}

    def record(cell):
        seen[cell.task] = (cell.settings.get("data_dir"), cell.settings.get("corpus"))
        return [cell.row("accuracy", 0.5, seq_len=32, num_kv_pairs=2)]

    for task in ("mqar", "fashion_mnist"):
        monkeypatch.setitem(tasks.TASKS, task, record)
    run_study(["mqar", "fashion_mnist"], ["nala"], 1, True, "cpu", tmp_path,
              data={"data_dir": "/fmnist", "corpus": ["/docs"]})
    assert seen == {"mqar": ("/fmnist", ["/docs"]), "fashion_mnist": ("/fmnist", ["/docs"])}
    assert "data_dir" not in sizes.QUICK["fashion_mnist"]  # the module's settings are not modified


def test_shards_split_the_cells_between_processes(tmp_path, tiny_quick, monkeypatch):
    from nalaformer.reproduce import tasks
    from nalaformer.reproduce.command import parse_shard

    ran = []
    monkeypatch.setitem(tasks.TASKS, "mqar", lambda cell: ran.append((cell.attention, cell.seed)) or
                        [cell.row("accuracy", 0.5, seq_len=32, num_kv_pairs=2)])
    run_study(["mqar"], ["nala", "softmax"], 2, True, "cpu", tmp_path, shard=(1, 2))
    assert ran == [("softmax", 0), ("softmax", 1)]  # cells go seed by seed: nala-0, softmax-0, nala-1, softmax-1
    rows = run_study(["mqar"], ["nala", "softmax"], 2, True, "cpu", tmp_path, shard=(0, 2))
    assert len(ran) == 4 and len(rows) == 4
    assert parse_shard(None) == (0, 1) and parse_shard("1/3") == (1, 3)
    for bad in ("3/3", "1", "a/b", "-1/2"):
        with pytest.raises(ValueError, match="--shard"):
            parse_shard(bad)


def test_cells_go_seed_by_seed_with_timed_cells_last_at_seed_zero():
    from nalaformer.reproduce.command import study_cells

    cells = study_cells(["scenes_speed", "mqar", "fashion_mnist"], ["nala", "softmax"], 2)
    assert cells[:4] == [("mqar", "nala", 0), ("mqar", "softmax", 0), ("fashion_mnist", "nala", 0),
                         ("fashion_mnist", "softmax", 0)]
    assert cells[-2:] == [("scenes_speed", "nala", 0), ("scenes_speed", "softmax", 0)]
    assert len(cells) == 2 * 2 * 2 + 2


def test_a_cell_claimed_by_another_process_is_left_to_it(tmp_path, tiny_quick, monkeypatch):
    from nalaformer.reproduce import tasks

    ran = []
    monkeypatch.setitem(tasks.TASKS, "mqar", lambda cell: ran.append(cell.attention) or
                        [cell.row("accuracy", 0.5, seq_len=32, num_kv_pairs=2)])
    with ResultsStore(tmp_path).claim("mqar-nala-s0") as mine:  # "another process" is running nala
        assert mine
        with ResultsStore(tmp_path).claim("mqar-nala-s0") as again:
            assert not again
        run_study(["mqar"], ["nala", "softmax"], 1, True, "cpu", tmp_path)
    assert ran == ["softmax"]
    run_study(["mqar"], ["nala", "softmax"], 1, True, "cpu", tmp_path)  # the claim is gone: nala runs now
    assert ran == ["softmax", "nala"]


def test_jobs_split_the_cells_between_worker_processes(tmp_path, tiny_quick):
    rows = run_study(["mqar"], ["nala", "softmax", "relu_linear"], 1, True, "cpu", tmp_path, jobs=2, threads=1)
    assert sorted({r["attention"] for r in rows}) == ["nala", "relu_linear", "softmax"]
    logs = sorted(p.name for p in (tmp_path / "logs").iterdir())
    assert logs == ["worker-0.log", "worker-1.log"]
    assert sum("-- mqar /" in (tmp_path / "logs" / n).read_text() for n in logs) >= 1
    runs = "".join((tmp_path / "logs" / n).read_text() for n in logs).count("-- mqar /")
    assert runs == 3  # every cell ran exactly once
    with pytest.raises(ValueError, match="--jobs"):
        run_study(["mqar"], ["nala"], 1, True, "cpu", tmp_path, jobs=0)


def test_jobs_argument(monkeypatch):
    from nalaformer.reproduce import command

    monkeypatch.setattr(command.os, "cpu_count", lambda: 2)
    assert command.parse_jobs("auto") == 2 and command.parse_jobs("3") == 3
    monkeypatch.setattr(command.os, "cpu_count", lambda: 64)
    assert command.parse_jobs("auto") == command.MAX_AUTO_JOBS
    for bad in ("0", "-2", "two", "1.5"):
        with pytest.raises(ValueError, match="--jobs"):
            command.parse_jobs(bad)


@pytest.mark.parametrize("gib, jobs", [(139, 12), (24, 4), (8, 1), (4, 1)])
def test_auto_jobs_fit_the_gpu_memory(monkeypatch, gib, jobs):
    import types

    import torch

    from nalaformer.reproduce import command

    monkeypatch.setattr(command.os, "cpu_count", lambda: 16)
    monkeypatch.setattr(torch.cuda, "get_device_properties",
                        lambda device: types.SimpleNamespace(total_memory=gib * 2 ** 30))
    assert command.parse_jobs("auto", "cuda") == jobs
    assert command.parse_jobs("3", "cuda") == 3  # an explicit count is the user's call
