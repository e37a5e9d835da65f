"""Resumable training: a loop's full state is saved every few steps, so a killed stage goes on where it stopped.

Why: a training stage killed part way (SIGKILL, out of memory, a closed laptop) should not start over, and the run
that resumes must end bitwise identical to one that was never interrupted. So a checkpoint holds everything the
remaining steps depend on: the weights, the EMA weights, the optimizer and LR-scheduler state, the number of steps
done, every RNG state the loop draws from (its batch generators and torch's global RNG, which seeds dropout), and the
loss-curve rows so far (replayed through `on_step` on resume, so the stage's curves come out complete).

Where: `paths.CHECKPOINTS/<stage>/step-NNNNNNN/`, outside the DVC outputs (DVC deletes a stage's outputs before it
runs the stage). One checkpoint folder holds

    tensors.safetensors   weights, EMA weights, optimizer tensors, RNG states (uint8 tensors)
    state.json            steps done and total, optimizer param_groups, scheduler state, loss-curve rows
    manifest.json         the key digest and the sha256 of the two files above; written last

Only safetensors and JSON: never a pickle (torch.save / torch.load), which could run code when loaded.

Never a partial checkpoint: a checkpoint is written into a hidden temporary folder that is renamed into place
(atelier.io.atomic_dir), and the previous one is deleted only once the new one is in place. On load the manifest's
digests are checked, so a folder whose bytes did not all reach the disk is ignored (and deleted) too.

Never a stale one: a checkpoint carries a key, and is resumed only when the key matches. For a stage the key is what
DVC compares to decide the stage is stale (stage_key): the values of its params and the digests of its deps (code,
training data, upstream models). A checkpoint with another key is ignored and deleted, with a log line.

How often: every CHECKPOINT_EVERY steps, and after the last step (so a run killed while saving its outputs does not
train again). The environment variable ATELIER_CHECKPOINT_EVERY overrides the period (tests use a small one; 0 turns
saving off). The period is not part of the key: it does not change the result, only how much work a kill loses.

A stage calls Checkpointer.clear() once its outputs are written: a finished stage leaves no checkpoint behind.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import struct
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
import yaml
from safetensors.torch import load as load_tensors
from safetensors.torch import save as save_tensors

from atelier import paths
from atelier.hashing import file_sha256
from atelier.io import atomic_dir, remove_stale_temps

CHECKPOINT_EVERY = 100
EVERY_ENV = "ATELIER_CHECKPOINT_EVERY"
FORMAT = 1
TENSORS, STATE, MANIFEST = "tensors.safetensors", "state.json", "manifest.json"
GLOBAL_RNG = "rng.torch_global"


def checkpoint_every() -> int:
    """The checkpoint period in steps: ATELIER_CHECKPOINT_EVERY when set, else CHECKPOINT_EVERY; 0 means never."""
    raw = os.environ.get(EVERY_ENV, "").strip()
    if not raw:
        return CHECKPOINT_EVERY
    if not raw.isdigit():
        raise ValueError(f"{EVERY_ENV} must be a whole number of steps (0: no checkpoints), got {raw!r}")
    return int(raw)


# ---------------------------------------------------------------------------------------------------- the loop's state


@dataclass
class TrainState:
    """What a training loop's remaining steps depend on (references to its live objects), and its progress.

    A loop builds its model, optimizer, scheduler and generators as for a fresh run, wraps them in a TrainState,
    calls resume() (which overwrites them in place from a checkpoint, if there is a valid one), runs the steps
    range(state.step, state.total) and calls record() after each."""

    total: int  # steps of the whole run
    modules: dict[str, torch.nn.Module]
    optimizer: torch.optim.Optimizer
    generators: dict[str, torch.Generator]  # every generator the loop draws batches or noise from
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None
    tensors: dict[str, list[torch.Tensor]] = field(default_factory=dict)  # e.g. EMA weights, restored in place
    checkpoint: Checkpointer | None = None
    on_step: Callable[[int, dict], None] | None = None
    step: int = 0  # steps done
    rows: list[dict] = field(default_factory=list)  # the metrics of each step done (the loss curves)

    def resume(self) -> None:
        """Restore from the checkpoint when one matches, and replay its loss-curve rows through on_step."""
        if self.checkpoint is not None and self.checkpoint.resume(self) and self.on_step is not None:
            for i, row in enumerate(self.rows):
                self.on_step(i, row)

    def record(self, metrics: dict) -> None:
        """One step is done: keep its metrics, report them, and save a checkpoint when one is due."""
        self.rows.append(dict(metrics))
        if self.on_step is not None:
            self.on_step(self.step, metrics)
        self.step += 1
        if self.checkpoint is not None:
            self.checkpoint.save_if_due(self)


def _tensor(t: torch.Tensor) -> torch.Tensor:
    return t.detach().cpu().clone().contiguous()  # own storage: safetensors refuses tensors that share memory


def _on_cpu(t: torch.Tensor) -> torch.Tensor:
    return t.detach().cpu()  # the tensor itself on the CPU (a copy only of a GPU tensor)


def pack(state: TrainState, copy: bool = True) -> tuple[dict[str, torch.Tensor], dict]:
    """(tensors, JSON-able dict) holding the whole state; the inverse of unpack().

    copy=False returns the live tensors (detached) instead of copies: for save(), which writes them out at once and
    changes nothing in between (the copies cost as much as the serialisation)."""
    own = _tensor if copy else _on_cpu
    tensors: dict[str, torch.Tensor] = {GLOBAL_RNG: torch.get_rng_state()}
    for name, module in state.modules.items():
        tensors.update({f"module.{name}.{k}": own(v) for k, v in module.state_dict().items()})
    for name, values in state.tensors.items():
        tensors.update({f"tensors.{name}.{i}": own(v) for i, v in enumerate(values)})
    for name, gen in state.generators.items():
        tensors[f"rng.{name}"] = gen.get_state()
    opt = state.optimizer.state_dict()
    opt_json: dict[str, dict] = {}  # non-tensor per-parameter values (none for AdamW today)
    for index, values in opt["state"].items():
        for k, v in values.items():
            if isinstance(v, torch.Tensor):
                tensors[f"optimizer.{index}.{k}"] = own(v)
            else:
                opt_json.setdefault(str(index), {})[k] = v
    meta = {
        "step": state.step,
        "total": state.total,
        "rows": state.rows,
        "optimizer": {"param_groups": opt["param_groups"], "state": opt_json, "indices": sorted(opt["state"])},
        "scheduler": state.scheduler.state_dict() if state.scheduler is not None else None,
    }
    return tensors, meta


def fits(state: TrainState, tensors: dict[str, torch.Tensor], meta: dict) -> str | None:
    """Why the checkpoint cannot be restored into `state` (other tensor names or shapes), or None when it can.

    Checked before anything is overwritten, so a misfit leaves the freshly built model untouched."""
    if meta.get("total") != state.total or not 0 <= meta.get("step", -1) <= state.total:
        return f"it is for {meta.get('total')} steps, this run has {state.total}"
    for name, module in state.modules.items():
        for k, v in module.state_dict().items():
            got = tensors.get(f"module.{name}.{k}")
            if got is None or got.shape != v.shape or got.dtype != v.dtype:
                return f"its {name} weights do not fit this model ({k})"
    for name, values in state.tensors.items():
        for i, v in enumerate(values):
            got = tensors.get(f"tensors.{name}.{i}")
            if got is None or got.shape != v.shape:
                return f"its {name} tensors do not fit this model"
    missing = [f"rng.{n}" for n in state.generators if f"rng.{n}" not in tensors]
    if missing or (state.scheduler is not None) != (meta.get("scheduler") is not None):
        return "it was made by a different training loop"
    if len(meta["optimizer"]["param_groups"]) != len(state.optimizer.param_groups):
        return "its optimizer does not fit this model"
    return None


def unpack(state: TrainState, tensors: dict[str, torch.Tensor], meta: dict) -> None:
    """Overwrite the live objects of `state` in place with a checkpoint's (check fits() first)."""
    with torch.no_grad():
        for name, module in state.modules.items():
            prefix = f"module.{name}."
            module.load_state_dict({k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)})
        for name, values in state.tensors.items():
            for i, v in enumerate(values):
                v.copy_(tensors[f"tensors.{name}.{i}"])
    opt = meta["optimizer"]
    per_param = {}
    for index in opt["indices"]:
        values = dict(opt["state"].get(str(index), {}))
        prefix = f"optimizer.{index}."
        values.update({k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)})
        per_param[index] = values
    # JSON turned tuples (Adam's betas) into lists; the optimizer wants them back as they were
    groups = [
        {k: (tuple(v) if isinstance(v, list) and k != "params" else v) for k, v in g.items()}
        for g in opt["param_groups"]
    ]
    state.optimizer.load_state_dict({"state": per_param, "param_groups": groups})
    if state.scheduler is not None:
        state.scheduler.load_state_dict(meta["scheduler"])
    for name, gen in state.generators.items():
        gen.set_state(tensors[f"rng.{name}"])
    torch.set_rng_state(tensors[GLOBAL_RNG])
    state.step, state.rows = meta["step"], [dict(r) for r in meta["rows"]]


