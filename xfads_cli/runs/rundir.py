"""The run directory of fit and adapt: created only after the input validated, one writer at a time
(train/lock.py), checkpoints and metrics.csv written atomically as training goes.

    RUN_DIR/config.yaml   resolved config
    RUN_DIR/last.pt       latest state (model, optimizer, scheduler, RNG, history): resumable
    RUN_DIR/best.pt       the model of the epoch train.select picked so far
    RUN_DIR/metrics.csv   one row per epoch
    RUN_DIR/summary.json  final metrics, provenance, versions
    RUN_DIR/tensorboard/, tracking.json, mlflow.db, mlartifacts/   with --log (runs/tracking.py)
"""

from __future__ import annotations

import csv
import io
import json
import shutil
from dataclasses import replace
from pathlib import Path

from xfads_cli.atomic import atomic_path, check_writable, partial_glob
from xfads_cli.errors import UsageError
from xfads_cli.runs.checkpoint import Checkpoint
from xfads_cli.runs.tracking import STATE_FILE, TENSORBOARD_DIR, TRACKING_FILES
from xfads_cli.train.lock import LOCK_NAME

RUN_FILES = ("last.pt", "best.pt", "metrics.csv", "summary.json", "config.yaml", "training.png")


def atomic_text(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def metrics_csv(history: list[dict]) -> str:
    keys: list[str] = []
    for record in history:
        keys += [k for k in record if k not in keys]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=keys, restval="")
    writer.writeheader()
    writer.writerows(history)
    return buf.getvalue()


def check_out(out: Path, overwrite: bool, resume: bool | str) -> bool:
    """Validate --out against --overwrite/--resume, and that it can be written, without changing the
    disk; returns whether the run resumes (resume="auto": iff out holds a last.pt)."""
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} is a file; fit writes a run directory")
    check_writable(out / "config.yaml")
    has_last = (out / "last.pt").is_file()
    if resume == "auto":
        if has_last:
            return True
        # Nothing to resume: start afresh. A run killed before its first epoch ended leaves only
        # config.yaml (and maybe a temporary file); anything else needs --overwrite.
        others = sorted(p.name for p in out.iterdir() if p.name not in ("config.yaml", *TRACKING_FILES)
                        and not p.name.startswith(".")) if out.is_dir() else []
        if others and not overwrite:
            raise UsageError(f"--resume-auto: {out} holds no last.pt but other files ({', '.join(others[:3])}); "
                             "pass --overwrite to replace them or choose another --out")
        return False
    if resume:
        if not has_last:
            raise UsageError(f"--resume: {out} holds no last.pt to resume from; drop --resume to start a new run "
                             "(or use --resume-auto)")
        return True
    if out.is_dir() and any(p.name != LOCK_NAME for p in out.iterdir()) and not overwrite:
        raise UsageError(f"{out} already holds a run; pass --overwrite to replace it or --resume to continue it")
    return False


def create_out(out: Path, fresh: bool) -> None:
    """Make the run directory; a fresh run first removes a previous run's files (and temporary files
    left by a killed writer), its TensorBoard events included (an MLflow store in it is kept: a new
    run is added to it)."""
    out.mkdir(parents=True, exist_ok=True)
    for name in (*RUN_FILES, STATE_FILE):
        for tmp in out.glob(partial_glob(out / name)):
            tmp.unlink(missing_ok=True)
        if fresh and (out / name).exists():
            (out / name).unlink()
    if fresh:
        shutil.rmtree(out / TENSORBOARD_DIR, ignore_errors=True)


def prepare_out(out: Path, overwrite: bool, resume: bool) -> None:
    """check_out + create_out, for callers that have already validated their input."""
    resumed = check_out(out, overwrite, resume)
    create_out(out, fresh=not resumed)


def _remote_fields(data) -> dict:
    """A remote recording's url, etag and size_bytes (it has no sha256: data/provenance.py)."""
    return {k: data.provenance[k] for k in ("url", "etag", "size_bytes") if k in data.provenance}


