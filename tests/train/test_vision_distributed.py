"""torchrun with 2 CPU processes (gloo): DDP / FSDP2 training runs, metrics agree across ranks."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys

import pytest

from tests.train.test_vision_trainer import TINY


@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_torchrun_two_processes(tmp_path, fashion_dir, strategy):
    out = tmp_path / strategy
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "nalaformer", "train", "--model-kwargs", json.dumps(TINY), "--data-dir", str(fashion_dir),
           "--epochs", "2", "--batch-size", "16", "--max-train-batches", "4", "--tensorboard", "false",
           "--distributed", strategy, "--output-dir", str(out),
           "--device", "cpu"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "x2" in proc.stdout  # both processes joined one run
    with open(out / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["epoch"]) for r in rows] == [1, 2]  # written once, by rank 0
    assert all(0.0 <= float(r["test_top1"]) <= 1.0 for r in rows)
    assert (out / "checkpoints" / "epoch_0001" / "model.safetensors").is_file()
    # the eval set is split without padding: all 128 test images are counted exactly once
    import torch

    state = torch.load(out / "checkpoints" / "epoch_0001" / "state.pt", weights_only=True)
    assert state["epoch"] == 1 and state["metrics"]["count"] == 128
    if strategy == "fsdp":  # resume the sharded run for a third epoch: weights and optimizer state reload
        proc = subprocess.run([*cmd[:cmd.index("--epochs") + 1], "3", *cmd[cmd.index("--epochs") + 2:], "--resume",
                               "auto"], capture_output=True, text=True, env=env, timeout=600)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        assert "resumed from" in proc.stdout
        with open(out / "metrics.csv") as f:
            assert [int(r["epoch"]) for r in csv.DictReader(f)] == [1, 2, 3]
