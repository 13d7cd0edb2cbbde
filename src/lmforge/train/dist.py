"""Processes: one, or several launched by torchrun (data parallel). Rank 0 alone writes the run directory.

Data parallelism here is plain all-reduce, not DistributedDataParallel: every rank computes its share of the
step's summed loss divided by the targets of *all* ranks, so summing the gradients over ranks (one
all-reduce per step, after the accumulation) gives exactly the single-process gradient of the global batch.
Every rank then takes the same optimizer step on the same summed gradients, so the weights stay identical
on all ranks without ever being broadcast. Collectives run in the same order on every rank: the step's target
count, its loss, its gradients and whether to stop (`any_rank`), plus the barriers around rank 0's writes.

FSDP2 (`torch.distributed.fsdp.fully_shard`, for models that do not fit one device) is not built; it would
slot in at setup() (each Block, then the model, after `model.to(device)`, replacing `sum_gradients`) and
checkpoint.py (sharded state dicts through torch.distributed.checkpoint); see docs/training.md.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

import torch
import torch.distributed as tdist


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0
    local_size: int = 1   # processes on this machine (they share its cores)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1


def init_world(device_type: str) -> World:
    """The process group torchrun describes in the environment (RANK, WORLD_SIZE, LOCAL_RANK), or one process."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1:
        return World()
    if not tdist.is_initialized():
        tdist.init_process_group("nccl" if device_type == "cuda" else "gloo")
    return World(rank=tdist.get_rank(), size=tdist.get_world_size(), local_rank=int(os.environ.get("LOCAL_RANK", 0)),
                 local_size=int(os.environ.get("LOCAL_WORLD_SIZE", size)))


def all_sum(world: World, value: float | int) -> float:
    if not world.distributed:
        return value
    t = torch.tensor([float(value)], dtype=torch.float64)
    tdist.all_reduce(t)
    return t.item()


def any_rank(world: World, flag: bool) -> bool:
    """Whether `flag` is true on any rank: a signal reaches the ranks at different moments, but they must all
    stop (and checkpoint) after the same step, or one would wait forever in a collective the others left."""
    if not world.distributed:
        return bool(flag)
    return all_sum(world, 1.0 if flag else 0.0) > 0


def sum_gradients(world: World, model: torch.nn.Module) -> None:
    """Sum every gradient over the ranks, flattened into one buffer (one collective per step)."""
    if not world.distributed:
        return
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    flat = torch.cat([g.reshape(-1) for g in grads])
    tdist.all_reduce(flat)
    offset = 0
    for g in grads:
        g.copy_(flat[offset: offset + g.numel()].view_as(g))
        offset += g.numel()


def barrier(world: World) -> None:
    if world.distributed:
        tdist.barrier()


@contextlib.contextmanager
def in_turns(world: World):
    """Run the block on rank 0 first, then on the first process of every other node, then on the rest: what
    it writes to a cache (shared, or one per node) is there, complete, before the others look for it."""
    turn = 0 if world.rank == 0 else 1 if world.local_rank == 0 else 2
    for _ in range(turn):
        barrier(world)
    yield
    for _ in range(2 - turn):
        barrier(world)


def shutdown(world: World) -> None:
    if world.distributed and tdist.is_initialized():
        tdist.destroy_process_group()
