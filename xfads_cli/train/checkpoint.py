"""Checkpoints: tensors and plain data only, so `torch.load(..., weights_only=True)` can read them and a
checkpoint shared by a colleague cannot run code. Written atomically (temporary file + rename).

`Checkpoint` is what every command writes and reads; on disk it is a plain dict with its fields as keys:

    format        "xfads-checkpoint/1"
    config        the resolved config (`config.resolved_config`)
    spec          what rebuilding the model needs besides the config (neuron count, held-in mask, bin
                  width; for the meta model {"kind": "meta", "sessions": [...]}), so that every command
                  can rebuild the model from the checkpoint alone
    data          data provenance (rundir.py `data_provenance`): one dict, a list for the meta model
    versions      package versions of the writer
    adapted_from  (adapted runs only) {checkpoint, sha256, trials}: the run `xfads adapt` started from
    model         the model's state_dict
    epoch         the last completed epoch (of best.pt: the best epoch)
    best          {epoch, score, key}: the best epoch so far and the score that chose it
    train_state   (last.pt only) train/loop.py's state: optimizer, epoch, `partial` (the position inside
                  an interrupted epoch), counters, budget, history, best, rng
    best_model    (last.pt only) the best epoch's state_dict or None, so a resumed run can return it

Checkpoints written by older versions are brought up to date in one place, `migrate`, which `load`
applies.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from xfads_cli.atomic import atomic_path
from xfads_cli.errors import UsageError, first_line

FORMAT = "xfads-checkpoint/1"


@dataclass
class Checkpoint:
    config: dict
    spec: dict
    data: dict | list | None = None
    versions: dict = dataclasses.field(default_factory=dict)
    model: dict = dataclasses.field(default_factory=dict)
    epoch: int = -1
    best: dict | None = None
    train_state: dict | None = None
    best_model: dict | None = None
    adapted_from: dict | None = None
    format: str = FORMAT

    def to_dict(self) -> dict:
        """The on-disk layout. train_state and best_model go together (last.pt); adapted_from only when set."""
        raw = {"format": self.format, "config": self.config, "spec": self.spec, "data": self.data,
               "versions": self.versions}
        if self.adapted_from is not None:
            raw["adapted_from"] = self.adapted_from
        raw["model"] = self.model
        if self.train_state is not None:
            raw["train_state"] = self.train_state
        raw["epoch"], raw["best"] = self.epoch, self.best
        if self.train_state is not None:
            raw["best_model"] = self.best_model
        return raw

    def save(self, path: Path) -> None:
        import torch

        with atomic_path(Path(path)) as tmp:
            torch.save(self.to_dict(), tmp)

    @classmethod
    def load(cls, path: Path) -> "Checkpoint":
        """Read a checkpoint safely (weights_only) onto the CPU and migrate it; map it to a device when
        building the model."""
        raw = migrate(_read(Path(path)))
        missing = [key for key in ("config", "spec", "model") if key not in raw]
        if missing:
            raise UsageError(f"{path} is not a complete xfads checkpoint (it has no {' or '.join(missing)})")
        return cls(**{f.name: raw[f.name] for f in dataclasses.fields(cls) if f.name in raw})


def _read(path: Path) -> dict:
    import pickle

    import torch

    try:
        raw = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError) as exc:
        raise UsageError(f"{path} is not a readable xfads checkpoint ({first_line(exc, 160, sentence=True)}); the file is damaged "
                         "or incomplete, copy it again") from None
    if not isinstance(raw, dict) or raw.get("format") not in MIGRATIONS:
        raise UsageError(f"{path} is not an xfads checkpoint (expected format {FORMAT})")
    return raw



def _meta_hyper_hidden(raw: dict) -> dict:
    """Meta runs from before model.hyper_hidden existed had an MLP hypernetwork of encoder_hidden units
    (the default is now 0, a linear map)."""
    model = raw["config"].get("model", {}) if isinstance(raw.get("config"), dict) else {}
    if model.get("kind") == "meta" and "hyper_hidden" not in model:
        raw = {**raw, "config": {**raw["config"], "model": {**model, "hyper_hidden": model.get("encoder_hidden", 64)}}}
    return raw


def _drop_removed_keys(raw: dict) -> dict:
    """Config keys that are no longer read (config.REMOVED_KEYS, e.g. train.device) leave old checkpoints
    silently; in a user's config file or --set they are ignored with a warning."""
    from xfads_cli.config import REMOVED_KEYS

    config = raw.get("config")
    for dotted in REMOVED_KEYS:
        section, _, key = dotted.partition(".")
        part = config.get(section) if isinstance(config, dict) else None
        if isinstance(part, dict) and key in part:
            config = {**config, section: {k: v for k, v in part.items() if k != key}}
    return raw if config is raw.get("config") else {**raw, "config": config}


# The steps that bring a checkpoint of each readable format up to what this version reads, in order.
# The format string has stayed "xfads-checkpoint/1" (new checkpoints still load in older versions), so
# its steps recognise what they fix by content and leave a current checkpoint as it is. A layout change
# that older versions cannot read gets a new format string, and a step here from the previous one.
MIGRATIONS = {
    FORMAT: (_meta_hyper_hidden, _drop_removed_keys),
}


def migrate(raw: dict) -> dict:
    """The checkpoint dict `raw` (as torch.load reads it) in the current layout."""
    for step in MIGRATIONS[raw["format"]]:
        raw = step(raw)
    return raw


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
