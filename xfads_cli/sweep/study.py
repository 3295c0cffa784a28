"""The Optuna study of a sweep, in SWEEP_DIR/journal.log (JournalStorage, file backend): workers on any
node that sees SWEEP_DIR cooperate through it, without a database server.

Trials and what counts toward N: every trial is COMPLETE, PRUNED, FAIL (counted), or RUNNING / WAITING.
A trial that stopped without an outcome (its worker preempted, interrupted or killed) is marked FAIL
and a replacement with the same parameters is enqueued, carrying resume_dir and resumes (the old number):
the next worker continues the same run directory (run_fit(resume="auto")). Replaced trials are not
counted, so each logical trial counts once. Asking (and requeueing the trials of dead workers)
happens under SWEEP_DIR/.ask.lock, so two workers never take the same slot.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from xfads_cli.errors import UsageError
from xfads_cli.sweep.locks import alive, exclusive

STUDY = "xfads-sweep"
JOURNAL = "journal.log"
ASK_LOCK = ".ask.lock"
LAYOUT = (JOURNAL, ASK_LOCK, "trials", "workers")
INSTALL_HINT = "xfads sweep needs optuna: pip install 'xfads[sweep]'"


def require_optuna():
    """The optuna module, or a UsageError with the install hint."""
    try:
        import optuna
    except ImportError:
        raise UsageError(INSTALL_HINT) from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


def storage(sweep_dir: Path):
    require_optuna()
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    return JournalStorage(JournalFileBackend(str(Path(sweep_dir) / JOURNAL)))


def is_sweep(sweep_dir: Path) -> bool:
    return (Path(sweep_dir) / JOURNAL).is_file()


def open_or_create(sweep_dir: Path, meta: dict, n_trials: int) -> None:
    """Create the study (first call) or check that `meta` (space, data, config) is the stored one."""
    optuna = require_optuna()
    sweep_dir = Path(sweep_dir)
    if sweep_dir.exists() and not sweep_dir.is_dir():
        raise UsageError(f"--out {sweep_dir} is a file; sweep writes a directory")
    # (a sweep being created by a worker started at the same time holds only LAYOUT so far)
    if sweep_dir.is_dir() and not is_sweep(sweep_dir) and any(p.name not in LAYOUT for p in sweep_dir.iterdir()):
        raise UsageError(f"{sweep_dir} is not empty and holds no sweep ({JOURNAL}); choose another --out")
    (sweep_dir / "trials").mkdir(parents=True, exist_ok=True)  # an existing sweep has it already
    # under the lock: a worker started at the same time waits until the first one has stored the meta
    with exclusive(sweep_dir / ASK_LOCK):
        study = optuna.create_study(study_name=STUDY, storage=storage(sweep_dir), direction=meta["direction"],
                                    load_if_exists=True)
        if "space" in study.user_attrs:
            check_meta(study, meta, sweep_dir)
        else:
            for key, value in meta.items():
                study.set_user_attr(key, value)
        study.set_user_attr("n_trials", n_trials)


def load(sweep_dir: Path, sampler=None, pruner=None):
    optuna = require_optuna()
    if not is_sweep(sweep_dir):
        raise UsageError(f"{sweep_dir} holds no sweep ({JOURNAL}); pass the --out of an 'xfads sweep'")
    return optuna.load_study(study_name=STUDY, storage=storage(sweep_dir), sampler=sampler, pruner=pruner)


def check_meta(study, meta: dict, sweep_dir: Path) -> None:
    stored = study.user_attrs
    names = {"space": "--space", "data": "DATA", "config": "config (--config, --set, --seed)"}
    for key, what in names.items():
        if json.dumps(stored.get(key), sort_keys=True) != json.dumps(meta[key], sort_keys=True):
            raise UsageError(f"{sweep_dir} holds a sweep with another {what}; rerun with the same DATA, --space, "
                             "--config and --set to continue it, or choose another --out")


def replaced(trials) -> set[int]:
    """Numbers of the trials that a later (enqueued) trial continues."""
    return {t.user_attrs["resumes"] for t in trials if t.user_attrs.get("resumes") is not None}


def counted(trials) -> list:
    """The logical trials: every trial but the replaced ones, so each counts once whatever its attempts."""
    gone = replaced(trials)
    return [t for t in trials if t.number not in gone]


def finished(trials) -> list:
    return [t for t in counted(trials) if t.state.is_finished()]


def next_trial(study, sweep_dir: Path, n_trials: int, worker: str):
    """A trial for `worker` (a requeued one first), or None when N trials are finished or taken."""
    from optuna.trial import TrialState

    with exclusive(Path(sweep_dir) / ASK_LOCK):
        requeue_dead(study, sweep_dir)
        trials = study.get_trials(deepcopy=False)
        waiting = any(t.state == TrialState.WAITING for t in trials)
        if not waiting and len(counted(trials)) >= n_trials:
            return None
        trial = study.ask()
        trial.set_user_attr("worker", worker)
        return trial


def worker_lock(sweep_dir: Path, worker: str) -> Path:
    return Path(sweep_dir) / "workers" / f"{worker}.lock"


def requeue_dead(study, sweep_dir: Path) -> list[int]:
    """Requeue the RUNNING trials whose worker no longer holds its lock (killed outright, node lost).
    Called under the ask lock, which a worker holds from ask() until the trial names its worker."""
    from optuna.trial import TrialState

    dead = [t for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
            if "worker" not in t.user_attrs or not alive(worker_lock(sweep_dir, t.user_attrs["worker"]))]
    for t in dead:
        requeue(study, t, "its worker died")
        if "worker" in t.user_attrs:  # the dead worker's lock file (names are unique: no live worker has it)
            worker_lock(sweep_dir, t.user_attrs["worker"]).unlink(missing_ok=True)
    return [t.number for t in dead]


def requeue(study, trial, reason: str) -> None:
    """Enqueue the continuation of `trial` (same parameters, same run directory), then mark it FAIL: it
    no longer counts (`counted`). Enqueue first: a worker dying in between leaves a RUNNING trial that
    is already replaced, which the next requeue only marks FAIL."""
    from optuna.trial import TrialState

    if trial.number not in replaced(study.get_trials(deepcopy=False)):
        attrs = trial.user_attrs
        study.enqueue_trial(dict(trial.params), user_attrs={
            "resume_dir": attrs.get("run_dir"), "resumes": trial.number, "requeue_reason": reason,
            "seconds_before": attrs.get("seconds", attrs.get("seconds_before", 0.0))})
    study.tell(trial.number, state=TrialState.FAIL)


def update_best(study, sweep_dir: Path) -> None:
    """Point SWEEP_DIR/best at the best completed trial's run directory: a symlink swapped in atomically
    (os.replace of a new link), or a text file holding the path where symlinks fail."""
    from xfads_cli.atomic import partial_name
    from xfads_cli.runs.rundir import atomic_text

    try:
        target = study.best_trial.user_attrs.get("run_dir")
    except ValueError:  # no completed trial yet
        return
    if not target:
        return
    best = Path(sweep_dir) / "best"
    tmp = partial_name(best)
    try:
        tmp.unlink(missing_ok=True)
        os.symlink(target, tmp, target_is_directory=True)
        os.replace(tmp, best)
    except OSError:
        tmp.unlink(missing_ok=True)
        if best.is_symlink():
            best.unlink()
        atomic_text(best, f"{target}\n")
