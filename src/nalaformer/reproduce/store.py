"""``results.json``: a list of result rows, rewritten atomically after every finished cell."""

from __future__ import annotations

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
        if self.path.is_file():
            try:
                rows = json.loads(self.path.read_text())
            except json.JSONDecodeError as exc:
                raise ValueError(f"--output-dir: {self.path} is not valid JSON ({exc}); move it away") from exc
            if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
                raise ValueError(f"--output-dir: {self.path} is not a list of result rows")
            self.rows = rows

    @staticmethod
    def cell_key(task: str, attention: str, seed: int, size: str) -> tuple:
        return (task, attention, int(seed), size)

    def done(self, task: str, attention: str, seed: int, size: str) -> bool:
        key = self.cell_key(task, attention, seed, size)
        return any(self.cell_key(r["task"], r["attention"], r["seed"], r.get("size", "")) == key for r in self.rows)

    def add_cell(self, rows: list[dict]) -> None:
        """Append one finished cell's rows and rewrite the file atomically."""
        for row in rows:
            missing = [k for k in REQUIRED_KEYS if k not in row]
            if missing:
                raise ValueError(f"result row lacks {missing}: {row}")
        self.rows.extend(rows)
        write_text_atomic(self.path, json.dumps(self.rows, indent=1, default=float))
