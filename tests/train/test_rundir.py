"""One run owns an output folder: a fresh run over an earlier one is refused unless --overwrite; two runs at
once in one folder are refused (a lock)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from nalaformer.train.core.checkpoint import latest_checkpoint
from nalaformer.train.core.rundir import OutputDirError, RunLock, claim_output_dir
from nalaformer.train.vision.train import Trainer
from tests.train.test_vision_trainer import tiny_config


def test_fresh_run_over_an_earlier_one_is_refused_unless_overwrite(tmp_path, fashion_dir):
    Trainer(tiny_config(tmp_path, fashion_dir, epochs=3, max_train_batches=1, max_eval_batches=1)).fit()
    with pytest.raises(OutputDirError, match="holds an earlier run.*--resume auto.*--overwrite true"):
        Trainer(tiny_config(tmp_path, fashion_dir, epochs=1, max_train_batches=1, max_eval_batches=1))
    # --overwrite starts over: the new checkpoint is kept and `latest` points at it (it used to be pruned)
    Trainer(tiny_config(tmp_path, fashion_dir, epochs=1, max_train_batches=1, max_eval_batches=1,
                        overwrite=True)).fit()
    root = tmp_path / "run" / "checkpoints"
    assert latest_checkpoint(root).name == "epoch_0000" and sorted(p.name for p in root.glob("epoch_*")) == [
        "epoch_0000"]
    assert (tmp_path / "run" / "metrics.csv").read_text().count("\n") == 2  # header + the new run's epoch


def test_resume_and_empty_folders_are_allowed(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    claim_output_dir(tmp_path, resume=None, overwrite=False)  # no run files: fine
    (tmp_path / "metrics.csv").write_text("epoch\n1\n")
    claim_output_dir(tmp_path, resume="auto", overwrite=False)
    claim_output_dir(tmp_path, resume=None, overwrite=True)
    assert not (tmp_path / "metrics.csv").exists() and (tmp_path / "notes.txt").read_text() == "mine"


def test_a_second_run_in_a_locked_folder_is_refused(tmp_path):
    code = ("import fcntl, sys, time; f = open(sys.argv[1], 'a+'); fcntl.flock(f, fcntl.LOCK_EX); f.write('4242'); "
            "f.flush(); print('locked', flush=True); time.sleep(60)")
    holder = subprocess.Popen([sys.executable, "-c", code, str(tmp_path / ".lock")], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(OutputDirError, match="in use by another run \\(pid 4242\\)"):
            RunLock(tmp_path).acquire()
    finally:
        holder.kill()
        holder.wait()
    with RunLock(tmp_path):  # free again once the other run is gone
        pass
