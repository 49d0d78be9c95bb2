"""``results.json``: a list of result rows, rewritten atomically after every finished cell.

Several ``nalaformer reproduce`` processes may share one output directory (``--jobs`` workers, or one process per
task on one GPU): each write happens under an exclusive lock on ``results.json.lock`` and merges the rows other
processes wrote since; a process claims a cell (``ResultsStore.claim``) before running it, so no two run the same.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import pathlib
import tempfile

__all__ = ["REQUIRED_KEYS", "ResultsStore", "write_text_atomic"]

REQUIRED_KEYS = ("task", "attention", "seed", "metric", "value")


def write_text_atomic(path: pathlib.Path, text: str) -> None:
    """Write ``text`` to ``path`` via a temporary file in the same directory and ``os.replace``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        pathlib.Path(tmp).unlink(missing_ok=True)
        raise


class ResultsStore:
    """The rows of one output directory; a cell (task, attention, seed, size) is done once its rows are in."""

    def __init__(self, out_dir: str | os.PathLike):
        self.path = pathlib.Path(out_dir) / "results.json"
        self.rows: list[dict] = []
        self.reload()

    def reload(self) -> None:
        """Read the rows on disk (other processes may have added cells)."""
        if not self.path.is_file():
            return
        try:
            rows = json.loads(self.path.read_text())
        except json.JSONDecodeError as exc:
            raise ValueError(f"--output-dir: {self.path} is not valid JSON ({exc}); move it away") from exc
        if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
            raise ValueError(f"--output-dir: {self.path} is not a list of result rows")
        self.rows = rows

    @contextlib.contextmanager
    def _locked(self):
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path.with_name(self.path.name + ".lock"), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    @contextlib.contextmanager
    def claim(self, name: str):
        """Yield True while this process holds cell ``name`` (a non-blocking flock on ``cells/.claims/NAME.lock``),
        False when another process is running it. The lock dies with its process: a killed run leaves no claim."""
        path = self.path.parent / "cells" / ".claims" / f"{name}.lock"
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                yield False
                return
            try:
                yield True
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    @staticmethod
    def cell_key(task: str, attention: str, seed: int, size: str) -> tuple:
        return (task, attention, int(seed), size)

    def done(self, task: str, attention: str, seed: int, size: str) -> bool:
        key = self.cell_key(task, attention, seed, size)
        return any(self.cell_key(r["task"], r["attention"], r["seed"], r.get("size", "")) == key for r in self.rows)

    def add_cell(self, rows: list[dict]) -> None:
        """Add one finished cell's rows to those on disk and rewrite the file atomically (under the lock); a cell
        another process finished meanwhile is replaced, never doubled."""
        for row in rows:
            missing = [k for k in REQUIRED_KEYS if k not in row]
            if missing:
                raise ValueError(f"result row lacks {missing}: {row}")
        keys = {self.cell_key(r["task"], r["attention"], r["seed"], r.get("size", "")) for r in rows}
        with self._locked():
            self.reload()
            self.rows = [r for r in self.rows
                         if self.cell_key(r["task"], r["attention"], r["seed"], r.get("size", "")) not in keys]
            self.rows.extend(rows)
            write_text_atomic(self.path, json.dumps(self.rows, indent=1, default=float))
