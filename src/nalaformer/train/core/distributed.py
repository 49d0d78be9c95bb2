"""torchrun-aware process setup, model wrapping (DDP / FSDP2) and metric reduction.

State dicts go through ``torch.distributed.checkpoint.state_dict`` (``get_*_state_dict`` / ``set_*_state_dict``),
which handle plain, DDP and FSDP2 models alike; we publish full (unsharded) state dicts as safetensors."""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

__all__ = ["DistEnv", "init_distributed", "wrap_model", "is_sharded", "all_reduce_sum", "full_state_dict",
           "full_optimizer_state", "load_full_state", "barrier", "uncompiled", "apply_gradients", "no_sync_if",
           "unwrap"]


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


def wrap_model(model: torch.nn.Module, env: DistEnv, strategy: str,
               shard_units: tuple[type[torch.nn.Module], ...] = ()) -> torch.nn.Module:
    """DDP (default) or FSDP2 around ``model``; unchanged on one process.

    FSDP2 (``fully_shard``) shards every module of a ``shard_units`` type (its parameters are gathered just
    for its own forward/backward), then the rest at the root; it changes ``model`` in place and returns it."""
    if strategy not in ("ddp", "fsdp"):
        raise ValueError(f"--distributed: expected 'ddp' or 'fsdp', got {strategy!r}")
    if not env.distributed:
        return model
    if strategy == "ddp":
        from torch.nn.parallel import DistributedDataParallel

        return DistributedDataParallel(model, device_ids=[env.local_rank] if env.device.type == "cuda" else None)
    from torch.distributed.fsdp import fully_shard

    for module in list(model.modules())[1:]:
        if shard_units and isinstance(module, shard_units):
            fully_shard(module)
    return fully_shard(model)


def is_sharded(model: torch.nn.Module) -> bool:
    """True for a model sharded with FSDP2 (its parameters are DTensor shards)."""
    from torch.distributed.fsdp import FSDPModule

    return isinstance(uncompiled(model), FSDPModule)


def uncompiled(model: torch.nn.Module) -> torch.nn.Module:
    """The module under a ``torch.compile`` wrapper (itself when not compiled)."""
    return getattr(model, "_orig_mod", model)


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The model under ``torch.compile`` and DDP (FSDP2 shards in place: the model itself)."""
    model = uncompiled(model)
    from torch.nn.parallel import DistributedDataParallel

    return model.module if isinstance(model, DistributedDataParallel) else model


_FULL = dict(full_state_dict=True, cpu_offload=True)


def full_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The unsharded model state dict, keys as the plain model's (``torch.distributed.checkpoint``'s helper:
    FSDP2 shards are gathered to rank 0 on the CPU; the other ranks get an empty dict)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    return get_model_state_dict(unwrap(model), options=StateDictOptions(**_FULL))


def full_optimizer_state(model: torch.nn.Module, optimizer) -> dict:
    """The optimizer state keyed by parameter names (unsharded, on rank 0 for FSDP2)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

    return get_optimizer_state_dict(unwrap(model), optimizer, options=StateDictOptions(**_FULL))


def load_full_state(model: torch.nn.Module, optimizer, model_state: dict | None = None,
                    optimizer_state: dict | None = None) -> None:
    """Load full (unsharded) states on every rank; FSDP2 keeps each rank's shard.

    ``optimizer_state`` is the name-keyed form of :func:`full_optimizer_state` or, from checkpoints written
    before FSDP2, ``optimizer.state_dict()``'s index-keyed form (loadable unsharded only)."""
    from torch.distributed.checkpoint.state_dict import (StateDictOptions, set_model_state_dict,
                                                         set_optimizer_state_dict)

    model, options = unwrap(model), StateDictOptions(full_state_dict=True)
    if model_state is not None:
        set_model_state_dict(model, model_state, options=options)
    if optimizer_state is None:
        return
    if any(isinstance(k, int) for k in optimizer_state.get("state", {})):  # the index-keyed form
        if is_sharded(model):
            raise ValueError("--resume: this checkpoint's optimizer state predates FSDP2 (index-keyed); resume it "
                             "once with --distributed ddp (or on one process), which re-saves it in the new form")
        optimizer.load_state_dict(optimizer_state)
        return
    set_optimizer_state_dict(model, optimizer, optimizer_state, options=options)


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
    """Unscale (fp16), clip the global gradient norm, step, zero."""
    if scaler is not None:
        scaler.unscale_(optimizer)
    if clip:
        torch.nn.utils.clip_grad_norm_(model.parameters(), clip)  # FSDP2's DTensor grads: a norm over all shards
    if scaler is not None:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()
    optimizer.zero_grad(set_to_none=True)


@contextlib.contextmanager
def no_sync_if(model: torch.nn.Module, skip_sync: bool):
    """Skip the gradient reduction on accumulation micro-steps (DDP ``no_sync``; FSDP2
    ``set_requires_gradient_sync``)."""
    plain = uncompiled(model)
    if not skip_sync:
        yield
    elif is_sharded(plain):
        plain.set_requires_gradient_sync(False)
        try:
            yield
        finally:
            plain.set_requires_gradient_sync(True)
    elif hasattr(plain, "no_sync"):
        with plain.no_sync():
            yield
    else:
        yield
