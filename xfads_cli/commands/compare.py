"""`xfads compare`: XFADS and the comparison kinds (model/comparison.py: the same generative model with
another inference network) fitted to the same recording with the same config, split, seed and wall
budget, each into an ordinary run directory, and one table of what they reach.

    DIR/<kind>/       the run directory `xfads fit --set model.kind=<kind>` writes (smooth, forecast read it)
    DIR/summary.json  {"kinds": {kind: row}, "baselines": {...}, "data": {...}, "config": {...}}

The fits run one after another in this process, or, with workers=K, as K `python -m xfads_cli fit`
processes at once, each with cores // K threads (unless --threads): their timings (s/epoch, and the
epochs a time limit allows) then compete for the cores and the memory bandwidth, and are not those of
a fit alone.
"""

from __future__ import annotations

import csv
import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from xfads_cli.atomic import check_writable
from xfads_cli.config import load_config, option_items, resolved_config
from xfads_cli.errors import RunFailure, UsageError, closest, first_line
from xfads_cli.progress import log

KINDS = ("xfads", "dkf", "dvbf", "latent_sde")
MULTI_SESSION = ("xfads",)  # the kinds that fit several recordings (as the meta model)
# the scores of a row, from the run's metrics (test split)
SCORES = {"fp_bps": "test_fp_bps", "co_bps": "test_co_bps", "retest_bps": "test_retest_bps"}
# the trivial baselines and the oracle (simulated data: the true rates), from the first run's metrics
REFERENCES = {"fp_baseline_bps": "test_fp_baseline_bps", "co_baseline_bps": "test_co_baseline_bps",
              "fp_oracle_bps": "test_fp_oracle_bps", "co_oracle_bps": "test_co_oracle_bps",
              "retest_oracle_bps": "test_retest_oracle_bps"}


@dataclass
class Plan:
    """What every fit of the comparison gets (the same for each kind but model.kind)."""

    paths: list
    out: Path
    config_path: Path | None
    overrides: list[str]
    max_epochs: int | None
    time_limit_min: float | None
    device: str
    threads: str | None
    overwrite: bool
    quiet: bool
    errors: dict = field(default_factory=dict)  # kind -> why its fit failed

    def run_dir(self, kind: str) -> Path:
        return self.out / kind


def parse_kinds(text: str | list[str] | tuple) -> list[str]:
    """'xfads,dkf' -> ['xfads', 'dkf'], checked: known kinds, each once, at least one."""
    items = text.split(",") if isinstance(text, str) else list(text)
    kinds = [k.strip() for k in items if k.strip()]
    valid = ", ".join(KINDS)
    if not kinds:
        raise UsageError(f"--kinds names no model kind; give some of {valid}, comma-separated")
    for kind in kinds:
        if kind not in KINDS:
            raise UsageError(f"--kinds: unknown model kind '{kind}'{closest(kind, KINDS)}; valid kinds: {valid}")
    repeated = sorted({k for k in kinds if kinds.count(k) > 1})
    if repeated:
        raise UsageError(f"--kinds names {repeated[0]} twice; give each kind once (they share the seed and split)")
    return kinds


def compare(paths: list, out: Path, *, kinds: str | list[str] = ",".join(KINDS), config_path: Path | None = None,
            overrides=(), seed: int | None = None, max_epochs: int | None = None, time_limit_min: float | None = None,
            workers: int = 1, device: str = "auto", threads: str | None = None, overwrite: bool = False,
            quiet: bool = False) -> dict:
    """Fit each kind to `paths` into out/<kind> (same config, split, seed, budget: time_limit_min minutes
    EACH), then write out/summary.json and return it: {"kinds": {kind: row}, "baselines", "data",
    "config"}, plus "failed" (kind -> message) when a fit failed at run time (the other kinds still run).
    A row: run_dir, epochs, best_epoch, stopped, seconds, s_per_epoch, parameters (trainable, of best.pt),
    fp_bps, co_bps, retest_bps, retest_ratio (test split; None where the data give no such score), metrics
    (the run's test-split scores). Bad input raises UsageError before anything is written."""
    kinds = parse_kinds(kinds)
    _check_budget(max_epochs, time_limit_min, workers)
    overrides = [*overrides, *option_items(seed, max_epochs, time_limit_min)]
    configs = {kind: load_config(config_path, [*overrides, f"model.kind={kind}"]) for kind in kinds}
    _check_recordings(paths, configs)
    out = Path(out)
    _check_out(out, overwrite)
    plan = Plan(list(paths), out, config_path, overrides, max_epochs, time_limit_min, device, threads, overwrite, quiet)
    if workers > 1 and len(kinds) > 1:
        _fit_in_parallel(plan, kinds, workers)
    else:
        _fit_in_turn(plan, kinds, configs)
    summary = _summary(plan, kinds, configs[kinds[0]])
    from xfads_cli.runs.rundir import atomic_text

    atomic_text(out / "summary.json", json.dumps(summary, indent=2, default=str))
    return summary


