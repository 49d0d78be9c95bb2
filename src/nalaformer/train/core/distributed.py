"""torchrun-aware process setup, model wrapping (DDP / FSDP) and metric reduction."""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

__all__ = ["DistEnv", "init_distributed", "wrap_model", "all_reduce_sum", "full_state_dict", "barrier", "uncompiled",
           "apply_gradients", "no_sync_if", "unwrap"]


@dataclass(frozen=True)
class DistEnv:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def init_distributed(device: str = "auto") -> DistEnv:
    """Read torchrun's environment; start the process group (NCCL on GPU, gloo on CPU)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda":
        torch.cuda.set_device(local)
        dev = torch.device("cuda", local)
    else:
        dev = torch.device(device)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
    return DistEnv(rank, world, local, dev)


def wrap_model(model: torch.nn.Module, env: DistEnv, strategy: str) -> torch.nn.Module:
    """DDP (default) or FSDP (full sharding) around ``model``; unchanged on one process."""
    if not env.distributed:
        return model
    if strategy == "ddp":
        from torch.nn.parallel import DistributedDataParallel

        return DistributedDataParallel(model, device_ids=[env.local_rank] if env.device.type == "cuda" else None)
    if strategy == "fsdp":
        from torch.distributed.fsdp import FullyShardedDataParallel

        return FullyShardedDataParallel(model, use_orig_params=True,
                                        device_id=env.device if env.device.type == "cuda" else None)
    raise ValueError(f"--distributed: expected 'ddp' or 'fsdp', got {strategy!r}")


def uncompiled(model: torch.nn.Module) -> torch.nn.Module:
    """The module under a ``torch.compile`` wrapper (itself when not compiled)."""
    return getattr(model, "_orig_mod", model)


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The plain model under ``torch.compile`` and DDP/FSDP wrappers (its state-dict keys are the model's own)."""
    model = uncompiled(model)
    return getattr(model, "module", model)


def full_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Unsharded state dict (gathered on every rank for FSDP; plain for DDP / single process)."""
    from torch.distributed.fsdp import FullyShardedDataParallel as FSDP

    model = uncompiled(model)
    if isinstance(model, FSDP):
        from torch.distributed.fsdp import FullStateDictConfig, StateDictType

        with FSDP.state_dict_type(model, StateDictType.FULL_STATE_DICT, FullStateDictConfig(offload_to_cpu=True)):
            return model.state_dict()
    return unwrap(model).state_dict()


def all_reduce_sum(values: list[float], env: DistEnv) -> list[float]:
    """Sum scalars over ranks (float64) — used for loss/accuracy counts."""
    if not env.distributed:
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device=env.device)
    dist.all_reduce(t)
    return t.tolist()


def barrier(env: DistEnv) -> None:
    if env.distributed:
        dist.barrier()


def apply_gradients(model: torch.nn.Module, optimizer, scaler=None, clip: float | None = None) -> None:
    """Unscale (fp16), clip the global gradient norm (FSDP's own clip for sharded grads), step, zero."""
    if scaler is not None:
        scaler.unscale_(optimizer)
    if clip:
        fsdp_clip = getattr(model, "clip_grad_norm_", None)  # FSDP: a norm over all shards
        if fsdp_clip is not None:
            fsdp_clip(clip)
        else:
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
    if scaler is not None:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()
    optimizer.zero_grad(set_to_none=True)


@contextlib.contextmanager
def no_sync_if(model: torch.nn.Module, skip_sync: bool):
    """Skip the gradient all-reduce on accumulation micro-steps (DDP/FSDP ``no_sync``)."""
    if skip_sync and hasattr(model, "no_sync"):
        with model.no_sync():
            yield
    else:
        yield
