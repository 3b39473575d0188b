"""Spreading the embed stage over processes, GPUs and machines with torch.distributed.

``torchrun --nproc_per_node=N -m stages.embed <ds>`` starts N copies of the stage; ``distributed_run``
joins them into one process group (gloo on CPU, nccl on GPU) from torchrun's environment
variables, and is a no-op for a plain ``python -m stages.embed``. Each split is cut into exact,
contiguous, disjoint shards of whole batches (``EmbedRun.shard``), not DistributedSampler's padded,
strided ones: every image is embedded once, in the same batch as in a single-process run, so the
merged array is the single-process array. ``write_rows`` streams each rank's rows to rank 0, which
appends them in manifest order to the one output file; memory stays flat on every rank.
"""

from __future__ import annotations

import contextlib
import math
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from petprobe.outputs import NpyRowWriter, atomic_dir

__all__ = ["EmbedRun", "distributed_run", "shard_bounds"]

# Rows travel to rank 0 in messages of about this size, whatever the split's length.
_MESSAGE_BYTES = 16 << 20


def shard_bounds(n_rows: int, batch_size: int, rank: int, world_size: int) -> range:
    """Rows of ``rank``'s shard: a contiguous run of whole batches; together the shards tile ``range(n_rows)``."""
    n_batches = math.ceil(n_rows / batch_size)
    first, last = n_batches * rank // world_size, n_batches * (rank + 1) // world_size
    return range(min(first * batch_size, n_rows), min(last * batch_size, n_rows))


@dataclass(frozen=True)
class EmbedRun:
    """This process's place in the run: rank 0 of 1 without torchrun."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None

    @property
    def is_writer(self) -> bool:
        return self.rank == 0

    def shard(self, n_rows: int, batch_size: int) -> range:
        return shard_bounds(n_rows, batch_size, self.rank, self.world_size)

    @contextlib.contextmanager
    def output_dir(self, path: Path) -> Iterator[Path | None]:
        """The atomic output folder on rank 0 (see ``outputs.atomic_dir``); None on the other ranks."""
        if not self.is_writer:
            yield None
            return
        with atomic_dir(path) as tmp:
            yield tmp

    def write_rows(self, blocks: Iterator[np.ndarray], path: Path | None, *, n_rows: int, dim: int,
                   batch_size: int, device: torch.device) -> None:
        """Rank 0: write its own blocks, then every other rank's shard in rank order, to ``path``.
        Other ranks: spool their blocks to a local temporary file, then send it to rank 0."""
        # nccl moves only GPU tensors, gloo CPU tensors.
        wire = device if self.backend == "nccl" else torch.device("cpu")
        chunk = max(1, _MESSAGE_BYTES // (4 * dim))
        if self.is_writer:
            with NpyRowWriter(path, (n_rows, dim)) as writer:
                for block in blocks:
                    writer.append(block)
                for rank in range(1, self.world_size):
                    todo = len(shard_bounds(n_rows, batch_size, rank, self.world_size))
                    while todo:
                        buffer = torch.empty((min(chunk, todo), dim), dtype=torch.float32, device=wire)
                        dist.recv(buffer, src=rank)
                        writer.append(buffer.cpu().numpy())
                        todo -= len(buffer)
            return
        # A rank may finish long before rank 0 asks for its rows; spooling to disk keeps it from
        # holding its whole shard in memory meanwhile.
        with tempfile.TemporaryFile() as spool:
            n = 0
            for block in blocks:
                spool.write(np.ascontiguousarray(block, dtype=np.float32).data)
                n += len(block)
            spool.seek(0)
            while n:
                rows = min(chunk, n)
                block = np.frombuffer(spool.read(rows * dim * 4), dtype=np.float32).reshape(rows, dim)
                dist.send(torch.from_numpy(block.copy()).to(wire), dst=0)
                n -= rows


@contextlib.contextmanager
def distributed_run() -> Iterator[EmbedRun]:
    """Join torchrun's process group when started by torchrun (WORLD_SIZE > 1), else run alone."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size == 1:
        yield EmbedRun()
        return
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(local_rank)
    dist.init_process_group(backend)
    try:
        yield EmbedRun(dist.get_rank(), dist.get_world_size(), local_rank, backend)
        dist.barrier()  # no rank leaves (and tears the group down) while rank 0 still receives
    finally:
        dist.destroy_process_group()
