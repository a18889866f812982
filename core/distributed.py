"""Running under `torchrun`: one process per device, PyTorch's own distributed runtime.

    torchrun --standalone --nproc_per_node=8 "$(which genreid)" train generator --data ... --out ...

`torchrun` sets RANK, LOCAL_RANK and WORLD_SIZE; without them everything here is a no-op
(one process, rank 0 of 1), so the same code runs alone, on one node, or on several. CUDA
ranks talk over NCCL, CPU ranks over gloo.

How a batch is split: every rank draws the whole (global) batch with the same seeded
generator and keeps its own contiguous rows (`Context.shard`). N ranks together therefore
compute exactly the single-process batch, each on a disjoint shard, and DDP averages the
gradients: one step on N processes equals one step on one process over the same batch
(for networks without batch statistics; tests/test_distributed.py checks it).
"""

from __future__ import annotations

import datetime
import gc
import os
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist

from .device import pick_device


def launched() -> bool:
    """Whether this process was started by torchrun (or another launcher setting WORLD_SIZE)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


@dataclass
class Context:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        """Rank 0: the only process that writes checkpoints, logs and progress bars."""
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1

    def shard(self, x: torch.Tensor) -> torch.Tensor:
        """This rank's contiguous rows of a tensor drawn for the whole batch."""
        if not self.active:
            return x
        if len(x) % self.world:
            raise ValueError(f"a batch of {len(x)} does not split over {self.world} processes: "
                             f"use a batch size (and batch parts) divisible by {self.world}")
        n = len(x) // self.world
        return x[self.rank * n:(self.rank + 1) * n]

    def rows(self, n: int) -> slice:
        """This rank's part of n items for inference (as even as possible; the last ranks
        may get one fewer)."""
        bounds = np.linspace(0, n, self.world + 1).round().astype(int)
        return slice(int(bounds[self.rank]), int(bounds[self.rank + 1]))

    def mean(self, values: torch.Tensor) -> torch.Tensor:
        """Average of a tensor over ranks (every rank must call it)."""
        if not self.active:
            return values
        values = values.detach().clone()
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
        return values / self.world

    def gather_rows(self, x: np.ndarray) -> np.ndarray:
        """Every rank's rows (from `rows`), concatenated in rank order, on every rank."""
        if not self.active:
            return x
        parts: list[np.ndarray | None] = [None] * self.world
        dist.all_gather_object(parts, x)  # small arrays (features): pickled through the backend
        return np.concatenate(parts)

    def check_same(self, value, what: str) -> None:
        """Raise on every rank unless all ranks hold the same value (e.g. the step they resume
        from: several nodes must share the work folder)."""
        if not self.active:
            return
        values: list = [None] * self.world
        dist.all_gather_object(values, value)
        if any(v != values[0] for v in values):
            raise ValueError(f"the processes disagree on {what} ({values}, by rank): on several "
                             "machines the work folder, the output folder and the data must be "
                             "on a file system that every machine sees")

    def barrier(self) -> None:
        if self.active:
            dist.barrier()


_context = Context()


def context() -> Context:
    return _context


def setup(device: str = "auto") -> tuple[Context, torch.device]:
    """Join the process group when launched by torchrun; returns (context, this rank's device).

    Idempotent. On CUDA each rank takes the GPU of its LOCAL_RANK."""
    global _context
    if not launched():
        return _context, pick_device(device)
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    chosen = pick_device(device)
    if chosen.type == "cuda" and chosen.index is None:
        chosen = torch.device("cuda", local_rank)
    if chosen.type == "cuda":
        torch.cuda.set_device(chosen)
    if not dist.is_initialized():
        backend = "nccl" if chosen.type == "cuda" else "gloo"
        # A rank that is sampling a preview grid keeps the others waiting at their next
        # all-reduce: allow that for a while before calling the job dead.
        dist.init_process_group(backend, timeout=datetime.timedelta(minutes=30))
    _context = Context(dist.get_rank(), dist.get_world_size(), local_rank)
    return _context, chosen


def teardown(wait: bool = True) -> None:
    """Leave the process group, if in one. wait: first meet every rank at a barrier (after a
    command that finished); without it (after a failure) leave at once, since ranks that
    failed elsewhere or still wait in a collective would never arrive."""
    global _context
    if dist.is_initialized():
        if wait:
            dist.barrier()
        # DDP wrappers left in reference cycles would otherwise be freed at interpreter exit,
        # after the group is gone, with gloo's worker threads still holding their work
        gc.collect()
        dist.destroy_process_group()
    _context = Context()