# ------------------------------------------------------------------------------------------------------ on the disk


def _digest(obj: object) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


# safetensors' dtype names; a tensor of another dtype is written through safetensors.torch.save instead
_SAFETENSORS_DTYPES = {
    torch.float64: "F64",
    torch.float32: "F32",
    torch.float16: "F16",
    torch.bfloat16: "BF16",
    torch.int64: "I64",
    torch.int32: "I32",
    torch.int16: "I16",
    torch.int8: "I8",
    torch.uint8: "U8",
    torch.bool: "BOOL",
}


def _safetensors_chunks(tensors: dict[str, torch.Tensor]) -> list:
    """The bytes of the safetensors file holding `tensors`, as buffers to write one after the other: the header,
    then each tensor's memory as it is (no copy into one bytes object, as safetensors.torch.save makes, after its own
    copy of each tensor). Same format: an 8-byte little-endian header length, the JSON header padded with spaces to
    a multiple of 8, the data (larger elements first, then by name, as safetensors orders it)."""
    if sys.byteorder != "little" or any(t.dtype not in _SAFETENSORS_DTYPES for t in tensors.values()):
        return [save_tensors({k: _tensor(v) for k, v in tensors.items()})]
    header, chunks, offset = {}, [], 0
    for name in sorted(tensors, key=lambda k: (-tensors[k].element_size(), k)):
        t = tensors[name].detach()
        data = t.contiguous().reshape(-1).view(torch.uint8).numpy()
        header[name] = {
            "dtype": _SAFETENSORS_DTYPES[t.dtype],
            "shape": list(t.shape),
            "data_offsets": [offset, offset + data.nbytes],
        }
        chunks.append(data)
        offset += data.nbytes
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    return [struct.pack("<Q", len(text)) + text, *chunks]