def data_provenance(data) -> dict:
    return {
        "path": data.provenance.get("path"),
        "sha256": data.provenance.get("sha256"),
        **_remote_fields(data),
        "format": data.provenance.get("format"),
        "session": data.session,
        "bin_ms": data.bin_ms,
        "unit_ids": [str(u) for u in data.unit_ids],
        "heldout": data.heldout.tolist(),
        "trial_ids": [int(t) for t in data.trial_ids],
        "split": [str(s) for s in data.split],
    }


class RunWriter:
    """Writes a run directory as training goes: best.pt when the validation loss improves, last.pt
    and metrics.csv after every epoch (all atomically), summary.json (and plots) at the end. `base`:
    the checkpoint fields that stay the same all run (config, spec, data, versions, adapted_from);
    tracking: the experiment trackers (runs/tracking.py), started here and given each epoch's record."""

    def __init__(self, out: Path, base: Checkpoint, model, state: dict | None = None, tracking=None):
        self.out, self.base, self.model, self.tracking = out, base, model, tracking
        # The best parameters also travel inside last.pt, so a resumed run can still return them.
        self.best_model = state.get("best_model") if state else None
        if tracking:
            tracking.start(base.config, len(state.get("history", [])) if state else None)

    def on_epoch(self, record: dict, is_best: bool, train_state) -> None:
        st = train_state()
        if is_best:
            self.best_model = self._model_copy()
            replace(self.base, model=self.best_model, epoch=record["epoch"], best=st["best"]).save(self.out / "best.pt")
        self._save_last(st, record["epoch"])
        atomic_text(self.out / "metrics.csv", metrics_csv(st["history"]))
        if self.tracking:
            self.tracking.on_epoch(record)

    def on_interrupt(self, train_state) -> None:
        """last.pt with the exact (possibly mid-epoch) state when training is preempted; best.pt and
        metrics.csv are already up to date from the last completed epoch."""
        st = train_state()
        self._save_last(st, st["epoch"])

    def _save_last(self, st: dict, epoch: int) -> None:
        replace(self.base, model=self.model.state_dict(), train_state=st, epoch=epoch, best=st["best"],
                best_model=self.best_model).save(self.out / "last.pt")

    def _model_copy(self) -> dict:
        return {k: v.detach().clone() for k, v in self.model.state_dict().items()}

    def replace_model(self) -> None:
        """best.pt and last.pt with the model's parameters as they are now: after a step that follows
        training (adapt's embedding search), so that every command sees the final model."""
        self.best_model = self._model_copy()
        for name in ("best.pt", "last.pt"):
            ckpt = Checkpoint.load(self.out / name)
            best_model = self.best_model if ckpt.train_state is not None else None  # last.pt's copy
            replace(ckpt, model=self.best_model, best_model=best_model).save(self.out / name)

    def replace_entries(self, keys: list[str]) -> None:
        """The best parameters in best.pt and last.pt with these state_dict entries as the model holds
        them now (quantities computed from the best parameters after training, e.g. the sessions'
        fitted embeddings); last.pt's own parameters, those a resumed run continues from, are kept."""
        state = self.model.state_dict()
        new = {k: state[k].detach().clone() for k in keys}
        if self.best_model is not None:
            self.best_model = {**self.best_model, **new}
        for name in ("best.pt", "last.pt"):
            if not (self.out / name).exists():
                continue
            ckpt = Checkpoint.load(self.out / name)
            if ckpt.train_state is None:
                ckpt = replace(ckpt, model={**ckpt.model, **new})
            elif ckpt.best_model is not None:
                ckpt = replace(ckpt, best_model={**ckpt.best_model, **new})
            ckpt.save(self.out / name)

    def finish(self, summary: dict, history: list[dict], plot: bool) -> dict:
        atomic_text(self.out / "summary.json", json.dumps(summary, indent=2, default=str))
        if plot:
            from xfads_cli.outputs.plots import plot_training

            summary["plots"] = [str(plot_training(history, self.out / "training.png"))]
        if self.tracking:
            self.tracking.finish(summary)
        return summary


def data_summary(data) -> dict:
    return {"path": data.provenance.get("path"), "sha256": data.provenance.get("sha256"), **_remote_fields(data),
            "session": data.session,
            "bin_ms": data.bin_ms, "trials": data.n_trials, "neurons": data.n_neurons, "bins": data.n_time,
            "heldout_neurons": int(data.heldout.sum())}
