"""One sweep trial: the sampled values on top of the sweep's config, an ordinary `run_fit` into
SWEEP_DIR/trials/NNNN (NNNN: the number of the trial that started the directory), and its outcome.

    COMPLETE  the fit ended; value = summary["best_score"] (the key that selects best.pt)
    PRUNED    the pruner stopped it after an epoch: the run directory holds config.yaml, metrics.csv,
              last.pt and best.pt of the epochs done but no summary.json (`xfads fit ... --resume`
              on that directory would continue it)
    FAIL      the fit raised (RunFailure, non-finite losses, out of memory, ...) or the sampled values
              make an invalid config: the message is the trial's user attribute "error"
    requeued  preempted (SIGTERM/SIGUSR1, the sweep's --time-limit) or interrupted (Ctrl-C): FAIL, with
              a replacement enqueued that resumes the same directory (study.requeue)

User attributes of every trial: run_dir (relative to SWEEP_DIR), state, epochs, seconds, score,
selected_on, error.
"""

from __future__ import annotations

import math
import os
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

from xfads_cli.errors import UsageError
from xfads_cli.sweep.locks import exclusive
from xfads_cli.sweep.space import Param, override, suggest
from xfads_cli.sweep.study import ASK_LOCK, requeue, update_best


@dataclass
class Setup:
    """What every trial of the sweep shares (validated before anything was created)."""

    dir: Path
    paths: list[Path]
    params: list[Param]
    base: dict  # the resolved config of --config / --set / --seed
    select: str  # the epoch-record key that selects best.pt: the objective
    n_trials: int
    device: str = "auto"
    threads: str | None = None
    log: tuple[str, ...] = ()  # the experiment trackers of every trial (fit --log)


@dataclass
class Stop:
    """Why the worker should stop (None: keep going). Set by a signal outside training, or by the
    deadline; `forward` re-sends a signal that arrived while a fit was loading its data (before the fit
    installed its own handlers) so that the fit saves and stops."""

    reason: str | None = None
    forwarded: bool = field(default=False)

    def forward(self) -> None:
        if self.reason and not self.forwarded:
            self.forwarded = True
            os.kill(os.getpid(), signal.SIGUSR1)


class _Pruned(Exception):
    """Raised from the progress callback when the pruner stops the trial (after the epoch was saved)."""

    tracking_status = "KILLED"  # its MLflow run's status (runs/tracking.py)


class _Reporter:
    """The `progress` of run_fit: reports the selection score of every epoch to the trial."""

    def __init__(self, trial, stop: Stop):
        self.trial, self.stop, self.select, self.epochs = trial, stop, None, 0

    def resume(self, select: str, best: dict | None, total: int | None = None) -> None:  # noqa: ARG002 - EpochProgress's interface
        self.select = select

    def update(self, record: dict) -> None:
        self.epochs = record["epoch"] + 1
        self.stop.forward()
        value = record.get(self.select)
        if value is None or not math.isfinite(value):
            return
        self.trial.report(float(value), record["epoch"])
        if self.trial.should_prune():
            raise _Pruned(f"pruned after epoch {record['epoch']}")


