"""Atomic, safe checkpoints: safetensors weights + a weights_only-loadable training state.

Layout of a checkpoint root (every domain)::

    checkpoints/epoch_0003/...  or  checkpoints/step_00000200/...   one complete checkpoint each
    checkpoints/latest          name of the newest complete checkpoint (replaced atomically)

A checkpoint directory is written under a temporary name and renamed when complete, so a crash or
a full disk mid-save leaves the previous checkpoint and the ``latest`` pointer untouched. The vision
trainer's directories hold ``{model.safetensors, ema.safetensors, state.pt}``; the LM's a Hugging Face
model directory plus ``state.pt``.
"""

from __future__ import annotations

import os
import pathlib
import shutil
import tempfile
import warnings
from typing import Callable

import torch
from safetensors.torch import load_file, save_file

__all__ = ["save_checkpoint", "load_checkpoint", "latest_checkpoint", "find_checkpoint", "save_weights_atomic",
           "write_directory_atomic", "publish_latest", "load_train_state", "CheckpointError", "STATE_FILE"]

STATE_FILE = "state.pt"


class CheckpointError(RuntimeError):
    """A checkpoint could not be written or does not fit the model being trained."""


def _contiguous_cpu(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out, seen = {}, {}
    for name, tensor in state_dict.items():
        t = tensor.detach().to("cpu").contiguous()
        key = (t.data_ptr(), t.shape, t.stride())  # safetensors refuses shared storage: clone aliases
        out[name] = t.clone() if key in seen else t
        seen[key] = name
    return out


def save_weights_atomic(state_dict: dict[str, torch.Tensor], path: str | os.PathLike, metadata=None) -> None:
    """Write a safetensors file via a temporary file + rename."""
    path = pathlib.Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        save_file(_contiguous_cpu(state_dict), tmp, metadata=metadata)
        os.replace(tmp, path)
    except Exception as exc:  # OSError, and safetensors' own error on a full disk
        pathlib.Path(tmp).unlink(missing_ok=True)
        raise CheckpointError(f"could not write {path} ({exc}); the previous file is intact") from exc
    except BaseException:
        pathlib.Path(tmp).unlink(missing_ok=True)
        raise


def write_directory_atomic(final: str | os.PathLike, write: Callable[[pathlib.Path], None]) -> pathlib.Path:
    """Let ``write(tmp)`` fill a temporary sibling of ``final``, then rename it to ``final`` (replacing it).

    On any failure the temporary directory is removed and ``final`` (and the ``latest`` pointer) are untouched;
    an error (OSError, a serializer's error) becomes a CheckpointError naming the checkpoint still intact."""
    final = pathlib.Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = pathlib.Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}."))
    try:
        tmp.chmod(0o755)  # mkdtemp makes it private; a checkpoint is meant to be shared
        write(tmp)
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    except Exception as exc:  # OSError, and safetensors' own error on a full disk
        shutil.rmtree(tmp, ignore_errors=True)
        previous = latest_checkpoint(final.parent)
        raise CheckpointError(f"could not write checkpoint {final} ({exc}); the previous checkpoint "
                              f"{previous or '(none)'} is intact") from exc
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def save_checkpoint(directory: str | os.PathLike, epoch: int, *, model_state: dict, ema_state: dict | None,
                    train_state: dict, keep_last: int = 3) -> pathlib.Path:
    """Write ``directory/epoch_NNNN`` atomically, point ``latest`` at it, keep the newest ``keep_last``."""
    def write(tmp: pathlib.Path) -> None:
        save_file(_contiguous_cpu(model_state), tmp / "model.safetensors")
        if ema_state is not None:
            save_file(_contiguous_cpu(ema_state), tmp / "ema.safetensors")
        torch.save(train_state, tmp / STATE_FILE)

    root = pathlib.Path(directory)
    final = write_directory_atomic(root / f"epoch_{epoch:04d}", write)
    publish_latest(root, final, keep_last)
    return final


