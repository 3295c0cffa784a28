"""Everything a sweep checks before it creates SWEEP_DIR: the config (--config, --set, --seed), the space
file, the recordings (loaded once: the trials' objective is the key that selects best.pt, which depends
on them) and, for an existing sweep, that these are the ones the study was started with."""

from __future__ import annotations

from pathlib import Path

from xfads_cli.atomic import check_writable
from xfads_cli.errors import UsageError
from xfads_cli.sweep.space import load_space, space_dict
from xfads_cli.sweep.study import open_or_create, require_optuna
from xfads_cli.sweep.trial import Setup, experiment_name

BPS_KEYS = ("valid_co_bps", "valid_fp_bps")


def prepare(paths: list[Path], space: Path, out: Path, n_trials: int, *, config_path: Path | None = None,
            overrides: list[str] = (), device: str = "auto", threads: str | None = None,
            log: tuple[str, ...] = ()) -> Setup:
    """The validated Setup of a sweep; creates SWEEP_DIR and the study (or checks the existing one), and
    with --log mlflow the experiment the trials log to."""
    from xfads_cli.config import load_config, resolved_config

    require_optuna()
    if n_trials < 1:
        raise UsageError(f"--trials must be at least 1, got {n_trials}")
    if not paths:
        raise UsageError("xfads sweep needs the recording(s) to fit: xfads sweep DATA... --space FILE --out DIR")
    config = load_config(config_path, list(overrides))
    params = load_space(space, config_path, list(overrides))
    missing = [str(p) for p in paths if not Path(p).exists()]
    if missing:
        raise UsageError(f"DATA not found: {', '.join(missing)}; pass existing recordings (.nwb, .h5) or folders")
    check_writable(Path(out) / "journal.log")  # before the recordings are loaded and checked
    select = objective_key(paths, config)
    meta = {"space": space_dict(params), "data": [str(Path(p).resolve()) for p in paths],
            "config": resolved_config(config), "selected_on": select,
            "direction": "maximize" if select in BPS_KEYS else "minimize"}
    open_or_create(Path(out), meta, n_trials)
    if "mlflow" in log:  # once, under the lock: workers starting together would race to create it
        from xfads_cli.runs.tracking import prepare_mlflow
        from xfads_cli.sweep.locks import exclusive
        from xfads_cli.sweep.study import ASK_LOCK

        with exclusive(Path(out) / ASK_LOCK):
            prepare_mlflow(Path(out), experiment_name(Path(out)))
    return Setup(dir=Path(out), paths=[Path(p) for p in paths], params=params, base=meta["config"],
                 select=select, n_trials=n_trials, device=device, threads=threads, log=tuple(log))


def objective_key(paths: list[Path], config) -> str:
    """The record key every trial is scored on (fitting.selection_key of the recordings), after the
    checks run_fit makes of them, so that data that cannot be fitted fail here and not in every trial."""
    from xfads_cli.fitting import load_fit_sessions, selection_key

    config, sessions, meta = load_fit_sessions(list(paths), config)
    return selection_key(config, sessions, meta)
