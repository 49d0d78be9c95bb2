"""Checkpoint writing and reading failures: any write error keeps the previous checkpoint and leaves no temporary
folder; an unreadable checkpoint is named, and a run falls back to the previous good one."""

from __future__ import annotations

import pytest
import torch

from nalaformer.train.core import checkpoint as ckpt


def _save(root, epoch, value):
    return ckpt.save_checkpoint(root, epoch, model_state={"w": torch.full((3,), float(value))}, ema_state=None,
                                train_state={"epoch": epoch}, keep_last=3)


def test_a_serializer_error_is_a_checkpoint_error_and_leaves_no_temporary_folder(tmp_path, monkeypatch):
    root = tmp_path / "checkpoints"
    _save(root, 0, 0)

    def full_disk(*args, **kwargs):
        raise RuntimeError("Error while serializing: IoError(No space left on device)")  # not an OSError

    monkeypatch.setattr(ckpt, "save_file", full_disk)
    with pytest.raises(ckpt.CheckpointError, match="No space left on device.*epoch_0000 is intact"):
        _save(root, 1, 1)
    assert sorted(p.name for p in root.iterdir()) == ["epoch_0000", "latest"]
    with pytest.raises(ckpt.CheckpointError, match="best.safetensors"):
        ckpt.save_weights_atomic({"w": torch.ones(2)}, tmp_path / "best.safetensors")
    assert list(tmp_path.glob(".best*")) == []


def test_an_unreadable_newest_checkpoint_falls_back_with_a_warning(tmp_path):
    root = tmp_path / "checkpoints"
    _save(root, 0, 0)
    newest = _save(root, 1, 1)
    (newest / "model.safetensors").write_bytes(b"\x00garbage")
    with pytest.warns(RuntimeWarning, match="epoch_0001/model.safetensors is unreadable.*falling back.*epoch_0000"):
        model_state, _, train_state = ckpt.load_checkpoint(root)
    assert train_state["epoch"] == 0 and model_state["w"].tolist() == [0.0, 0.0, 0.0]
    with pytest.raises(ckpt.CheckpointError, match="epoch_0001/model.safetensors is unreadable"):
        ckpt.load_checkpoint(newest)  # a checkpoint named explicitly: no silent substitute


def test_a_corrupt_training_state_is_named_without_torch_advice(tmp_path):
    newest = _save(tmp_path, 0, 0)
    (newest / "state.pt").write_bytes(b"not a zip file")
    with pytest.raises(ckpt.CheckpointError, match="epoch_0000/state.pt is unreadable") as info:
        ckpt.load_checkpoint(newest)
    assert "weights_only=False" not in str(info.value)
