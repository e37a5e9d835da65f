"""Data-parallel training: a stage re-launched under torchrun, one process per share of the global batch.

How a training stage uses it (stages/train_diffusion.py; the LoRA loop the same way):

    if distributed.must_launch(p.processes):              # in the stage's own process, when processes > 1
        distributed.launch("stages.train_diffusion", p.processes, p.device)  # torchrun; waits; raises on failure
        return ...                                        # rank 0 wrote the outputs
    with distributed.process_group(p.device, p.processes) as group:  # in each launched process (or the only one)
        ckpt = checkpoint.for_stage(stage, read_only=not group.is_main)  # rank 0 alone writes checkpoints
        model = train(..., group=group, checkpoint=ckpt)  # the loop calls group.wrap / group.share / group.mean
    if not group.is_main:
        return {}                                         # the other ranks exit cleanly
    ... save, write curves, register (rank 0 only, after the group is gone) ...

`launch` runs `python -m torch.distributed.run --standalone --nproc_per_node N -m <module>` with LAUNCHED_ENV set, so
the launched processes train instead of launching again, and waits. A rank that fails makes torchrun stop the others
and exit non-zero; `launch` then raises DistributedFailed naming the rank that failed first and its error (an error
raised inside process_group is noted with its time; the others' lost connections come after it). The launched
processes die with their launcher (Linux: PR_SET_PDEATHSIG), so a killed stage leaves no rank training on its own.

Inside the loop, a Group gives
    group.rank, group.world, group.device, group.is_main
    group.wrap(model)      DistributedDataParallel around the model (the model itself when world is 1)
    group.share(n)         this rank's slice of a global batch of n (n must divide by world)
    group.mean(x)          the mean over the ranks of a scalar tensor (x itself when world is 1)
    group.same(value, what)  raise when the ranks disagree on an int (e.g. the step a checkpoint resumed at)

The global batch is drawn on every rank from the same seeded generator and sliced with group.share, so the ranks see
the samples a single process would; with DDP's gradient averaging the update is that of the mean loss over the global
batch. Backend: gloo on the CPU, NCCL on GPUs (one GPU per rank, cuda:LOCAL_RANK). With world 1 nothing here touches
the loop's numbers: a one-process run is bitwise the same as a loop that never heard of groups.
"""

from __future__ import annotations

import ctypes
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist

LAUNCHED_ENV = "ATELIER_DISTRIBUTED_LAUNCHED"  # set by launch() for the processes torchrun starts
FAILURES_ENV = "ATELIER_DISTRIBUTED_FAILURES"  # a folder where a failing rank notes its error for launch()
PR_SET_PDEATHSIG = 1


class DistributedFailed(RuntimeError):
    """A launched training process failed (or the launcher did): the stage fails with this message."""