def _check_budget(max_epochs: int | None, time_limit_min: float | None, workers: int) -> None:
    if workers < 1:
        raise UsageError(f"--workers must be at least 1, got {workers}")
    if max_epochs is not None and max_epochs < 1:
        raise UsageError(f"--max-epochs must be >= 1, got {max_epochs}")
    if time_limit_min is not None and not time_limit_min > 0:  # also NaN
        raise UsageError(f"--time-limit must be > 0 minutes (each kind's budget), got {time_limit_min:g}; "
                         "e.g. --time-limit 5")


def _check_recordings(paths: list, configs: dict) -> None:
    """Local files exist; several recordings only for kinds that fit several (checked before any fit,
    so that no kind is fitted before another one refuses the input)."""
    from xfads_cli.data.sessions import expand_sources
    from xfads_cli.data.source import is_remote

    if not paths:
        raise UsageError("xfads compare needs a recording: xfads compare DATA --out DIR")
    for path in paths:
        if not is_remote(path) and not Path(path).exists():
            raise UsageError(f"no such file: {path}; check the path (NWB .nwb or HDF5 .h5 files are supported)")
    n = len(expand_sources(paths, next(iter(configs.values())).data))
    single = [k for k in configs if k not in MULTI_SESSION]
    if n > 1 and single:
        raise UsageError(f"model.kind={single[0]} fits one recording and {n} were given; compare on one DATA file "
                         "(or fit several with --kinds xfads, the multi-session model)")


def _check_out(out: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} is a file; xfads compare writes a directory (one run directory per kind)")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise UsageError(f"{out} already holds files; pass --overwrite to replace the comparison or choose another --out")
    check_writable(out / "summary.json")


def _fit_in_turn(plan: Plan, kinds: list[str], configs: dict) -> None:
    """The fits one after another in this process; a fit that fails at run time is recorded in
    plan.errors and the next kind runs (bad input stops the comparison: every kind would refuse it)."""
    from xfads_cli.fitting import run_fit
    from xfads_cli.progress import EpochProgress
    from xfads_cli.train.signals import Preempted

    for i, kind in enumerate(kinds, 1):
        log(f"compare: fitting {kind} ({i}/{len(kinds)}) into {plan.run_dir(kind)}", plan.quiet)
        try:
            with EpochProgress(configs[kind].train.max_epochs, quiet=plan.quiet) as progress:
                run_fit(plan.paths, configs[kind], plan.run_dir(kind), device=plan.device, overwrite=plan.overwrite,
                        max_epochs=plan.max_epochs, progress=progress, threads=plan.threads)
        except RunFailure as exc:
            plan.errors[kind] = first_line(exc)
            log(f"compare: {kind} failed: {plan.errors[kind]}")
        except Preempted as exc:
            raise Preempted(f"{kind}: {exc}; xfads compare does not resume: continue that run with xfads fit "
                            f"--resume, or rerun the comparison with --overwrite") from None


