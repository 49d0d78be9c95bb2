"""The run-folder rule: one run owns an output folder.

- A fresh run (no ``--resume``) in a folder that holds an earlier run is refused, unless ``--overwrite`` is
  given, which first removes that run's files (checkpoints, metrics, logs, weights, plots).
- ``--resume auto`` continues the run in the folder (or starts one when there is none).
- While a run works, it holds an exclusive lock on ``FOLDER/.lock`` (``fcntl.flock``; released when the process
  ends, however it ends): a second run in the same folder is refused at once.
"""

from __future__ import annotations

import os
import pathlib
import shutil

__all__ = ["RUN_FILES", "earlier_run", "claim_output_dir", "RunLock", "run_lock", "OutputDirError"]

# what a run writes into its folder (vision and LM); --overwrite removes exactly these
RUN_FILES = ("checkpoints", "metrics.csv", "tensorboard", "best.safetensors", "run.json", "curves.png", "loss.png",
             "samples.txt", "model", "eval.json", "confusion.png")


class OutputDirError(ValueError):
    """The output folder belongs to another run."""


def earlier_run(out: pathlib.Path) -> str | None:
    """A short description of an earlier run's files in ``out`` (None when there are none)."""
    found = [name for name in RUN_FILES if (out / name).exists()]
    return ", ".join(found) if found else None


def claim_output_dir(out: str | os.PathLike, *, resume: str | None, overwrite: bool) -> None:
    """Apply the run-folder rule before anything is written (every rank may call it: it only reads, except
    for ``overwrite`` on the main rank, the caller's job to restrict)."""
    out = pathlib.Path(out)
    if resume or not out.exists():
        return
    found = earlier_run(out)
    if found is None:
        return
    if not overwrite:
        raise OutputDirError(f"--output-dir: {out} holds an earlier run ({found}); continue it with --resume auto, "
                             f"start over with --overwrite true, or choose another --output-dir")
    for name in RUN_FILES:
        path = out / name
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()


class RunLock:
    """An exclusive, non-blocking lock on ``out/.lock`` for the life of a run (a no-op where fcntl is absent)."""

    def __init__(self, out: str | os.PathLike, enabled: bool = True):
        self.path = pathlib.Path(out) / ".lock"
        self.enabled, self.file = enabled, None

    def acquire(self) -> RunLock:
        try:
            import fcntl
        except ImportError:  # not POSIX: no lock
            return self
        if not self.enabled:
            return self
        self.path.parent.mkdir(parents=True, exist_ok=True)
        file = open(self.path, "a+")
        try:
            fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            file.seek(0)
            owner = file.read().strip() or "unknown"
            file.close()
            raise OutputDirError(f"--output-dir: {self.path.parent} is in use by another run (pid {owner}); wait "
                                 f"for it to finish or choose another --output-dir") from None
        file.seek(0)
        file.truncate()
        file.write(str(os.getpid()))
        file.flush()
        self.file = file
        return self

    def release(self) -> None:
        if self.file is not None:
            self.file.close()  # closing the descriptor drops the flock
            self.file = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def run_lock(out: str | os.PathLike) -> RunLock:
    """The lock a command holds on its output folder: taken by the main process (``RANK`` 0) only."""
    return RunLock(out, enabled=int(os.environ.get("RANK", "0")) == 0)