def resolve_device(device: str, local_rank: int = 0) -> torch.device:
    """The torch device of params `device` (auto | cpu | cuda) for the process of `local_rank` on this machine."""
    if device not in ("auto", "cpu", "cuda"):
        raise ValueError(f"train_diffusion.device {device!r} is not one of auto, cpu, cuda")
    if device == "cpu" or (device == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise DistributedFailed(
            "train_diffusion.device is cuda but torch sees no GPU on this machine: set device: "
            "auto or cpu, or install a CUDA build of torch"
        )
    return torch.device("cuda", local_rank)


def must_launch(processes: int) -> bool:
    """True in a stage's own process when it should re-launch itself under torchrun (processes > 1)."""
    return processes > 1 and not launched()


def launched() -> bool:
    """True in a process started by torchrun (ours, or a user's own torchrun command)."""
    return os.environ.get(LAUNCHED_ENV) == "1" or "TORCHELASTIC_RUN_ID" in os.environ


def _die_with_parent() -> None:
    """Ask Linux to SIGKILL this process when its parent dies (no-op elsewhere); exit now if it is already gone.

    Also run between fork and exec for torchrun (subprocess's preexec_fn): prctl is looked up beforehand, so the
    child only makes one system call."""
    if _PRCTL is not None:
        _PRCTL(PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() == 1:
            os._exit(1)


_PRCTL = ctypes.CDLL(None, use_errno=True).prctl if sys.platform.startswith("linux") else None


def launch(module: str, processes: int, device: str = "auto") -> None:
    """Run `python -m module` in `processes` processes under torchrun on this machine and wait for them.

    Output streams through; raises DistributedFailed naming the failed rank when any process (or torchrun) fails."""
    if device == "cuda" or (device == "auto" and torch.cuda.is_available()):
        resolve_device(device)
        if torch.cuda.device_count() < processes:
            raise DistributedFailed(
                f"train_diffusion.processes is {processes} on GPUs but this machine has "
                f"{torch.cuda.device_count()}: set processes to at most that, or device: cpu"
            )
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}", "-m", module]
    print(f"{module}: training in {processes} processes: {' '.join(cmd[1:])}", flush=True)
    tail: deque[str] = deque(maxlen=200)
    with tempfile.TemporaryDirectory(prefix="atelier-ranks-") as failures:
        env = dict(os.environ, **{LAUNCHED_ENV: "1", FAILURES_ENV: failures})
        proc = subprocess.Popen(
            cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, preexec_fn=_die_with_parent
        )
        try:
            for line in proc.stdout:
                sys.stdout.write(line)
                sys.stdout.flush()
                tail.append(line)
            code = proc.wait()
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        noted = sorted(json.loads(f.read_text()) for f in Path(failures).glob("rank-*.json"))
    if code != 0:
        if noted:  # the first error noted; the other ranks' errors (a lost connection) follow from it
            who = f"rank {noted[0][1]} failed first: {noted[0][2]}"
        else:  # failed outside the training group (rank 0 saving or registering), or torchrun itself
            first = re.search(r"Root Cause.*?^\s*rank\s*:\s*(\d+)", "".join(tail), flags=re.S | re.M)
            who = f"rank {first.group(1)} failed" if first else "a process failed"
        raise DistributedFailed(
            f"{module}: training in {processes} processes under torchrun failed ({who}; "
            f"torchrun exit code {code}); the failing rank's error is printed above. Fix it and "
            "run the stage again: it resumes from its last checkpoint"
        )


def _note_failure(rank: int, error: BaseException) -> None:
    """Note this rank's error, with the time, for launch() to name the rank that failed first."""
    folder = os.environ.get(FAILURES_ENV)
    if folder:
        note = [time.time_ns(), rank, f"{type(error).__name__}: {error}"[:500]]
        (Path(folder) / f"rank-{rank}.json").write_text(json.dumps(note))


@dataclass(frozen=True)
class Group:
    """This process's place in the training group: rank of world, on `device` (world 1: a single process)."""

    rank: int = 0
    world: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that keeps the EMA, writes checkpoints and outputs, and registers the model."""
        return self.rank == 0

    def wrap(self, model: torch.nn.Module) -> torch.nn.Module:
        """The model to call in the loop: DistributedDataParallel around `model` (which is returned when world is 1)."""
        if self.world == 1:
            return model
        ids = [self.device.index] if self.device.type == "cuda" else None
        return torch.nn.parallel.DistributedDataParallel(model, device_ids=ids)

    def share(self, n: int) -> slice:
        """This rank's slice of a global batch of `n` samples (equal shares)."""
        if n % self.world:
            raise ValueError(
                f"a global batch of {n} does not divide into {self.world} equal shares: make "
                "batch_size a multiple of processes"
            )
        size = n // self.world
        return slice(self.rank * size, (self.rank + 1) * size)

    def mean(self, value: torch.Tensor) -> torch.Tensor:
        """The mean over the ranks of the scalar tensor `value` (the value itself when world is 1)."""
        if self.world == 1:
            return value
        total = value.detach().clone()
        dist.all_reduce(total, op=dist.ReduceOp.SUM)
        return total / self.world

    def same(self, value: int, what: str) -> None:
        """Raise when the ranks do not all hold the same `value` (`what` names it in the error)."""
        if self.world == 1:
            return
        found = [None] * self.world
        dist.all_gather_object(found, int(value))
        if len(set(found)) != 1:
            raise DistributedFailed(
                f"the training processes disagree on {what}: {found} (by rank); run the stage "
                "again, and delete .atelier/checkpoints/ if it persists"
            )


@contextmanager
def process_group(device: str, processes: int) -> Iterator[Group]:
    """This process's Group for the body: the torchrun process group (gloo on the CPU, NCCL on GPUs) when launched,
    else a group of one on `device`. The process group is destroyed on exit."""
    if not launched():
        yield Group(device=resolve_device(device))
        return
    world, rank = int(os.environ["WORLD_SIZE"]), int(os.environ["RANK"])
    if world != processes:
        raise DistributedFailed(
            f"this process was launched as one of {world} but train_diffusion.processes is "
            f"{processes}: run the stage itself (it launches torchrun), or match the numbers"
        )
    _die_with_parent()
    where = resolve_device(device, int(os.environ.get("LOCAL_RANK", "0")))
    if where.type == "cuda":
        torch.cuda.set_device(where)
    dist.init_process_group("nccl" if where.type == "cuda" else "gloo", rank=rank, world_size=world)
    try:
        yield Group(rank, world, where)
    except BaseException as error:
        if not (isinstance(error, SystemExit) and error.code in (0, None)):
            _note_failure(rank, error)
        raise
    finally:
        dist.destroy_process_group()