def worker_threads(threads: str | None, workers: int) -> str:
    """Each of `workers` fits' threads: --threads, else $XFADS_THREADS, else an equal share of the cores."""
    from xfads_cli.train.threads import ENV, available_cores

    return threads or os.environ.get(ENV) or str(max(1, available_cores() // workers))


def fit_args(plan: Plan, kind: str, threads: str) -> list[str]:
    """The `python -m xfads_cli fit` command line of one kind."""
    args = [sys.executable, "-m", "xfads_cli", "fit", *map(str, plan.paths), "--out", str(plan.run_dir(kind)),
            "--device", plan.device, "--threads", threads, "--quiet"]
    if plan.config_path is not None:
        args += ["--config", str(plan.config_path)]
    for item in [*plan.overrides, f"model.kind={kind}"]:
        args += ["--set", item]
    if plan.max_epochs is not None:
        args += ["--max-epochs", str(plan.max_epochs)]
    if plan.time_limit_min is not None:
        args += ["--time-limit", str(plan.time_limit_min)]
    if plan.overwrite:
        args.append("--overwrite")
    return args


def _fit_in_parallel(plan: Plan, kinds: list[str], workers: int) -> None:
    """The fits as subprocesses, `workers` at a time; each one's stderr is relayed (prefixed with its kind)
    when it ends. SIGTERM / SIGUSR1 / Ctrl-C here are passed on to them (Ctrl-C as SIGTERM)."""
    from xfads_cli.train.signals import EXIT_PREEMPTED, Preempted

    threads = worker_threads(plan.threads, workers)
    log(f"compare: {len(kinds)} fits, {workers} at a time, {threads} thread(s) each (their timings compete "
        "for the cores)", plan.quiet)
    pending, running, codes = list(kinds), {}, {}
    with _forwarded_signals(running):
        while pending or running:
            while pending and len(running) < workers:
                kind = pending.pop(0)
                err = tempfile.TemporaryFile(mode="w+")
                proc = subprocess.Popen(fit_args(plan, kind, threads), stdout=subprocess.DEVNULL, stderr=err,
                                        start_new_session=True)
                running[kind] = (proc, err, time.monotonic())
                log(f"compare: started {kind} (process {proc.pid})", plan.quiet)
            for kind, (proc, err, started) in list(running.items()):
                if proc.poll() is not None:
                    del running[kind]
                    codes[kind] = proc.returncode
                    _relay(kind, err, proc.returncode, time.monotonic() - started, plan)
            time.sleep(0.1)
    refused = [k for k, c in codes.items() if c == 2]
    if refused:
        raise UsageError(f"xfads fit refused the input of {', '.join(refused)} (its message is above); fix it and "
                         "rerun the comparison")
    preempted = [k for k, c in codes.items() if c == EXIT_PREEMPTED]
    if preempted:
        raise Preempted(f"the fits of {', '.join(preempted)} were stopped; xfads compare does not resume: continue "
                        "them with xfads fit --resume, or rerun the comparison with --overwrite")


def _relay(kind: str, err, code: int, seconds: float, plan: Plan) -> None:
    """A finished subprocess: its stderr lines (prefixed), and its failure in plan.errors."""
    err.seek(0)
    lines = [line.rstrip("\n") for line in err if line.strip()]
    err.close()
    for line in lines:
        log(f"[{kind}] {line}")
    if code == 0:
        log(f"compare: {kind} done in {seconds:.1f} s", plan.quiet)
        return
    if code not in (2, 75):
        said = next((l for l in reversed(lines) if l.startswith(("failed:", "error:"))), None)
        plan.errors[kind] = said or f"xfads fit exited with code {code}"
        log(f"compare: {kind} failed (exit code {code})")


class _forwarded_signals:  # noqa: N801 - used as a context manager
    """Pass SIGTERM / SIGUSR1 / SIGINT to the running fits (SIGINT as SIGTERM: each saves last.pt)."""

    def __init__(self, running: dict):
        self.running, self.previous = running, {}

    def forward(self, signum, frame):  # noqa: ARG002 - signal handler signature
        sig = signal.SIGUSR1 if signum == signal.SIGUSR1 else signal.SIGTERM
        for proc, _, _ in list(self.running.values()):
            if proc.poll() is None:
                proc.send_signal(sig)

    def __enter__(self):
        self.previous = {s: signal.signal(s, self.forward) for s in (signal.SIGTERM, signal.SIGUSR1, signal.SIGINT)}
        return self

    def __exit__(self, *exc):
        for sig, old in self.previous.items():
            signal.signal(sig, old)
        for proc, err, _ in self.running.values():  # an exception here: no fit outlives the comparison
            proc.terminate()
            proc.wait()
            err.close()
        return False


def _summary(plan: Plan, kinds: list[str], config) -> dict:
    """summary.json: one row per kind (or its error), the baselines and oracle, the data, the config."""
    rows, fits = {}, {}
    for kind in kinds:
        if kind in plan.errors:
            rows[kind] = {"run_dir": str(plan.run_dir(kind)), "error": plan.errors[kind]}
            continue
        fits[kind] = json.loads((plan.run_dir(kind) / "summary.json").read_text())
        rows[kind] = kind_row(plan.run_dir(kind), fits[kind])
    first = next(iter(fits.values()), {})
    metrics = first.get("metrics", {})
    baselines = {name: _number(metrics.get(key)) for name, key in REFERENCES.items() if key in metrics}
    if first.get("baselines"):
        baselines["descriptions"] = first["baselines"]
    shared = resolved_config(config)
    shared["model"].pop("kind", None)  # each row's kind
    summary = {"kinds": rows, "baselines": baselines, "data": first.get("data"), "config": shared}
    if plan.errors:
        summary["failed"] = dict(plan.errors)
    return summary


def kind_row(run_dir: Path, fit: dict) -> dict:
    """One kind's row from its run directory and its summary.json."""
    metrics = fit.get("metrics", {})
    train_seconds = _training_seconds(run_dir / "metrics.csv")
    epochs = int(fit.get("epochs", 0))
    row = {"run_dir": str(run_dir), "epochs": epochs, "best_epoch": fit.get("best_epoch"), "stopped": fit.get("stopped"),
           "seconds": fit.get("seconds"), "s_per_epoch": train_seconds / epochs if epochs else None,
           "parameters": trainable_parameters(run_dir)}
    row.update({name: _number(metrics.get(key)) for name, key in SCORES.items()})
    oracle = _number(metrics.get("test_retest_oracle_bps"))
    row["retest_ratio"] = row["retest_bps"] / oracle if row["retest_bps"] is not None and oracle and oracle > 0 else None
    row["metrics"] = {k: v for k, v in metrics.items() if k.startswith("test_") and "@" not in k}
    return row


def _number(value) -> float | None:
    """A finite score, else None (blank in the table, null in JSON)."""
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None


def _training_seconds(path: Path) -> float:
    """The epochs' seconds in metrics.csv (training and validation, not the final evaluation)."""
    with open(path, newline="") as f:
        return sum(float(r["seconds"]) for r in csv.DictReader(f) if r.get("seconds"))


def trainable_parameters(run_dir: Path) -> int:
    """Trainable parameters of the run's best.pt model, rebuilt from the checkpoint."""
    from xfads_cli.runs import load_run

    model = load_run(run_dir, "cpu").model
    return int(sum(p.numel() for p in model.parameters() if p.requires_grad))


COLUMNS = ("kind", "test fp-bps", "co-bps", "retest ratio", "epochs", "s/epoch", "parameters")


def table_rows(summary: dict) -> list[list[str]]:
    """The comparison table's cells: one row per kind, then the baseline's and the oracle's (when known)."""
    cells = []
    for kind, row in summary["kinds"].items():
        if "error" in row:
            cells.append([kind, "failed", "", "", "", "", ""])
            continue
        cells.append([kind, _cell(row["fp_bps"]), _cell(row["co_bps"]), _cell(row["retest_ratio"]), str(row["epochs"]),
                      _cell(row["s_per_epoch"]), f"{row['parameters']:,}"])
    base = summary.get("baselines", {})
    if base.get("fp_baseline_bps") is not None or base.get("co_baseline_bps") is not None:
        cells.append(["baseline", _cell(base.get("fp_baseline_bps")), _cell(base.get("co_baseline_bps")), "", "", "", ""])
    if any(base.get(k) is not None for k in ("fp_oracle_bps", "co_oracle_bps", "retest_oracle_bps")):
        ratio = "1" if base.get("retest_oracle_bps") else ""
        cells.append(["oracle", _cell(base.get("fp_oracle_bps")), _cell(base.get("co_oracle_bps")), ratio, "", "", ""])
    return cells


def _cell(value) -> str:
    return "" if value is None else f"{value:.4g}"


def render_comparison(summary: dict, quiet: bool = False) -> None:
    """The table on stderr (rich), the baselines' names and the failures below it."""
    if quiet:
        for kind, message in summary.get("failed", {}).items():
            log(f"compare: {kind} failed: {message}")
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title="xfads compare (test split)")
    for i, name in enumerate(COLUMNS):
        table.add_column(name, justify="left" if i == 0 else "right", style="bold cyan" if i == 0 else None)
    for cells in table_rows(summary):
        table.add_row(*cells)
    console = Console(stderr=True)
    if not console.is_terminal:  # a log file: wide enough for the table unwrapped
        console = Console(stderr=True, width=max(console.width, 100))
    console.print(table)
    for score, text in summary.get("baselines", {}).get("descriptions", {}).items():
        log(f"{score} baseline: {text.split(' (')[0]}")
    log("retest ratio: test-retest bps / the true rates' (simulated data); s/epoch: training and validation")
    for kind, message in summary.get("failed", {}).items():
        log(f"compare: {kind} failed: {message}")
    out = Path(summary["kinds"][next(iter(summary["kinds"]))]["run_dir"]).parent
    log(f"wrote {out / 'summary.json'}")