def run_trial(study, trial, setup: Setup, stop: Stop) -> str:
    """Run `trial` to its outcome; returns its state (COMPLETE, PRUNED, FAIL or requeued)."""
    from optuna.trial import TrialState

    from xfads_cli.config import load_config

    values = suggest(trial, setup.params)
    resume_dir = trial.user_attrs.get("resume_dir")
    rel = resume_dir or f"trials/{trial.number:04d}"
    trial.set_user_attr("run_dir", rel)
    try:
        config = load_config(base=setup.base, overrides=[override(k, v) for k, v in values.items()])
    except UsageError as exc:
        return finish(study, trial, setup, TrialState.FAIL, error=f"invalid config: {exc}")
    reporter, started = _Reporter(trial, stop), time.monotonic()
    before = float(trial.user_attrs.get("seconds_before") or 0.0)
    try:
        kind, detail = fit_trial(setup, config, setup.dir / rel, reporter, resume=resume_dir is not None,
                                 values=values)
    except (UsageError, KeyboardInterrupt) as exc:
        # not the trial's fault (the data do not fit, another process holds the directory) or Ctrl-C:
        # the trial goes back to the queue and the worker stops
        trial.set_user_attr("seconds", before + time.monotonic() - started)
        with exclusive(setup.dir / ASK_LOCK):
            requeue(study, trial, f"{type(exc).__name__}: {exc}")
        raise
    seconds = before + time.monotonic() - started
    if kind == "requeue":  # the fit caught the signal itself: the worker stops too
        stop.reason = stop.reason or detail
        trial.set_user_attr("seconds", seconds)
        with exclusive(setup.dir / ASK_LOCK):
            requeue(study, trial, detail)
        return "requeued"
    common = dict(seconds=seconds, epochs=reporter.epochs, select=setup.select)
    if kind == "pruned":
        return finish(study, trial, setup, TrialState.PRUNED, **common)
    if kind == "fail":
        return finish(study, trial, setup, TrialState.FAIL, error=detail, **common)
    score = detail.get("best_score")
    if score is None or not math.isfinite(score):
        return finish(study, trial, setup, TrialState.FAIL, error="the fit gave no finite validation score", **common)
    common.update(epochs=detail.get("epochs", reporter.epochs), select=detail.get("selected_on", setup.select))
    return finish(study, trial, setup, TrialState.COMPLETE, score=float(score), **common)


def fit_trial(setup: Setup, config, run_dir: Path, reporter: _Reporter, resume: bool,
              values: dict | None = None) -> tuple[str, object]:
    """run_fit, its ending as ("done", summary), ("pruned", message), ("fail", message) or ("requeue",
    reason). UsageError and KeyboardInterrupt propagate. values: the sampled ones (logged with --log)."""
    from xfads_cli.fitting import run_fit
    from xfads_cli.runs.tracking import Target
    from xfads_cli.train.signals import Preempted

    target = Target(store=setup.dir, experiment=experiment_name(setup.dir), run_name=f"trial {run_dir.name}",
                    params=dict(values or {}), tags={"sweep": str(setup.dir.resolve()), "trial": run_dir.name})
    try:
        summary = run_fit(setup.paths, config, run_dir, device=setup.device, overwrite=False,
                          resume="auto" if resume else False, progress=reporter, plot=False, handle_signals=True,
                          threads=setup.threads, log=setup.log, target=target)
    except _Pruned as exc:
        return "pruned", str(exc)
    except Preempted:
        return "requeue", f"preempted ({reporter.stop.reason or 'signal'})"
    except UsageError:
        raise
    except Exception as exc:  # noqa: BLE001 - any failure of the fit is the trial's outcome, the study goes on
        return "fail", f"{type(exc).__name__}: {' '.join(str(exc).split())}"[:500]
    return "done", summary


def experiment_name(sweep_dir: Path) -> str:
    """The MLflow experiment of a sweep's trials (unless $MLFLOW_EXPERIMENT_NAME): its directory's name."""
    return Path(sweep_dir).resolve().name


def finish(study, trial, setup: Setup, state, *, score: float | None = None, error: str | None = None,
           seconds: float = 0.0, epochs: int = 0, select: str | None = None) -> str:
    """Record the outcome (user attributes, then tell) and point SWEEP_DIR/best at the best trial."""
    attrs = {"state": state.name, "score": score, "error": error, "seconds": round(seconds, 3), "epochs": epochs,
             "selected_on": select}
    for key, value in attrs.items():
        trial.set_user_attr(key, value)
    if state.name == "COMPLETE":
        study.tell(trial, score)
        with exclusive(setup.dir / ASK_LOCK):
            update_best(study, setup.dir)
    else:
        study.tell(trial, state=state)
    return state.name
