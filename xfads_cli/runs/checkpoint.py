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


# A single-session model's own parameters and buffers held top-level keys before the model kept every
# session's in `sessions` (model/session.py); these move to sessions.0.*. Exact names, or prefixes ending in ".".
_SESSION_KEYS = ("heldin", "rate_ceiling", "input_precision", "readout.", "likelihood.", "input_readout.",
                 "input_drive.")
_BUFFERS = ("heldin", "rate_ceiling", "input_precision")
# The parameter order of the single-session model now (the order Adam's moments are saved in), by the
# old names: session 0's parameters right after the dynamics, readout before likelihood.
_ONE_SESSION_ORDER = ("m0", "raw_q0", "raw_q", "dynamics.", "readout.", "likelihood.", "input_readout.",
                      "input_drive.", "local.", "backward.")


def _matches(key: str, names: tuple[str, ...]) -> int | None:
    """The index of the first of `names` that is `key` or, ending in ".", a prefix of it."""
    return next((i for i, n in enumerate(names) if key == n or (n.endswith(".") and key.startswith(n))), None)


def _session_state(state: dict) -> dict:
    """A model state_dict in the per-session layout: a single-session model's own keys under
    sessions.0., every session without a forecast cap given none (inf: runs saved before the cap,
    and meta runs, which had none, forecast as they did), and every read-in session without a fitted
    embedding an unknown one (zeros)."""
    import torch

    from xfads_cli.model.embedding_init import LADDER, SIGNATURE_SIZE

    if "readout.weight" in state:
        state = {(f"sessions.0.{k}" if _matches(k, _SESSION_KEYS) is not None else k): v for k, v in state.items()}
    out = dict(state)
    embed = state.get("embedder.proj.weight")
    for key, weight in state.items():
        if key.startswith("sessions.") and key.endswith(".readout.weight"):
            out.setdefault(key[: -len("readout.weight")] + "rate_ceiling",
                           torch.full((weight.shape[0],), float("inf"), dtype=weight.dtype))
        if embed is not None and key.startswith("sessions.") and key.endswith(".read_in.weight"):
            # meta runs saved before the fitted embedding was kept: unknown (zero variance), as for adapted sessions
            out.setdefault(key[: -len("read_in.weight")] + "fitted_embedding",
                           torch.zeros((2, embed.shape[0] // 2), dtype=weight.dtype))
            # ... and from before the sessions' signatures were kept: unknown
            out.setdefault(key[: -len("read_in.weight")] + "signature_ladder",
                           torch.zeros((len(LADDER), SIGNATURE_SIZE), dtype=weight.dtype))
            # ... and from before the sessions' embedding offsets: none
            out.setdefault(key[: -len("read_in.weight")] + "embedding_offset",
                           torch.zeros(embed.shape[0] // 2, dtype=weight.dtype))
    return out


def _session_moments(optimizer: dict, old_keys: list[str]) -> dict:
    """Adam's saved moments (indexed by parameter position) in today's parameter order of a
    single-session model whose state_dict had old_keys: the same but for a Gaussian likelihood's
    variance (now after the readout) and the task inputs' terms (now before the encoders)."""
    names = [k for k in old_keys if k not in _BUFFERS]
    rank = [_matches(name, _ONE_SESSION_ORDER) for name in names]
    order = sorted(range(len(names)), key=lambda i: rank[i])  # stable: a module's own order is kept
    whole = list(range(len(names)))
    groups = optimizer.get("param_groups") or []
    if None in rank or order == whole or len(groups) != 1 or list(groups[0].get("params", [])) != whole:
        return optimizer  # the order is the same (the usual case), or not a whole-model optimizer
    state = optimizer.get("state", {})
    return {**optimizer, "state": {new: state[old] for new, old in enumerate(order) if old in state}}


def _per_session_layout(raw: dict) -> dict:
    """Checkpoints from before the one model class (model/xfads.py XFADS with per-session modules): the
    model and best_model state_dicts in the per-session layout, and last.pt's optimizer moments in the
    model's parameter order."""
    model = raw.get("model")
    if not isinstance(model, dict):
        return raw
    out = {**raw, "model": _session_state(model)}
    if isinstance(raw.get("best_model"), dict):
        out["best_model"] = _session_state(raw["best_model"])
    train_state = raw.get("train_state")
    if "readout.weight" in model and isinstance(train_state, dict) and isinstance(train_state.get("optimizer"), dict):
        out["train_state"] = {**train_state, "optimizer": _session_moments(train_state["optimizer"], list(model))}
    return out


# The steps that bring a checkpoint of each readable format up to what this version reads, in order.
# The format string has stayed "xfads-checkpoint/1" (new checkpoints still load in older versions), so
# its steps recognise what they fix by content and leave a current checkpoint as it is. A layout change
# that older versions cannot read gets a new format string, and a step here from the previous one.
MIGRATIONS = {
    FORMAT: (_meta_hyper_hidden, _drop_removed_keys, _per_session_layout),
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
