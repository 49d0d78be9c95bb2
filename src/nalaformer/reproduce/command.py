"""``nalaformer reproduce``: run every task x attention kind x seed cell, resumably, then tabulate and plot."""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import time

from tqdm.auto import tqdm

__all__ = ["HELP", "add_arguments", "run", "run_study", "TASK_NAMES"]

HELP = "reproduce the paper's claims at small scale: every task x attention kind x seed, a table and plots"
MAX_AUTO_JOBS = 12  # measured on one H200 with 16 host cores: the whole study in 24 minutes
GIB_PER_GPU_JOB = 6  # GPU memory 'auto' sets aside per worker (a full-size cell; 12 fit an H200's 139 GiB)
TASK_NAMES = ("fashion_mnist", "fashion_scenes", "scenes_speed", "python_docs_bytes", "mqar")


def _kinds() -> list[str]:
    from ..layers import KINDS

    return list(KINDS)


def _check_choices(values: list[str], known, flag: str) -> list[str]:
    unknown = [v for v in values if v not in known]
    if unknown:
        raise ValueError(f"{flag}: unknown {', '.join(map(repr, unknown))}; choose from {', '.join(known)}")
    return list(dict.fromkeys(values))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--tasks", nargs="+", default=list(TASK_NAMES), metavar="TASK",
                        help=f"tasks to run (default: all of {' '.join(TASK_NAMES)})")
    parser.add_argument("--attentions", nargs="+", default=None, metavar="KIND",
                        help="attention kinds (default: every kind of nalaformer.layers.KINDS)")
    parser.add_argument("--seeds", type=int, default=None, help="seeds per cell (default: 1 quick, 3 full)")
    parser.add_argument("--quick", action="store_true", help="CPU smoke scale: tiny models and data slices")
    parser.add_argument("--device", default="auto", help="'auto', 'cpu' or 'cuda'")
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads for torch (default: torch's; 1 is fastest on a busy small machine)")
    parser.add_argument("--data-dir", default=None,
                        help="directory with Fashion-MNIST's four idx files (default: Debian's dataset-fashion-mnist)")
    parser.add_argument("--corpus", nargs="+", default=None, metavar="PATH",
                        help="text files, directories or globs for python_docs_bytes (default: python3.11-doc)")
    parser.add_argument("--shard", default=None, metavar="I/N",
                        help="run only every N-th cell starting at I (0-based), to split the study over processes or "
                             "GPUs that share --output-dir, e.g. --shard 0/2 and --shard 1/2")
    parser.add_argument("--jobs", default="auto",
                        help="worker processes sharing the device, each with --threads or cpu_count/jobs threads and "
                             "its log in OUTPUT_DIR/logs; small models leave a GPU and a many-core CPU mostly idle "
                             "(one H200 ran 12 cells at once); the timed cells (scenes_speed) run afterwards, alone "
                             f"(default 'auto': one per CPU core, at most {MAX_AUTO_JOBS}, and on a GPU at most one "
                             f"per {GIB_PER_GPU_JOB} GiB of its memory)")
    parser.add_argument("--output-dir", required=True, help="results.json, results.md, plots/ and per-cell runs")


def _device(name: str) -> str:
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name not in ("cpu", "cuda") and not name.startswith("cuda:"):
        raise ValueError(f"--device: expected 'auto', 'cpu' or 'cuda', got {name!r}")
    return name


def parse_jobs(text: str | int, device: str = "cpu") -> int:
    """``"auto"`` -> one per CPU core, at most MAX_AUTO_JOBS and, on a GPU, one per GIB_PER_GPU_JOB of its memory;
    otherwise a positive int."""
    if text == "auto":
        jobs = min(MAX_AUTO_JOBS, os.cpu_count() or 1)
        if device.startswith("cuda"):
            import torch

            total = torch.cuda.get_device_properties(torch.device(device)).total_memory / 2 ** 30
            jobs = min(jobs, int(total // GIB_PER_GPU_JOB))
        return max(1, jobs)
    try:
        jobs = int(text)
    except (TypeError, ValueError):
        jobs = 0
    if jobs < 1 or isinstance(text, bool):
        raise ValueError(f"--jobs: expected 'auto' or a positive int, got {text!r}")
    return jobs


def parse_shard(text: str | None) -> tuple[int, int]:
    """``"I/N"`` -> (I, N) with 0 <= I < N; None -> (0, 1)."""
    if text is None:
        return 0, 1
    try:
        index, count = (int(part) for part in text.split("/"))
    except ValueError:
        raise ValueError(f"--shard: expected I/N such as 0/2, got {text!r}") from None
    if not 0 <= index < count:
        raise ValueError(f"--shard: expected 0 <= I < N, got {text!r}")
    return index, count


def study_cells(tasks: list[str], kinds: list[str], seeds: int) -> list[tuple[str, str, int]]:
    """Every (task, kind, seed), seed by seed (a cut-off run has whole seeds); timed tasks at seed 0 only, last."""
    from .tasks import TIMED

    trained = [(t, k, s) for s in range(seeds) for t in tasks if t not in TIMED for k in kinds]
    return trained + [(t, k, 0) for t in tasks if t in TIMED for k in kinds]


def _run_cells(cells, store, settings: dict, device: str, out: pathlib.Path, size: str, stamp: dict,
               progress: bool = True) -> None:
    """Run each cell no other process has finished or claimed; its rows go to ``store`` as it finishes."""
    from .cells import Cell
    from .store import write_text_atomic
    from .tasks import TASKS

    for task, kind, seed in tqdm(cells, desc="reproduce", unit="cell", disable=not progress):
        name = f"{task}-{kind}-s{seed}"
        with store.claim(name) as mine:
            if not mine:  # another process is running it
                continue
            store.reload()
            if store.done(task, kind, seed, size):  # another process ran it
                continue
            cell = Cell(task, kind, seed, size, settings[task], device, out / "cells" / name)
            tqdm.write(f"-- {task} / {kind} / seed {seed}")
            started = time.perf_counter()
            rows = TASKS[task](cell)
            wall = time.perf_counter() - started
            for row in rows:
                row.setdefault("wall_s", wall)
                row["cell_wall_s"], row["versions"] = wall, stamp
            write_text_atomic(cell.work_dir / "rows.json", json.dumps(rows, indent=1))
            store.add_cell(rows)


def _worker(cells, settings: dict, device: str, out: str, size: str, stamp: dict, threads: int, log: str) -> None:
    """One ``--jobs`` process: output to its log file (file descriptors too: compilers and tqdm write there)."""
    import torch

    from .store import ResultsStore

    with open(log, "a") as f:
        os.dup2(f.fileno(), 1)
        os.dup2(f.fileno(), 2)
    torch.set_num_threads(threads)
    _run_cells(cells, ResultsStore(out), settings, device, pathlib.Path(out), size, stamp, progress=False)


def _run_jobs(cells, jobs: int, threads: int | None, store, settings, device, out: pathlib.Path, size, stamp):
    """Run ``cells`` in ``jobs`` spawned processes that claim cells as they go; a bar counts finished cells."""
    import multiprocessing

    threads = threads or max(1, (os.cpu_count() or 1) // jobs)
    (out / "logs").mkdir(parents=True, exist_ok=True)
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=_worker, name=f"reproduce-worker-{i}",
                               args=(cells, settings, device, str(out), size, stamp, threads,
                                     str(out / "logs" / f"worker-{i}.log"))) for i in range(jobs)]
    print(f"reproduce: {jobs} workers, {threads} thread(s) each, logs in {out / 'logs'}", flush=True)
    for worker in workers:
        worker.start()
    unfinished = lambda: sum(not store.done(*c, size) for c in cells)  # noqa: E731
    try:
        with tqdm(total=len(cells), desc="reproduce", unit="cell") as bar:
            while any(w.is_alive() for w in workers):
                time.sleep(2)
                store.reload()
                finished = len(cells) - unfinished()
                if finished > bar.n:
                    bar.update(finished - bar.n)
    finally:
        for worker in workers:
            if worker.is_alive():
                worker.terminate()
            worker.join()
    failed = [(i, w.exitcode) for i, w in enumerate(workers) if w.exitcode != 0]
    if failed:
        logs = ", ".join(str(out / "logs" / f"worker-{i}.log") for i, _ in failed)
        raise RuntimeError(f"--jobs: {len(failed)} worker(s) failed (exit codes {[c for _, c in failed]}); see {logs}; "
                           "run the same command again to resume")


def run_study(tasks: list[str], kinds: list[str], seeds: int, quick: bool, device: str,
              output_dir: str | pathlib.Path, data: dict | None = None, shard: tuple[int, int] = (0, 1),
              jobs: int = 1, threads: int | None = None) -> list[dict]:
    """Run the missing cells (finished ones in ``output_dir/results.json`` are skipped, also those another
    process sharing the directory finishes meanwhile), write the table and plots; returns all rows.

    ``data``: where the data lives, ``{"data_dir": Fashion-MNIST dir, "corpus": text paths}`` (None: defaults).
    ``shard``: (I, N) runs cells I, I+N, I+2N, ... of ``study_cells`` (every process sees the same list).
    ``jobs``: processes sharing the device (``threads`` torch threads each); timed cells run after them, here.
    """
    from .cells import versions
    from .report import markdown_table, write_plots
    from .sizes import size_settings
    from .store import ResultsStore, write_text_atomic
    from .tasks import TASKS, TIMED

    tasks = _check_choices(tasks, TASK_NAMES, "--tasks")
    kinds = _check_choices(kinds, _kinds(), "--attentions")
    if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1:
        raise ValueError(f"--seeds: expected a positive int, got {seeds!r}")
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise ValueError(f"--jobs: expected a positive int, got {jobs!r}")
    missing = [t for t in tasks if t not in TASKS]
    if missing:
        raise ValueError(f"--tasks: {', '.join(missing)} not available in this build")
    out = pathlib.Path(output_dir)
    store = ResultsStore(out)
    size, stamp = ("quick" if quick else "full"), versions()
    data = {k: v for k, v in (data or {}).items() if v is not None}
    settings = {task: {**value, **data} if isinstance(value, dict) else value
                for task, value in size_settings(quick).items()}
    cells = study_cells(tasks, kinds, seeds)
    index, count = shard
    mine = cells[index::count]
    todo = [c for c in mine if not store.done(*c, size)]
    part = f", shard {index}/{count}: {len(mine)} of them" if count > 1 else ""
    print(f"reproduce ({size}, {device}): {len(cells)} cells{part}, {len(mine) - len(todo)} already done", flush=True)
    trained = [c for c in todo if c[0] not in TIMED]
    if jobs > 1 and trained:
        _run_jobs(trained, jobs, threads, store, settings, device, out, size, stamp)
        todo = [c for c in todo if c[0] in TIMED]
    _run_cells(todo, store, settings, device, out, size, stamp)
    store.reload()
    rows = [r for r in store.rows if r.get("size") == size]
    header = (f"# nalaformer reproduce ({size} size{', CPU smoke scale: not the paper verdict' if quick else ''})"
              f"\n\nmean ± std over seeds; device {device}\n\n")
    write_text_atomic(out / "results.md", header + markdown_table(rows, kinds))
    write_plots(rows, out, kinds)
    print(f"reproduce: {len(rows)} rows in {store.path}; table {out / 'results.md'}; plots in {out / 'plots'}")
    return rows


def run(args: argparse.Namespace) -> int:
    from .sizes import size_settings

    if args.threads is not None:
        if args.threads < 1:
            raise ValueError(f"--threads: expected a positive int, got {args.threads}")
        import torch

        torch.set_num_threads(args.threads)
    kinds = args.attentions or _kinds()
    seeds = args.seeds if args.seeds is not None else size_settings(args.quick)["seeds"]
    device = _device(args.device)
    run_study(args.tasks, kinds, seeds, args.quick, device, args.output_dir,
              data={"data_dir": args.data_dir, "corpus": args.corpus}, shard=parse_shard(args.shard),
              jobs=parse_jobs(args.jobs, device), threads=args.threads)
    return 0