def _write(path: Path, chunks: list) -> str:
    """Write the buffers `chunks` to `path` and fsync it; return the sha256 of what was written."""
    digest = hashlib.sha256()
    with open(path, "wb") as fh:
        for chunk in chunks:
            digest.update(chunk)
            fh.write(chunk)
        fh.flush()
        os.fsync(fh.fileno())
    return digest.hexdigest()


class Checkpointer:
    """Saves and restores one training loop's TrainState under `folder`, for runs whose key is `key`.

    `key` is any JSON-able value that identifies what the run computes (stage_key() for a stage); only its digest is
    stored. `label` names the loop in log lines ("train_unet"; default: the folder's name); `every` is the period in
    steps (default: checkpoint_every()). A `read_only` one (the other ranks of a data-parallel run) resumes from the
    checkpoints but never writes or deletes one: rank 0 alone does (atelier/distributed.py)."""

    def __init__(
        self, folder: Path, key: object, label: str | None = None, every: int | None = None, read_only: bool = False
    ):
        self.folder = Path(folder)
        self.label = label or self.folder.name
        self.key = _digest(key)
        self.every = checkpoint_every() if every is None else every
        self.read_only = read_only

    def _say(self, text: str) -> None:
        print(f"{self.label}: {text}", flush=True)

    def _checkpoints(self) -> list[Path]:
        """Complete-looking checkpoint folders, newest first (hidden temporaries are never listed)."""
        if not self.folder.is_dir():
            return []
        return sorted((p for p in self.folder.glob("step-*") if p.is_dir()), reverse=True)

    def _remove_dead_temporaries(self) -> None:
        """Remove temporary folders left by writers that were killed (those of a live writer stay)."""
        if self.folder.is_dir():
            for leftover in self.folder.glob(".step-*"):
                remove_stale_temps(self.folder / leftover.name[1:].split(".", 1)[0])

    def _read(self, folder: Path) -> tuple[dict[str, torch.Tensor], dict] | str:
        """(tensors, state) of a checkpoint folder, or why it cannot be used."""
        try:
            manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return "it is incomplete (no readable manifest)"
        if not isinstance(manifest, dict):
            return "it is corrupt (its manifest is not a JSON object)"
        if manifest.get("format") != FORMAT:
            return f"it has format {manifest.get('format')}, this code reads format {FORMAT}"
        if manifest.get("key") != self.key:
            return "it was made with other params, code or inputs"
        blobs = {}
        for name in (TENSORS, STATE):
            try:
                blobs[name] = (folder / name).read_bytes()
            except OSError:
                return f"it is incomplete ({name} missing)"
            if hashlib.sha256(blobs[name]).hexdigest() != manifest.get("files", {}).get(name):
                return f"it is corrupt ({name} does not match its digest)"
        return load_tensors(blobs[TENSORS]), json.loads(blobs[STATE])

    def resume(self, state: TrainState) -> bool:
        """Restore `state` from the newest valid checkpoint; True when it did. Unusable checkpoints are deleted (unless
        read_only: then only skipped, quietly, since the writer says it)."""
        if not self.read_only:
            self._remove_dead_temporaries()
        for folder in self._checkpoints():
            found = self._read(folder)
            problem = found if isinstance(found, str) else fits(state, *found)
            if problem:
                if not self.read_only:
                    self._say(f"ignoring checkpoint {paths.relative(folder)}: {problem}; deleted")
                    shutil.rmtree(folder, ignore_errors=True)
                continue
            unpack(state, *found)
            if not self.read_only:
                self._say(f"resuming from step {state.step} of {state.total} (checkpoint {paths.relative(folder)})")
            return True
        return False

    def save_if_due(self, state: TrainState) -> None:
        """Save every `every` steps and after the last one (unless `every` is 0, or read_only)."""
        if not self.read_only and self.every > 0 and (state.step % self.every == 0 or state.step == state.total):
            self.save(state)

    def save(self, state: TrainState) -> Path:
        """Write a checkpoint atomically (the manifest last), then delete the older ones; return its folder."""
        tensors, meta = pack(state, copy=False)  # written out before the loop changes them: no copies needed
        files = {TENSORS: _safetensors_chunks(tensors), STATE: [json.dumps(meta, sort_keys=True).encode()]}
        target = self.folder / f"step-{state.step:07d}"
        with atomic_dir(target) as tmp:
            digests = {name: _write(tmp / name, chunks) for name, chunks in files.items()}
            manifest = {"format": FORMAT, "key": self.key, "step": state.step, "total": state.total, "files": digests}
            _write(tmp / MANIFEST, [json.dumps(manifest, indent=2).encode()])
        for older in self._checkpoints():
            if older != target:
                shutil.rmtree(older, ignore_errors=True)
        return target

    def clear(self) -> None:
        """Delete every checkpoint of this loop: its stage has finished and written its outputs."""
        shutil.rmtree(self.folder, ignore_errors=True)


