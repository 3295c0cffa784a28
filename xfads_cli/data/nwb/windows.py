"""Where the trials are: windows from an interval table's rows, or fixed windows chopped out of the recording.

A window has n_bins bins from its start; with data.trial_lengths 'own' each trial keeps only the
whole bins between its own start_time and stop_time (first..lengths), the rest is NaN padding.
Options or tables that cannot give trials fail here, before any count array is built.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from xfads_cli.config import DataConfig
from xfads_cli.data.binning import window_starts
from xfads_cli.data.conditions import AUTO
from xfads_cli.data.nwb.columns import read_column, text
from xfads_cli.data.nwb.units import MAX_TIME_S, Units
from xfads_cli.errors import BadFile, UsageError, closest, dtype_kind, listing

_EPS = 1e-9  # float slack for window edges computed from ms options
# Largest [trial, time, neuron] count array loading may build (8 GB as float32): beyond it the options
# (a tiny data.bin_ms, a huge window) or corrupt times are at fault, and numpy would fail or swap.
MAX_COUNTS = 2_000_000_000


@dataclass
class Windows:
    """Where the trials are.

    starts:    [trial] window start in seconds
    n_bins:    bins per trial
    trial_ids: [trial] ids: the interval table's id column, or 0..n-1 for chopped windows
    table:     the pynwb interval table, None for chopped windows (valid while the file is open)
    rows:      [trial] the trials' rows in `table`, None for chopped windows
    source:    the table's name, or 'chopped'
    first, lengths: [trial] bins first..lengths-1 lie inside the trial; the others are NaN (before
               its start_time, or past its stop_time: the padding). None: all n_bins inside.
    """

    starts: np.ndarray
    n_bins: int
    trial_ids: np.ndarray
    table: object
    rows: np.ndarray | None
    source: str
    first: np.ndarray | None = None
    lengths: np.ndarray | None = None


def interval_tables(nwb) -> dict:
    """Every interval table by name: /intervals/* plus 'trials'."""
    tables = dict(nwb.intervals.items()) if nwb.intervals is not None else {}
    if nwb.trials is not None:
        tables["trials"] = nwb.trials
    return tables


def trial_windows(nwb, cfg: DataConfig, units: Units, behaviour_end: float, notes: list[str]) -> Windows:
    """The trials `cfg` asks for: rows of the data.intervals table ('trials' by default), or without a
    trials table windows chopped out of the whole recording. Windows must lie inside the recording,
    which ends at the last spike, trial stop or behaviour sample (`behaviour_end`, s). Notes for the
    user are appended to `notes`."""
    tables = interval_tables(nwb)
    name = cfg.intervals if cfg.intervals is not None else ("trials" if "trials" in tables else None)
    if name is None:
        if cfg.align != "start_time" or cfg.window_ms is not None:
            notes.append("the file has no trials table: data.align and data.window_ms are ignored and the"
                         " recording is chopped into data.chop_ms windows; set data.intervals to use an interval table")
        return _chopped_windows(cfg, units)
    if name not in tables:
        raise UsageError(
            f"no interval table '{name}' in the file{closest(name, tables)}; available: {listing(tables)};"
            " set data.intervals to one of them, or leave it unset to chop the recording into windows"
        )
    return _aligned_windows(tables[name], name, cfg, units, behaviour_end, notes)


def _check_interval_table(table, name: str) -> None:
    """An interval table that cannot define trials whatever the options: no rows, start/stop times
    that are not numbers, infinite, absurdly large, all NaN, or a stop before its start."""
    if len(table) == 0:
        raise BadFile(
            f"interval table '{name}' has no rows, so it defines no trials; fill it or remove it"
            + (" (a file without a trials table is chopped into data.chop_ms windows)" if name == "trials" else "")
        )
    ids = np.asarray(table.id.data[:])
    times = {}
    for column in ("start_time", "stop_time"):
        if column not in table.colnames:
            continue
        values = read_column(table, column, f"interval table '{name}'")
        if values.dtype.kind not in "iuf":
            raise BadFile(f"column '{column}' of interval table '{name}' holds {dtype_kind(values.dtype)}, not times in"
                          " seconds; the file is malformed, fix that column")
        values = values.astype(np.float64)
        bad = np.isinf(values) | (np.abs(values) > MAX_TIME_S)
        if bad.any():
            i = int(np.argmax(bad))
            raise BadFile(f"{column} of row {text(ids[i])} of interval table '{name}' is {values[i]:g} s;"
                          " times are seconds from the session start, fix or remove that row")
        times[column] = values
    if "start_time" in times and np.isnan(times["start_time"]).all():
        raise BadFile(f"every start_time of interval table '{name}' is NaN; the table has no usable row, fix it")
    if len(times) == 2:
        backwards = times["stop_time"] < times["start_time"]
        if backwards.any():
            i = int(np.argmax(backwards))
            raise BadFile(
                f"row {text(ids[i])} of interval table '{name}' stops before it starts (start_time"
                f" {times['start_time'][i]:g} s, stop_time {times['stop_time'][i]:g} s)"
                f"{f' and so do {int(backwards.sum()) - 1} more' if backwards.sum() > 1 else ''}; fix or remove those rows"
            )


def _check_size(n_trials: int, n_bins: int, n_units: int, cfg: DataConfig, what: str) -> None:
    """Refuse to build a count array too large to be meant (see MAX_COUNTS) before allocating it."""
    cells = float(n_trials) * float(n_bins) * float(n_units)
    if cells > MAX_COUNTS:
        raise UsageError(
            f"{what} at data.bin_ms={cfg.bin_ms:g} give {float(n_trials):.3g} trials x {float(n_bins):.3g} bins x"
            f" {n_units} units = {cells:.3g} counts ({cells * 4 / 1e9:.3g} GB); raise data.bin_ms"
            " (e.g. --set data.bin_ms=20) or use shorter windows"
        )


def _aligned_windows(table, name: str, cfg: DataConfig, units: Units, behaviour_end: float, notes) -> Windows:
    """Trials from the rows of an interval table: with data.trial_lengths 'own' each keeps its own
    bins (see _own_windows), with 'shortest' all get the same window around data.align."""
    _check_interval_table(table, name)
    columns = list(table.colnames)
    if cfg.align not in columns:
        raise UsageError(
            f"interval table '{name}' has no column '{cfg.align}'{closest(cfg.align, columns)};"
            f" set data.align to one of: {listing(columns)}"
        )
    align = _numeric_column(table, cfg.align, name)
    bounds = [_numeric_column(table, c, name) if c in columns else np.full(len(align), np.nan)
              for c in ("start_time", "stop_time")]
    rows = np.flatnonzero(np.isfinite(align))
    if rows.size < len(align):
        dropped = len(align) - rows.size
        notes.append(f"dropped {dropped} of {len(align)} trials of '{name}' that have no '{cfg.align}' time")
    if rows.size == 0:
        raise UsageError(f"no trial of '{name}' has a '{cfg.align}' time; choose another data.align column")
    if cfg.window_ms is not None:
        w0, w1 = (float(w) / 1000.0 for w in cfg.window_ms)
        if not w1 > w0:
            raise UsageError(f"data.window_ms must be [start, stop] with stop > start, got {list(cfg.window_ms)}")
    ids = np.asarray(table.id.data[:]).astype(np.int64)
    trial = _TrialTimes(align, *bounds, rows)
    if cfg.trial_lengths == "own":
        windows = _own_windows(trial, name, cfg, notes)
    else:
        windows = _shortest_windows(trial, name, cfg)
    _check_size(windows.rows.size, windows.n_bins, len(units.ids), cfg, f"{windows.rows.size} trial windows of"
                f" up to {windows.n_bins * cfg.bin_ms:g} ms")
    _check_inside_recording(windows, trial, name, cfg, units, behaviour_end)
    return replace(windows, trial_ids=ids[windows.rows], table=table, source=name)


@dataclass
class _TrialTimes:
    """[row] align, start_time and stop_time (s; NaN where unknown) of an interval table, and the
    rows with an align time."""

    align: np.ndarray
    start: np.ndarray
    stop: np.ndarray
    rows: np.ndarray


def _shortest_windows(trial: _TrialTimes, name: str, cfg: DataConfig) -> Windows:
    """The same window for every trial: data.window_ms around align, else [0, shortest duration]."""
    rows, bin_s = trial.rows, cfg.bin_ms / 1000.0
    if cfg.window_ms is not None:
        w0, w1 = (float(w) / 1000.0 for w in cfg.window_ms)
    else:
        durations = trial.stop[rows] - trial.align[rows]
        w0, w1 = 0.0, float(np.nanmin(durations)) if np.isfinite(durations).any() else np.nan
        if not w1 > 0:
            raise UsageError(
                f"cannot take the window from the trial durations of '{name}' (no trial has stop_time after"
                f" '{cfg.align}'); set data.window_ms, e.g. [-200, 500]"
            )
    n_bins = int(np.floor((w1 - w0) / bin_s + _EPS))
    if n_bins < 1:
        raise UsageError(
            f"the trial window ({(w1 - w0) * 1e3:g} ms) is shorter than one bin ({cfg.bin_ms:g} ms);"
            " widen data.window_ms or lower data.bin_ms"
        )
    full = np.full(rows.size, n_bins, dtype=np.int64)
    return Windows(starts=trial.align[rows] + w0, n_bins=n_bins, trial_ids=rows, table=None, rows=rows,
                    source=name, first=np.zeros_like(full), lengths=full)


def _own_windows(trial: _TrialTimes, name: str, cfg: DataConfig, notes) -> Windows:
    """Each trial from its align time to its own stop_time, or data.window_ms around align clipped
    to the trial's start_time..stop_time: only whole bins inside the trial are kept (first..lengths),
    the rest are NaN. The array is as long as the longest trial (or the window); trials without a
    whole bin inside are dropped with a note."""
    bin_s = cfg.bin_ms / 1000.0
    if cfg.window_ms is not None:
        w0, w1 = (float(w) / 1000.0 for w in cfg.window_ms)
        n_bins = int(np.floor((w1 - w0) / bin_s + _EPS))
        if n_bins < 1:
            raise UsageError(f"the trial window ({(w1 - w0) * 1e3:g} ms) is shorter than one bin ({cfg.bin_ms:g} ms);"
                             " widen data.window_ms or lower data.bin_ms")
    else:
        w0 = 0.0
        n_bins = _longest(trial, name, cfg)
    starts = trial.align + w0
    with np.errstate(invalid="ignore"):  # NaN start or stop: that side is not clipped
        first = np.ceil((trial.start - starts) / bin_s - _EPS)
        last = np.floor((trial.stop - starts) / bin_s + _EPS)
    first = np.clip(np.nan_to_num(first, nan=0.0), 0, n_bins).astype(np.int64)
    last = np.clip(np.nan_to_num(last, nan=float(n_bins) if cfg.window_ms is not None else 0.0), 0, n_bins)
    last = last.astype(np.int64)
    rows = trial.rows[last[trial.rows] > first[trial.rows]]
    if rows.size < trial.rows.size:
        notes.append(f"dropped {trial.rows.size - rows.size} of {trial.rows.size} trials of '{name}' without a whole"
                     f" {cfg.bin_ms:g} ms bin between their start_time and stop_time"
                     + (" inside data.window_ms" if cfg.window_ms is not None else f" after '{cfg.align}'"))
    if rows.size == 0:
        raise UsageError(f"no trial of '{name}' has a whole {cfg.bin_ms:g} ms bin inside it; lower data.bin_ms"
                         + (" or widen data.window_ms" if cfg.window_ms is not None else " or set data.window_ms"))
    if cfg.window_ms is None:
        n_bins = int(last[rows].max())
    return Windows(starts=starts[rows], n_bins=n_bins, trial_ids=rows, table=None, rows=rows, source=name,
                    first=first[rows], lengths=last[rows])


def _longest(trial: _TrialTimes, name: str, cfg: DataConfig) -> int:
    """Bins of the longest trial from its align time to its stop_time (an upper bound of every trial's)."""
    durations = trial.stop[trial.rows] - trial.align[trial.rows]
    longest = float(np.nanmax(durations)) if np.isfinite(durations).any() else np.nan
    if not longest > 0:
        raise UsageError(
            f"cannot take the trials' lengths from '{name}' (no trial has stop_time after '{cfg.align}');"
            " set data.window_ms, e.g. [-200, 500]"
        )
    return max(int(np.floor(longest / (cfg.bin_ms / 1000.0) + _EPS)), 1)


def _check_inside_recording(windows: Windows, trial: _TrialTimes, name: str, cfg: DataConfig, units: Units,
                            behaviour_end: float) -> None:
    """UsageError when a window data.window_ms asks for leaves the recording (even where trial_lengths
    own clips it: so large a window is a mistake), or a trial's own bins do (not its padding)."""
    bin_s = cfg.bin_ms / 1000.0
    lo = windows.starts + (0 if cfg.window_ms is not None else windows.first) * bin_s
    hi = windows.starts + (windows.n_bins if cfg.window_ms is not None else windows.lengths) * bin_s
    stop = trial.stop
    rec_start = min(0.0, units.t_first)
    rec_end = max(units.t_last, float(np.nanmax(stop)) if np.isfinite(stop).any() else -np.inf, behaviour_end)
    outside = (lo < rec_start - _EPS) | (hi > rec_end + _EPS)
    if outside.any():
        w1 = windows.n_bins * bin_s
        window = list(cfg.window_ms) if cfg.window_ms is not None else [0, round(w1 * 1e3, 3)]
        raise UsageError(
            f"{int(outside.sum())} of {windows.rows.size} trial windows of '{name}' ({window} ms around '{cfg.align}')"
            f" extend outside the recording ({rec_start:.3f} to {rec_end:.3f} s); shorten data.window_ms"
        )


def outside_trials(windows: Windows) -> np.ndarray:
    """[trial, time] bool: the bins outside each trial (before `first`, from `lengths` on)."""
    n_trial = len(windows.starts)
    if windows.lengths is None:
        return np.zeros((n_trial, windows.n_bins), dtype=bool)
    bins = np.arange(windows.n_bins)[None, :]
    return (bins < windows.first[:, None]) | (bins >= windows.lengths[:, None])


def _chopped_windows(cfg: DataConfig, units: Units) -> Windows:
    # 'auto' finds nothing in windows chopped from a continuous recording; a named column is a mistake
    if cfg.condition not in (None, AUTO):
        raise UsageError(
            f"data.condition='{cfg.condition}' needs an interval table, but the file has no trials table;"
            " set data.intervals or unset data.condition"
        )
    named = [e for e in cfg.events if e != AUTO]
    if named:
        raise UsageError(
            f"data.events {listing(named)} need an interval table, but the file has no trials table;"
            " set data.intervals or set data.events=[]"
        )
    if not cfg.chop_ms > 0 or not 0 <= cfg.overlap_ms < cfg.chop_ms:
        raise UsageError(
            f"data.chop_ms must be positive and 0 <= data.overlap_ms < data.chop_ms, got {cfg.chop_ms:g}"
            f" and {cfg.overlap_ms:g}"
        )
    n_bins = int(np.floor(cfg.chop_ms / cfg.bin_ms + _EPS))
    if n_bins < 1:
        raise UsageError(
            f"data.chop_ms ({cfg.chop_ms:g}) is shorter than one bin ({cfg.bin_ms:g} ms); raise data.chop_ms"
        )
    step_s = (cfg.chop_ms - cfg.overlap_ms) / 1000.0
    n_windows = max(np.floor((units.t_last - units.t_first - cfg.chop_ms / 1000.0) / step_s + 1e-9) + 1, 0)
    _check_size(n_windows, n_bins, len(units.ids), cfg,
                f"{units.t_last - units.t_first:g} s of recording chopped into {cfg.chop_ms:g} ms windows")
    starts = window_starts(units.t_first, units.t_last, cfg.chop_ms / 1000.0, cfg.overlap_ms / 1000.0)
    if starts.size == 0:
        raise UsageError(
            f"the recording ({units.t_last - units.t_first:.3f} s) is shorter than one window of"
            f" data.chop_ms={cfg.chop_ms:g}; lower data.chop_ms"
        )
    ids = np.arange(starts.size)
    return Windows(starts=starts, n_bins=n_bins, trial_ids=ids, table=None, rows=None, source="chopped")


def _numeric_column(table, column: str, name: str) -> np.ndarray:
    values = read_column(table, column, f"interval table '{name}'")
    if values.dtype.kind not in "iuf":
        raise UsageError(f"column '{column}' of '{name}' is not numeric (seconds); set data.align to a time column")
    return values.astype(np.float64)
