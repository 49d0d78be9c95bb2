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

import torch

from ..core.checkpoint import STATE_FILE, publish_latest, write_directory_atomic

__all__ = ["save_model_dir", "save_lm_checkpoint", "RUN_FILE"]

RUN_FILE = "run.json"


def save_model_dir(path: str | os.PathLike, model, tokenizer, *, state_dict: dict | None = None,
                   train_state: dict | None = None, run_info: dict | None = None) -> pathlib.Path:
    """Write ``path`` atomically: model (safetensors) + tokenizer [+ state.pt] [+ run.json]."""
    def write(tmp: pathlib.Path) -> None:
        model.save_pretrained(tmp, state_dict=state_dict)
        tokenizer.save_pretrained(tmp)
        if train_state is not None:
            torch.save(train_state, tmp / STATE_FILE)
        if run_info is not None:
            (tmp / RUN_FILE).write_text(json.dumps(run_info, indent=2, sort_keys=True))

    return write_directory_atomic(path, write)


def save_lm_checkpoint(root: str | os.PathLike, step: int, model, tokenizer, *, state_dict: dict | None,
                       train_state: dict, run_info: dict, keep_last: int = 2) -> pathlib.Path:
    """``root/step_NNNNNNNN`` atomically, then the ``latest`` pointer; keep the newest ``keep_last``."""
    root = pathlib.Path(root)
    final = save_model_dir(root / f"step_{step:08d}", model, tokenizer, state_dict=state_dict,
                           train_state=train_state, run_info=run_info)
    publish_latest(root, final, keep_last)
    return final