def publish_latest(root: pathlib.Path, final: pathlib.Path, keep_last: int) -> None:
    """Point ``root/latest`` at the complete checkpoint ``final`` (atomic replace), then delete all but
    the newest ``keep_last`` checkpoints named like it (``epoch_*``, ``step_*``: zero-padded, so they sort)."""
    pointer_tmp = root / ".latest.tmp"
    pointer_tmp.write_text(final.name)
    os.replace(pointer_tmp, root / "latest")
    prefix = final.name.rsplit("_", 1)[0]
    siblings = sorted(p for p in root.glob(f"{prefix}_*") if p.is_dir())
    for old in siblings[:-keep_last] if keep_last > 0 else []:
        shutil.rmtree(old, ignore_errors=True)


def latest_checkpoint(directory: str | os.PathLike) -> pathlib.Path | None:
    """The newest complete checkpoint directory under ``directory`` (or None)."""
    root = pathlib.Path(directory)
    pointer = root / "latest"
    if pointer.is_file():
        candidate = root / pointer.read_text().strip()
        if (candidate / STATE_FILE).is_file():
            return candidate
    return None


def find_checkpoint(spec: str | os.PathLike, root: str | os.PathLike) -> pathlib.Path | None:
    """What ``--resume spec`` names: ``"auto"`` -> the latest checkpoint under ``root`` (None if there is none);
    a checkpoint directory; or a run / checkpoints directory (its latest checkpoint)."""
    if str(spec) == "auto":
        return latest_checkpoint(root)
    path = pathlib.Path(spec)
    if path.is_dir() and not (path / STATE_FILE).is_file():
        found = latest_checkpoint(path) or latest_checkpoint(path / "checkpoints")
        if found is None:
            raise FileNotFoundError(f"--resume: no checkpoint found in {path}")
        path = found
    if not (path / STATE_FILE).is_file():
        raise FileNotFoundError(f"--resume: {path} is not a checkpoint directory (no {STATE_FILE})")
    return path


def _unreadable(path: pathlib.Path, exc: Exception) -> CheckpointError:
    first_line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return CheckpointError(f"{path} is unreadable ({type(exc).__name__}: {first_line})")


def load_train_state(path: str | os.PathLike) -> dict:
    """The training state of a checkpoint directory (``weights_only``: tensors and plain containers only);
    a CheckpointError names the file when it is corrupt."""
    file = pathlib.Path(path) / STATE_FILE
    try:
        return torch.load(file, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise _unreadable(file, exc) from exc


def _load_weights(file: pathlib.Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(file)
    except Exception as exc:
        raise _unreadable(file, exc) from exc


def _older_checkpoints(path: pathlib.Path) -> list[pathlib.Path]:
    """Complete checkpoints beside ``path`` named like it and older, newest first."""
    prefix = path.name.rsplit("_", 1)[0]
    return sorted((p for p in path.parent.glob(f"{prefix}_*") if p.name < path.name and (p / STATE_FILE).is_file()),
                  reverse=True)


def load_checkpoint(path: str | os.PathLike) -> tuple[dict, dict | None, dict]:
    """Load ``(model_state, ema_state or None, train_state)`` from a checkpoint directory (or its parent).

    Given a run or checkpoints directory, an unreadable newest checkpoint is skipped with a warning naming the
    file, and the newest readable older one is loaded."""
    given = pathlib.Path(path)
    path = find_checkpoint(given, given)
    candidates = [path] + (_older_checkpoints(path) if path != given else [])
    for i, candidate in enumerate(candidates):
        try:
            ema_file = candidate / "ema.safetensors"
            return (_load_weights(candidate / "model.safetensors"),
                    _load_weights(ema_file) if ema_file.is_file() else None, load_train_state(candidate))
        except CheckpointError as exc:
            if i + 1 == len(candidates):
                raise
            warnings.warn(f"{exc}; falling back to the previous checkpoint {candidates[i + 1]}", RuntimeWarning,
                          stacklevel=2)
    raise AssertionError("unreachable")
