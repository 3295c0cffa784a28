"""`xfads inspect`: what is in a file, and what xfads would make of it with the current config."""

from __future__ import annotations

from pathlib import Path

from xfads_cli.config import DataConfig
from xfads_cli.errors import UsageError


def inspect_files(paths: list[Path], cfg: DataConfig, strict: bool = False,
                  config_path: Path | None = None) -> list[dict]:
    """One report per file: the file's contents (`describe`) and the SpikeData summary that loading
    it with `cfg` (from --config `config_path` and --set) gives. With `strict` (the user chose data
    options) a load error is an error; otherwise it is reported, because inspect is how users find the
    options their file needs."""
    from xfads_cli.data.load import describe, load_data

    reports = []
    for path in paths:
        report = describe(path)
        report["config"] = config_source(cfg, config_path)
        try:
            data = load_data(path, cfg)
            report["loaded"] = data.summary() | task_structure(data) | missing_counts(data)
        except UsageError as exc:
            if strict:
                raise
            report["loaded"] = {"error": str(exc)}
        continuous = _continuous(path, report, cfg)
        if continuous:
            report["continuous"] = continuous
        report["hints"] = hints(report, cfg)
        reports.append(report)
    return reports


def task_structure(data) -> dict:
    """What data.condition and data.events found in a SpikeData: conditions {column (None: no
    conditions), labels (distinct labels)} and events (the event names, SpikeData.events)."""
    labels = 0 if data.conditions is None else len({str(c) for c in data.conditions})
    column = data.provenance.get("condition") if data.conditions is not None else None
    return {"conditions": {"column": column, "labels": labels}, "events": list(data.events)}


def config_source(cfg: DataConfig, config_path: Path | None) -> str:
    """Where the data options of 'loaded' come from: '--config FILE', else 'defaults' or '--config/--set'.
    Its split and bins are a fit's only with the fit's --config, so the report says which it used."""
    if config_path is not None:
        return f"--config {config_path}"
    return "defaults" if cfg == DataConfig() else "--config/--set"


def missing_counts(data) -> dict:
    """{"missing": {counts, fraction}}: the NaN counts (missing bins, e.g. outside the units' observation
    intervals) inside the trials, and their fraction of all; {} when none. A shorter trial's NaN padding is
    not counted (trial_lengths reports it)."""
    import numpy as np

    nan = sum(int(np.count_nonzero(np.isnan(data.counts[:, :, j]))) for j in range(data.n_neurons))
    nan -= int(np.sum(data.n_time - data.lengths)) * data.n_neurons
    total = int(np.sum(data.lengths)) * data.n_neurons
    return {"missing": {"counts": nan, "fraction": nan / total}} if nan else {}


def _continuous(path: Path, report: dict, cfg: DataConfig) -> dict | None:
    """For an NWB recording without trials under `cfg`: its segments, as `smooth` will run over them
    whole (data/recording.py); None otherwise."""
    if report.get("format") != "nwb" or "error" in report.get("loaded", {}):
        return None
    from xfads_cli.data.nwb import load_nwb_recording

    recording = load_nwb_recording(path, cfg)  # a Path or a RemoteSource (data/source.py)
    if recording is None:
        return None
    lengths = [recording.n_bins(s) for s in range(len(recording.segments))]
    return {"segments": len(lengths), "bins": int(sum(lengths)), "minutes": sum(lengths) * recording.bin_s / 60,
            "segment_minutes": [n * recording.bin_s / 60 for n in lengths],
            "segment_start_s": recording.segments[:, 0].tolist()}


def hints(report: dict, cfg: DataConfig) -> list[str]:
    """The data options this file probably wants, as `--set` arguments a user can paste."""
    out = []
    loaded = report.get("loaded", {})
    chopped = (report.get("defaults") or {}).get("trials_from") == "chopped"
    if chopped and report.get("intervals") and cfg.intervals is None:
        names = list(report["intervals"])
        out.append(f"no trials table, so the recording is cut into {cfg.chop_ms:g} ms windows; to use an interval "
                   f"table's rows as trials: --set data.intervals={names[0]}"
                   + (f" (tables here: {', '.join(names)})" if len(names) > 1 else "")
                   + " and, for a fixed window around each row's start, --set data.window_ms=[START_MS,STOP_MS]")
    if report.get("continuous"):
        c = report["continuous"]
        out.append(f"no trials: fit trains on {cfg.chop_ms:g} ms windows, and `xfads smooth` runs over the whole "
                   f"recording ({c['segments']} segment(s), {c['minutes']:.1f} min; --windows for the windows)")
    lengths = loaded.get("trial_lengths") or {}
    if lengths.get("shorter_than_longest") and cfg.trial_lengths == "own":
        out.append(f"{lengths['shorter_than_longest']} of {loaded['trials']} trials are shorter than the longest"
                   f" ({lengths['min_s']:g} to {lengths['max_s']:g} s) and padded with NaN (missing bins); to cut every"
                   " trial to the shortest instead: --set data.trial_lengths=shortest")
    suggested = report.get("suggested_bin_ms")
    if suggested and "error" not in loaded and abs(float(loaded.get("bin_ms", cfg.bin_ms)) - float(suggested)) > 1e-9:
        # nothing carries inspect's options into fit: the hint spells out the fit command
        source = report.get("config", "")
        config = f" {source}" if source.startswith("--config ") else ""
        out.append(f"suggested bin size for this recording's firing rates: {suggested:g} ms (loaded at "
                   f"{loaded.get('bin_ms', cfg.bin_ms):g} ms); fit with it: xfads fit {report.get('path', 'FILE')}"
                   f"{config} --set data.bin_ms={suggested:g} (or bin_ms: {suggested:g} in the data: section of "
                   "a --config file)")
    return out


