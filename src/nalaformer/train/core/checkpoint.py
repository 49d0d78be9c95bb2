"""Atomic, safe checkpoints: safetensors weights + a weights_only-loadable training state.

Layout of an output directory::

    checkpoints/epoch_0003/{model.safetensors, ema.safetensors, state.pt}
    checkpoints/latest          name of the newest complete checkpoint (replaced atomically)
    best.safetensors            weights of the best epoch so far (replaced atomically)

A checkpoint directory is written under a temporary name and renamed when complete, so a crash or
a full disk mid-save leaves the previous checkpoint and the ``latest`` pointer untouched.
"""

from __future__ import annotations

import os
import pathlib
import random
import shutil
import tempfile

import numpy as np
import torch
from safetensors.torch import load_file, save_file

__all__ = ["save_checkpoint", "load_checkpoint", "latest_checkpoint", "save_weights_atomic", "rng_state",
           "set_rng_state", "CheckpointError", "publish_latest"]


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
    except OSError as exc:
        pathlib.Path(tmp).unlink(missing_ok=True)
        raise CheckpointError(f"could not write {path} ({exc}); the previous file is intact") from exc
    except BaseException:
        pathlib.Path(tmp).unlink(missing_ok=True)
        raise


def rng_state() -> dict:
    """Every RNG the loop touches, in a form ``torch.load(weights_only=True)`` accepts."""
    np_state = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]],
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))
    name, keys, *rest = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), *rest))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(directory: str | os.PathLike, epoch: int, *, model_state: dict, ema_state: dict | None,
                    train_state: dict, keep_last: int = 3) -> pathlib.Path:
    """Write ``directory/epoch_NNNN`` atomically, point ``latest`` at it, keep the newest ``keep_last``."""
    root = pathlib.Path(directory)
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"epoch_{epoch:04d}"
    tmp = pathlib.Path(tempfile.mkdtemp(dir=root, prefix=f".{final.name}."))
    try:
        save_file(_contiguous_cpu(model_state), tmp / "model.safetensors")
        if ema_state is not None:
            save_file(_contiguous_cpu(ema_state), tmp / "ema.safetensors")
        torch.save(train_state, tmp / "state.pt")
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        previous = latest_checkpoint(root)
        raise CheckpointError(f"could not write checkpoint {final} ({exc}); the previous checkpoint "
                              f"{previous or '(none)'} is intact") from exc
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
        if (candidate / "state.pt").is_file():
            return candidate
    return None


def load_checkpoint(path: str | os.PathLike) -> tuple[dict, dict | None, dict]:
    """Load ``(model_state, ema_state or None, train_state)`` from a checkpoint directory (or its parent)."""
    path = pathlib.Path(path)
    if path.is_dir() and not (path / "state.pt").is_file():
        found = latest_checkpoint(path) or latest_checkpoint(path / "checkpoints")
        if found is None:
            raise FileNotFoundError(f"--resume: no checkpoint found in {path}")
        path = found
    if not (path / "state.pt").is_file():
        raise FileNotFoundError(f"--resume: {path} is not a checkpoint directory (no state.pt)")
    ema_file = path / "ema.safetensors"
    return (load_file(path / "model.safetensors"), load_file(ema_file) if ema_file.is_file() else None,
            torch.load(path / "state.pt", map_location="cpu", weights_only=True))
