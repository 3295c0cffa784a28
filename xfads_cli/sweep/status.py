"""`xfads sweep --status SWEEP_DIR`: the trials (one row per logical trial: a requeued trial shows as
its continuation), the best one, and with --plot the optimisation history and parameter importances."""

from __future__ import annotations

import math
import sys
from pathlib import Path

from xfads_cli.errors import UsageError
from xfads_cli.sweep.study import counted, finished, load


def status(sweep_dir: Path) -> dict:
    """The sweep as plain data (what --json prints)."""
    sweep_dir = Path(sweep_dir)
    study = load(sweep_dir)
    trials = study.get_trials(deepcopy=False)
    by_number = {t.number: t for t in trials}
    rows = [row(t, by_number) for t in counted(trials)]
    complete = [r for r in rows if r["state"] == "COMPLETE"]
    attrs = study.user_attrs
    higher = attrs.get("direction") == "maximize"
    best = max(complete, key=lambda r: r["score"] if higher else -r["score"]) if complete else None
    states = [r["state"] for r in rows]
    return {"sweep_dir": str(sweep_dir), "selected_on": attrs.get("selected_on"), "direction": attrs.get("direction"),
            "n_trials": attrs.get("n_trials"), "finished": len(finished(trials)),
            "counts": {s: states.count(s) for s in sorted(set(states))}, "best": best, "trials": rows}


def row(t, by_number: dict) -> dict:
    """One trial; a WAITING continuation shows the parameters, directory and time of the trial it resumes."""
    attrs = t.user_attrs
    score = attrs.get("score")
    resumed = by_number.get(attrs.get("resumes"))
    params = dict(t.params) or (dict(resumed.params) if resumed is not None else {})
    return {"number": t.number, "state": t.state.name, "params": params,
            "score": score if score is not None and math.isfinite(score) else None,
            "epochs": attrs.get("epochs"), "seconds": attrs.get("seconds", attrs.get("seconds_before")),
            "run_dir": attrs.get("run_dir") or attrs.get("resume_dir"), "resumes": attrs.get("resumes"),
            "error": attrs.get("error")}


def render(summary: dict) -> None:
    """A rich table of the trials on stderr, then the best trial."""
    from rich.console import Console
    from rich.table import Table

    console = Console(stderr=True)
    if not console.is_terminal:  # a log file: no truncated columns
        console = Console(stderr=True, width=200)
    keys = sorted({k for r in summary["trials"] for k in r["params"]})
    table = Table(title=f"xfads sweep {summary['sweep_dir']}: {summary['finished']}/{summary['n_trials']} trials "
                        f"finished, objective {summary['selected_on']} ({summary['direction']})")
    for name in ("trial", *keys, "score", "state", "epochs", "seconds", "run dir"):
        table.add_column(name, justify="left" if name in ("state", "run dir") else "right")
    for r in summary["trials"]:
        state = r["state"] + (f" (resumes {r['resumes']})" if r["resumes"] is not None else "")
        table.add_row(str(r["number"]), *[cell(r["params"].get(k)) for k in keys], cell(r["score"]), state,
                      cell(r["epochs"]), cell(r["seconds"]), r["run_dir"] or "")
    console.print(table)
    best = summary["best"]
    if best:
        console.print(f"best: trial {best['number']}, {summary['selected_on']}={cell(best['score'])}, "
                      f"{best['run_dir']} (also {summary['sweep_dir']}/best)")
    for r in summary["trials"]:
        if r["state"] == "FAIL" and r["error"]:
            print(f"trial {r['number']} failed: {r['error']}", file=sys.stderr)


def cell(value) -> str:
    if value is None:
        return "-"
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def plot(sweep_dir: Path) -> tuple[list[str], list[str]]:
    """history.png (and importances.png with 2+ completed trials) in SWEEP_DIR; (files, notes)."""
    from xfads_cli.outputs.plots import require_matplotlib

    require_matplotlib()
    import warnings

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as vis

    study = load(sweep_dir)
    done = [t for t in study.get_trials(deepcopy=False) if t.state.name == "COMPLETE"]
    if not done:
        raise UsageError(f"{sweep_dir} has no completed trial yet: nothing to plot; run the sweep first")
    files, notes = [], []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # optuna's ExperimentalWarning for the matplotlib plots
        jobs = [("history.png", vis.plot_optimization_history)]
        if len(done) >= 2:
            jobs.append(("importances.png", vis.plot_param_importances))
        else:
            notes.append("parameter importances need at least 2 completed trials")
        for name, draw in jobs:
            try:
                ax = draw(study)
            except (ValueError, RuntimeError) as exc:
                notes.append(f"{name}: {exc}")
                continue
            fig = ax.figure if hasattr(ax, "figure") else ax.flat[0].figure
            fig.savefig(Path(sweep_dir) / name, dpi=100, bbox_inches="tight")
            plt.close(fig)
            files.append(str(Path(sweep_dir) / name))
    return files, notes
