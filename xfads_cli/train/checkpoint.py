"""Checkpoints: tensors and plain data only, so `torch.load(..., weights_only=True)` can read them and a
checkpoint shared by a colleague cannot run code. Written atomically (temporary file + rename).

    {format, model, optimizer, config, spec, data, versions, epoch, best, rng, history}

last.pt also holds `train_state` (train/loop.py: optimizer, scheduler, counters, RNG, history and
`partial`, the position inside an interrupted epoch) and `best_model`, so a run resumes exactly.

`spec` holds what rebuilding the model needs besides the config (neuron count, held-in mask, bin
width), so every command can rebuild the model from the checkpoint alone.
"""

from __future__ import annotations

from pathlib import Path

from xfads_cli.atomic import atomic_path
from xfads_cli.errors import UsageError

FORMAT = "xfads-checkpoint/1"


def atomic_torch_save(obj: dict, path: Path) -> None:
    import torch

    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def resolve_checkpoint(run: Path, which: str = "best") -> Path:
    """RUN_DIR or a .pt path -> the checkpoint file (best.pt by default, last.pt as a fallback)."""
    run = Path(run)
    if run.is_file():
        return run
    if run.is_dir():
        for name in (f"{which}.pt", "last.pt"):
            if (run / name).is_file():
                return run / name
        raise UsageError(f"{run} holds no checkpoint ({which}.pt or last.pt); pass a run directory written by 'xfads fit'")
    raise UsageError(f"no such run directory or checkpoint: {run}; pass the --out directory of 'xfads fit'")


def load_checkpoint(path: Path) -> dict:
    """Read a checkpoint safely (weights_only) onto the CPU; map it to a device when building the model."""
    import pickle

    import torch

    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UsageError(f"{path} is not a readable xfads checkpoint ({first[:120]})") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise UsageError(f"{path} is not an xfads checkpoint (expected format {FORMAT})")
    return ckpt

