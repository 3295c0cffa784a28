"""A run: the model of a checkpoint rebuilt from it alone, with the config it was trained with.

    run = load_run("runs/lorenz")                # Run(model, config, checkpoint, path, sha256)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from xfads_cli.config import Config, load_config
from xfads_cli.data.source import is_remote
from xfads_cli.errors import UsageError
from xfads_cli.model.spec import ModelSpec, build_model
from xfads_cli.runs.checkpoint import Checkpoint


@dataclass
class Run:
    model: torch.nn.Module
    config: Config
    checkpoint: Checkpoint
    path: Path
    sha256: str

    @property
    def spec(self) -> ModelSpec:
        return ModelSpec.of(self.checkpoint.spec)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype


# What a command reading a run may change with --set: how the recording is read, and how inference
# draws and batches. Everything else is the model the checkpoint holds.
READING_SECTIONS = ("data.", "eval.")
READING_KEYS = ("seed", "train.batch_size", "model.mode", "model.samples")


def load_run(run: Path, device: str = "auto", which: str = "best", overrides=()) -> Run:
    """The model of a run directory's checkpoint (`which`.pt, else last.pt) or of a .pt file, rebuilt
    on `device` from the checkpoint alone (older checkpoints migrated: runs/checkpoint.py). overrides:
    a reading command's --set items (READING_SECTIONS and READING_KEYS), applied to the run's config in its one parse."""
    from xfads_cli.data.provenance import file_sha256
    from xfads_cli.runs.checkpoint import resolve_checkpoint
    from xfads_cli.train.device import resolve_device

    for item in overrides:
        key = item.partition("=")[0].strip()
        if not (key.startswith(READING_SECTIONS) or key in READING_KEYS):
            raise UsageError(f"--set {key}: this command uses the run's own model and training options; only "
                             "data.*, eval.*, seed, train.batch_size, model.mode and model.samples can be set "
                             "here (refit with 'xfads fit' to change the rest)")
    path = resolve_checkpoint(run, which)
    ckpt = Checkpoint.load(path)
    config = load_config(base=ckpt.config, overrides=overrides)
    model = build_model(config, ckpt.spec, resolve_device(device))
    model.load_state_dict(ckpt.model)
    model.eval()
    return Run(model, config, ckpt, path, file_sha256(path))


def run_inputs(run_path: Path, *data_paths: Path) -> list[Path]:
    """The files a command reading the run `run_path` (a directory or a .pt file) and `data_paths` must
    never write to: the recordings (local ones: a URL is never written) and the checkpoints."""
    run_path = Path(run_path)
    local = [Path(p) for p in data_paths if not is_remote(p)]
    return [*local, run_path, run_path / "best.pt", run_path / "last.pt"]


def require_meta(run: Run, command: str) -> None:
    if not run.spec.meta:
        raise UsageError(
            f"{run.path} is a single-session XFADS run; '{command}' needs a meta-dynamical run "
            "(fit several recordings, or --set model.kind=meta)"
        )