# ------------------------------------------------------------------------------------------------------ stage keys


def _path_digest(path: Path) -> str:
    """sha256 of a file, or of a folder's sorted `relative/path:sha256` lines; 'missing' when absent."""
    if path.is_file():
        return file_sha256(path)
    if path.is_dir():
        files = sorted(f for f in path.rglob("*") if f.is_file())
        return hashlib.sha256("".join(f"{f.relative_to(path)}:{file_sha256(f)}\n" for f in files).encode()).hexdigest()
    return "missing"


def stage_key(stage: str) -> dict:
    """What DVC compares to decide `stage` is stale: the values of its params and the digests of its deps.

    Read from the stage's entry in dvc.yaml, so a checkpoint is resumed only by a run that DVC would consider the same
    (same params, same code, same training data and upstream models)."""
    spec = yaml.safe_load((paths.ROOT / "dvc.yaml").read_text(encoding="utf-8"))["stages"][stage]
    params = yaml.safe_load(paths.PARAMS.read_text(encoding="utf-8"))
    values = {}
    for name in spec.get("params", []):
        value = params
        for part in str(name).split("."):
            value = value.get(part) if isinstance(value, dict) else None
        values[str(name)] = value
    deps = {str(dep): _path_digest(paths.ROOT / dep) for dep in spec.get("deps", [])}
    return {"stage": stage, "params": values, "deps": deps}


def for_stage(stage: str, label: str | None = None, read_only: bool = False) -> Checkpointer:
    """The Checkpointer of a dvc.yaml stage: folder paths.CHECKPOINTS/<stage>, key stage_key(stage)."""
    return Checkpointer(paths.CHECKPOINTS / stage, stage_key(stage), label or stage, read_only=read_only)
