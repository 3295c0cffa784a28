"""Data-parallel training over processes: DistributedDataParallel, one process per device.

    torchrun --nproc-per-node K -m xfads_cli fit DATA --out RUN          # one node, K GPUs (or CPU ranks)
    srun --ntasks-per-node K xfads fit DATA --out RUN --distributed      # SLURM tasks, MASTER_ADDR/PORT set

Semantics (train/loop.py):

* train.batch_size is the GLOBAL batch. Every rank draws the same per-epoch permutation (seeded by
  (seed, epoch)) and takes a disjoint 1/K of each global batch (DistributedSampler style:
  indices[rank::K]); the loss is scaled so that DDP's gradient average equals the gradient of the
  single-process loss on the whole global batch. A rank whose share of a (short, last) batch is empty
  gets a zero-weight trial, so every rank runs the same number of steps (or DDP would hang).
* The meta model's batches hold trials of one session; they are split over the ranks in the same way,
  and the once-per-batch terms (the embedding's KL, the adapters' norm) are weighted by each rank's share.
* The loss's Monte Carlo draws are keyed by (seed, epoch, trial), not taken from the global RNG, so a
  trial gets the same draws whichever rank holds it.
* Decisions (divergence, preemption, early stopping, time limit) are reduced or broadcast so all
  ranks take them together; rank 0 alone validates, writes files and logs.
"""

from __future__ import annotations

import gc
import os
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterator

from xfads_cli.errors import UsageError


@dataclass
class Dist:
    """This process's place in the job. world == 1: plain single-process training (no collectives)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    backend: str | None = None  # set while the process group is up

    @property
    def active(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def _comm_device(self):
        import torch

        return torch.device("cuda", self.local_rank) if self.backend == "nccl" else torch.device("cpu")

    def all_sum(self, values: list[float]) -> list[float]:
        """Element-wise sum over ranks (identity on one process)."""
        if not self.active:
            return list(values)
        import torch
        import torch.distributed as tdist

        t = torch.tensor(values, dtype=torch.float64, device=self._comm_device())
        tdist.all_reduce(t)
        return t.tolist()

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's `obj` on every rank (picklable plain data)."""
        if not self.active:
            return obj
        import torch.distributed as tdist

        box = [obj]
        tdist.broadcast_object_list(box, src=0, device=self._comm_device() if self.backend == "nccl" else None)
        return box[0]

    def barrier(self) -> None:
        if self.active:
            import torch.distributed as tdist

            tdist.barrier()

    def wrap(self, module, find_unused_parameters: bool = False):
        """module wrapped in DistributedDataParallel (unchanged on one process)."""
        if not self.active:
            return module
        import inspect

        from torch.nn.parallel import DistributedDataParallel

        device = next(module.parameters()).device
        # The buffers (held-in masks) never change: no per-step buffer broadcast (the keyword was
        # renamed in recent torch releases).
        accepted = inspect.signature(DistributedDataParallel.__init__).parameters
        quiet_buffers = {"forward_sync_buffers": False} if "forward_sync_buffers" in accepted else {"broadcast_buffers": False}
        return DistributedDataParallel(
            module, device_ids=[device] if device.type == "cuda" else None,
            find_unused_parameters=find_unused_parameters, **quiet_buffers,
        )


SINGLE = Dist()


def detect(requested: bool | None = None, environ=None) -> Dist:
    """This process's Dist from the launcher's environment.

    requested None (default): distributed iff torchrun's RANK/WORLD_SIZE say WORLD_SIZE > 1.
    requested True: torchrun's variables, else srun's SLURM_PROCID/SLURM_NTASKS/SLURM_LOCALID (with
    MASTER_ADDR and MASTER_PORT exported by the batch script); an error if neither is there.
    requested False: single process whatever the environment says."""
    env = os.environ if environ is None else environ
    if requested is False:
        return Dist()
    if "RANK" in env and "WORLD_SIZE" in env:
        return Dist(int(env["RANK"]), int(env["WORLD_SIZE"]), int(env.get("LOCAL_RANK", 0)))
    if requested and "SLURM_PROCID" in env and "SLURM_NTASKS" in env:
        missing = [k for k in ("MASTER_ADDR", "MASTER_PORT") if k not in env]
        if missing and int(env["SLURM_NTASKS"]) > 1:
            raise UsageError(f"--distributed under srun needs {' and '.join(missing)} exported "
                             "(the first node's hostname and a free port); see docs/cluster.md")
        return Dist(int(env["SLURM_PROCID"]), int(env["SLURM_NTASKS"]), int(env.get("SLURM_LOCALID", 0)))
    if requested:
        raise UsageError("--distributed: no torchrun (RANK, WORLD_SIZE) or srun (SLURM_PROCID, SLURM_NTASKS) "
                         "environment; launch with 'torchrun --nproc-per-node K -m xfads_cli fit ...'")
    return Dist()


def rank_device(d: Dist, name: str = "auto"):
    """The device of this rank: cuda:LOCAL_RANK when CUDA is used, else the CPU."""
    import torch

    from xfads_cli.train.device import resolve_device

    if not d.active:
        return resolve_device(name)
    if name not in ("auto", "cpu", "cuda"):
        raise UsageError(f"--device {name} with distributed training: each rank uses cuda:LOCAL_RANK; "
                         "pass --device cuda (or auto, or cpu)")
    device = resolve_device(name)
    if device.type == "cuda":
        if d.local_rank >= torch.cuda.device_count():
            raise UsageError(f"rank {d.rank} has LOCAL_RANK {d.local_rank} but only {torch.cuda.device_count()} "
                             "CUDA device(s) are visible; use --nproc-per-node <= the GPU count")
        return torch.device("cuda", d.local_rank)
    return device


@contextmanager
def process_group(d: Dist, device) -> Iterator[Dist]:
    """init_process_group for the block (nccl on CUDA, gloo on CPU), destroyed on exit, also on error."""
    if not d.active:
        yield d
        return
    import torch
    import torch.distributed as tdist

    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(device)
    try:
        tdist.init_process_group(backend, rank=d.rank, world_size=d.world)
    except ValueError as exc:  # missing MASTER_ADDR / MASTER_PORT and the like
        raise UsageError(f"cannot start distributed training: {exc}") from None
    d.backend = backend
    try:
        yield d
        # Ranks leave together (rank 1 would otherwise tear down while rank 0 still evaluates and writes
        # the run); on an error no rank waits here.
        tdist.barrier()
    finally:
        d.backend = None
        # The DDP wrapper's reducer holds the process group and sits in a reference cycle: left to the
        # interpreter's exit, gloo's threads were torn down during finalisation and the rank aborted
        # now and then (SIGABRT, 'terminate called without an active exception') on a loaded machine.
        gc.collect()
        tdist.destroy_process_group()