def render_reports(reports: list[dict], console=None) -> None:
    """Rich tables on stdout, one block per file."""
    from rich.console import Console

    console = console or Console()
    for report in reports:
        _render_one(report, console)


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (list, tuple)):
        return ", ".join(_fmt(v) for v in value) if len(value) <= 8 else f"{len(value)} items"
    if isinstance(value, dict):
        return ", ".join(f"{k}={_fmt(v)}" for k, v in value.items())
    return str(value)


def _kv_table(title: str, items: dict):
    from rich.table import Table

    table = Table(title=title, show_header=False, title_justify="left", box=None, pad_edge=False)
    table.add_column(style="bold cyan", no_wrap=True)
    table.add_column()
    for key, value in items.items():
        table.add_row(str(key), _fmt(value))
    return table


def _readable_task(loaded: dict) -> dict:
    """`loaded` with its conditions and events as one phrase each (the JSON keeps them structured)."""
    out = dict(loaded)
    cond = loaded.get("conditions")
    if isinstance(cond, dict):
        out["conditions"] = f"{cond['column']} ({cond['labels']} labels)" if cond.get("column") or cond.get("labels") \
            else "none (data.condition)"
    if "events" in loaded:
        out["events"] = ", ".join(loaded["events"]) or "none (data.events)"
    if "missing" in loaded:
        out["missing"] = (f"{loaded['missing']['counts']} counts ({loaded['missing']['fraction']:.2%} of the trials'"
                          " bins x neurons) are NaN: missing bins, which the model skips")
    return out


def _loaded_title(source: str) -> str:
    if source == "defaults":
        return "loaded with the default data options (a fit with --config FILE may split and bin differently: pass it here too)"
    return f"loaded with {source}"


def _render_one(report: dict, console) -> None:
    from rich.rule import Rule
    from rich.table import Table

    console.print(Rule(f"[bold]{report['path']}[/bold]  ({report.get('format', '?')}, {report['size_bytes'] / 1e6:.2f} MB)"))
    skip = {"path", "size_bytes", "format", "units", "intervals", "behavior", "loaded", "datasets", "defaults", "hints",
            "config"}
    head = {k: v for k, v in report.items() if k not in skip and not isinstance(v, (dict, list)) and v not in (None, "")}
    if head:
        console.print(_kv_table("file", head))
    if isinstance(report.get("units"), dict):
        units = dict(report["units"])
        if "rate_hz_quantiles" in units:
            units["rate Hz min/25/50/75/max"] = units.pop("rate_hz_quantiles")
        console.print(_kv_table("units", units))
    if report.get("intervals"):
        table = Table(title="interval tables", title_justify="left")
        table.add_column("table", style="bold cyan")
        table.add_column("rows", justify="right")
        table.add_column("columns")
        for name, info in report["intervals"].items():
            table.add_row(name, str(info.get("rows", "")), ", ".join(info.get("columns", [])))
        console.print(table)
    if report.get("behavior"):
        table = Table(title="behaviour series (use with --set data.behavior=NAME)", title_justify="left")
        for col in ("name", "path", "shape", "sampling"):
            table.add_column(col, style="bold cyan" if col == "name" else None)
        for series in report["behavior"]:
            rate = series.get("rate_hz")
            sampling = f"{rate:g} Hz" if rate else f"{series.get('n_timestamps', '?')} timestamps"
            table.add_row(series.get("name", ""), series.get("path", ""), str(series.get("shape", "")), sampling)
        console.print(table)
    if report.get("datasets"):
        console.print(_kv_table("datasets", report["datasets"]))
    for key, value in report.items():
        if key in skip or not value:
            continue
        if isinstance(value, dict):
            console.print(_kv_table(key, value))
        elif isinstance(value, list):
            console.print(f"[bold]{key}[/bold]: {_fmt(value)}")
    if report.get("defaults"):
        console.print(_kv_table("with default options", report["defaults"]))
    loaded = report.get("loaded", {})
    if "error" in loaded:
        console.print(f"[yellow]loading with these options fails:[/yellow] {loaded['error']}")
    else:
        console.print(_kv_table(_loaded_title(report.get("config", "defaults")), _readable_task(loaded)))
    for hint in report.get("hints", []):
        console.print(f"[bold]hint:[/bold] {hint}")
    console.print()
