"""Atomic language-model checkpoints that are also Hugging Face model directories.

Layout of an output directory::

    checkpoints/step_00000500/   config.json, model.safetensors, generation_config.json, tokenizer files,
                                 state.pt (optimizer, schedule, RNG, step), run.json (data settings)
    checkpoints/latest           name of the newest complete checkpoint (replaced atomically)
    model/                       the final model (same files, no state.pt)

Every directory is written under a temporary name and renamed when complete, so an interrupted save
leaves the previous checkpoint intact. Each checkpoint loads with ``AutoModelForCausalLM`` and
lm-evaluation-harness's ``hf`` model type.
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import tempfile

import torch

from ..core.checkpoint import CheckpointError, latest_checkpoint, publish_latest

__all__ = ["save_model_dir", "save_lm_checkpoint", "find_lm_checkpoint", "load_train_state", "RUN_FILE"]

RUN_FILE = "run.json"


def save_model_dir(path: str | os.PathLike, model, tokenizer, *, state_dict: dict | None = None,
                   train_state: dict | None = None, run_info: dict | None = None) -> pathlib.Path:
    """Write ``path`` atomically: model (safetensors) + tokenizer [+ state.pt] [+ run.json]."""
    final = pathlib.Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = pathlib.Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}."))
    try:
        tmp.chmod(0o755)  # mkdtemp makes it private; a model directory is meant to be shared
        model.save_pretrained(tmp, state_dict=state_dict)
        tokenizer.save_pretrained(tmp)
        if train_state is not None:
            torch.save(train_state, tmp / "state.pt")
        if run_info is not None:
            (tmp / RUN_FILE).write_text(json.dumps(run_info, indent=2, sort_keys=True))
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise CheckpointError(f"could not write {final} ({exc}); earlier checkpoints are intact") from exc
    return final


def save_lm_checkpoint(root: str | os.PathLike, step: int, model, tokenizer, *, state_dict: dict | None,
                       train_state: dict, run_info: dict, keep_last: int = 2) -> pathlib.Path:
    """``root/step_NNNNNNNN`` atomically, then the ``latest`` pointer; keep the newest ``keep_last``."""
    root = pathlib.Path(root)
    final = save_model_dir(root / f"step_{step:08d}", model, tokenizer, state_dict=state_dict,
                           train_state=train_state, run_info=run_info)
    publish_latest(root, final, keep_last)
    return final


def find_lm_checkpoint(spec: str, output_dir: str | os.PathLike) -> pathlib.Path | None:
    """``"auto"``: the latest checkpoint under ``output_dir`` (None if there is none); else a path."""
    if spec == "auto":
        return latest_checkpoint(pathlib.Path(output_dir) / "checkpoints")
    path = pathlib.Path(spec)
    if path.is_dir() and not (path / "state.pt").is_file():
        path = latest_checkpoint(path) or latest_checkpoint(path / "checkpoints") or path
    if not (path / "state.pt").is_file():
        raise FileNotFoundError(f"--resume: {spec} is not a train-lm checkpoint (no state.pt)")
    return path


def load_train_state(path: pathlib.Path) -> dict:
    return torch.load(path / "state.pt", map_location="cpu", weights_only=True)
