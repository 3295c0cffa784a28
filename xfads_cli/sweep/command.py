"""`xfads sweep` as library functions: a hyperparameter search whose trials are fit runs (xfads_cli/fitting.py,
the library function `xfads fit` calls too). The sweep part sits beside the commands and never imports them.

    sweep(DATA, space, SWEEP_DIR, trials=N)        # one worker here, or workers=K local processes
    sweep(..., worker=True)                        # one worker of many (a SLURM array task)
    sweep_status(SWEEP_DIR, plot=False)            # the trials so far

SWEEP_DIR/journal.log   the Optuna study (JournalStorage, file backend): shared by every worker
SWEEP_DIR/trials/NNNN/  one fit run directory per trial (NNNN: the trial number, 4 digits)
SWEEP_DIR/best          symlink (or a text file holding the path) to the best completed trial's directory
SWEEP_DIR/workers/      one lock file per live worker (a dead worker's trial is requeued)
SWEEP_DIR/mlflow.db     with --log mlflow (and no $MLFLOW_TRACKING_URI): every trial's run (runs/tracking.py)
"""

from __future__ import annotations

import os
from pathlib import Path

from xfads_cli.config import option_items
from xfads_cli.errors import UsageError


def sweep(paths: list[Path], space: Path, out: Path, *, trials: int, workers: int = 1, worker: bool = False,
          worker_index: int | None = None, time_limit_min: float | None = None, config_path: Path | None = None,
          overrides: list[str] = (), seed: int | None = None, device: str = "auto", threads: str | None = None,
          log=()) -> dict:
    """Run the sweep until `trials` trials are finished (or the time limit / a signal stops it); returns
    sweep_status()'s summary plus "stopped" (done, time limit or preempted). log: every trial's experiment
    trackers (fit --log)."""
    from xfads_cli.sweep.local import available_cores, run_local, worker_args
    from xfads_cli.sweep.setup import prepare
    from xfads_cli.sweep.status import status
    from xfads_cli.runs.tracking import check_loggers
    from xfads_cli.sweep.worker import run_worker

    log = check_loggers(log)  # a missing extra: one line, before anything is created
    if workers < 1:
        raise UsageError(f"--workers must be at least 1, got {workers}")
    if worker and workers != 1:
        raise UsageError("--worker runs one worker of a sweep; drop --workers (or drop --worker to start K here)")
    if time_limit_min is not None and time_limit_min <= 0:
        raise UsageError(f"--time-limit must be positive minutes, got {time_limit_min}")
    overrides = [*overrides, *option_items(seed)]
    if workers > 1 and threads is None:
        threads = str(max(1, available_cores() // workers))  # the workers share the cores, never oversubscribe
    setup = prepare(paths, space, out, trials, config_path=config_path, overrides=overrides, device=device,
                    threads=threads, log=log)
    if workers > 1:
        args = worker_args(setup.paths, space, setup.dir, trials, config_path=config_path, overrides=overrides,
                           device=device, threads=threads, log=setup.log)
        stopped = run_local(args, workers, time_limit_min)
    else:
        index = worker_index if worker_index is not None else int(os.environ.get("SLURM_ARRAY_TASK_ID") or 0)
        stopped = run_worker(setup, index, int(setup.base["seed"]), time_limit_min)
    summary = status(setup.dir)
    summary["stopped"] = stopped
    return summary


def sweep_status(sweep_dir: Path, plot: bool = False) -> dict:
    """The trials of the sweep in `sweep_dir` (and, with plot, its PNG plots: "plots", "notes")."""
    from xfads_cli.sweep.status import plot as plot_sweep
    from xfads_cli.sweep.status import status
    from xfads_cli.sweep.study import require_optuna

    require_optuna()
    if plot:  # before reading anything: a missing matplotlib is a one-line error
        from xfads_cli.outputs.plots import require_matplotlib

        require_matplotlib()
    summary = status(Path(sweep_dir))
    if plot:
        summary["plots"], summary["notes"] = plot_sweep(Path(sweep_dir))
    return summary
