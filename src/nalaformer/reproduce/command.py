"""``nalaformer reproduce``: run every task x attention kind x seed cell, resumably, then tabulate and plot."""

from __future__ import annotations

import argparse
import json
import pathlib
import time

from tqdm.auto import tqdm

__all__ = ["HELP", "add_arguments", "run", "run_study", "TASK_NAMES"]

HELP = "reproduce the paper's claims at small scale: every task x attention kind x seed, a table and plots"
TASK_NAMES = ("fashion_mnist", "fashion_scenes", "python_docs_bytes", "mqar")


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
    parser.add_argument("--output-dir", required=True, help="results.json, results.md, plots/ and per-cell runs")


def _device(name: str) -> str:
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name not in ("cpu", "cuda") and not name.startswith("cuda:"):
        raise ValueError(f"--device: expected 'auto', 'cpu' or 'cuda', got {name!r}")
    return name


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


def run_study(tasks: list[str], kinds: list[str], seeds: int, quick: bool, device: str,
              output_dir: str | pathlib.Path, data: dict | None = None, shard: tuple[int, int] = (0, 1)
              ) -> list[dict]:
    """Run the missing cells (finished ones in ``output_dir/results.json`` are skipped, also those another
    process sharing the directory finishes meanwhile), write the table and plots; returns all rows.

    ``data``: where the data lives, ``{"data_dir": Fashion-MNIST dir, "corpus": text paths}`` (None: defaults).
    ``shard``: (I, N) runs cells I, I+N, I+2N, ... of the task x kind x seed list (every process sees the same list).
    """
    from .cells import Cell, versions
    from .report import markdown_table, write_plots
    from .sizes import size_settings
    from .store import ResultsStore, write_text_atomic
    from .tasks import TASKS

    tasks = _check_choices(tasks, TASK_NAMES, "--tasks")
    kinds = _check_choices(kinds, _kinds(), "--attentions")
    if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1:
        raise ValueError(f"--seeds: expected a positive int, got {seeds!r}")
    missing = [t for t in tasks if t not in TASKS]
    if missing:
        raise ValueError(f"--tasks: {', '.join(missing)} not available in this build")
    out = pathlib.Path(output_dir)
    store = ResultsStore(out)
    size, stamp = ("quick" if quick else "full"), versions()
    data = {k: v for k, v in (data or {}).items() if v is not None}
    settings = {task: {**value, **data} if isinstance(value, dict) else value
                for task, value in size_settings(quick).items()}
    cells = [(t, k, s) for t in tasks for k in kinds for s in range(seeds)]
    index, count = shard
    mine = cells[index::count]
    todo = [c for c in mine if not store.done(*c, size)]
    part = f", shard {index}/{count}: {len(mine)} of them" if count > 1 else ""
    print(f"reproduce ({size}, {device}): {len(cells)} cells{part}, {len(mine) - len(todo)} already done", flush=True)
    for task, kind, seed in tqdm(todo, desc="reproduce", unit="cell"):
        store.reload()
        if store.done(task, kind, seed, size):  # another process sharing the directory did it
            continue
        cell = Cell(task, kind, seed, size, settings[task], device, out / "cells" / f"{task}-{kind}-s{seed}")
        tqdm.write(f"-- {task} / {kind} / seed {seed}")
        started = time.perf_counter()
        rows = TASKS[task](cell)
        wall = time.perf_counter() - started
        for row in rows:
            row.setdefault("wall_s", wall)
            row["cell_wall_s"], row["versions"] = wall, stamp
        write_text_atomic(cell.work_dir / "rows.json", json.dumps(rows, indent=1))
        store.add_cell(rows)
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
    run_study(args.tasks, kinds, seeds, args.quick, _device(args.device), args.output_dir,
              data={"data_dir": args.data_dir, "corpus": args.corpus}, shard=parse_shard(args.shard))
    return 0
