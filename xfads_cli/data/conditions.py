"""Which trials-table columns hold the task's structure: the condition label of each trial
(data.condition) and the times of its events (data.events).

Pure functions on column names and values, shared by the loaders (data/nwb/; data/hdf5.py keeps
its own `conditions` dataset and `events/` group). 'auto' picks:

  condition  the first column named (case-insensitively) like CONDITION_NAMES, in that order, when
             at least 2 of its labels occur on 2 or more trials each (a condition average needs 2
             trials, and a single label is no condition); else no conditions.
  events     every numeric column whose name ends in '_time' (not start_time / stop_time) whose
             value lies inside [start_time, stop_time] of its own trial for at least half of the
             trials: a time that is mostly outside the trials (e.g. a session-level timestamp) is
             no event of them.
"""

from __future__ import annotations

from collections import Counter
from typing import Callable, Iterable

import numpy as np

AUTO = "auto"
# Names a condition column goes by in NWB files (DANDI, NLB, IBL, Allen), most specific first.
CONDITION_NAMES = ("condition", "conditions", "cond", "stimulus", "stim", "odor", "odour", "trial_type",
                   "trial_condition", "target", "stimulus_id", "condition_id")
# Columns of every interval table that bound the trial rather than mark an event inside it.
BOUNDS = ("start_time", "stop_time")
EVENT_SUFFIX = "_time"
# Share of trials whose event must lie inside the trial for 'auto' to take the column.
MIN_INSIDE = 0.5
# Bins of slack at the window's edges: event bins come from float seconds.
EDGE_BINS = 1e-6


def condition_candidate(columns: Iterable[str]) -> str | None:
    """The column 'auto' considers for conditions: the first of CONDITION_NAMES (in that order) that a
    column is named, case-insensitively; an exact-case match wins over another spelling. None: none."""
    columns = list(columns)
    for name in CONDITION_NAMES:
        if name in columns:
            return name
        for column in columns:
            if str(column).lower() == name:
                return column
    return None


def has_conditions(labels) -> bool:
    """True when at least 2 labels each occur on 2 or more trials (labels: [trial], any type)."""
    counts = Counter(str(v) for v in np.asarray(labels).ravel().tolist())
    return sum(n >= 2 for n in counts.values()) >= 2


def auto_condition(columns: Iterable[str], values: Callable[[str], np.ndarray | None]) -> str | None:
    """The condition column 'auto' uses: `condition_candidate(columns)` when `values(column)` ([trial]
    labels of the loaded trials, or None when it holds no one label per trial) passes
    `has_conditions`; else None (no conditions). Only that one column is looked at: a degenerate
    condition column (e.g. all 0) says the recording has no conditions."""
    column = condition_candidate(columns)
    if column is None:
        return None
    labels = values(column)
    return column if labels is not None and has_conditions(labels) else None


def event_candidates(columns: Iterable[str]) -> list[str]:
    """Columns whose names mark event times: ending in '_time', other than start_time / stop_time."""
    return [c for c in columns if str(c).lower().endswith(EVENT_SUFFIX) and str(c).lower() not in BOUNDS]


def inside_trials(times: np.ndarray, start: np.ndarray, stop: np.ndarray) -> bool:
    """True when times [trial] lie inside [start, stop] ([trial] each, seconds) for at least half of the
    trials (a NaN time or bound counts as outside)."""
    times, start, stop = (np.asarray(a, dtype=np.float64) for a in (times, start, stop))
    if times.size == 0:
        return False
    with np.errstate(invalid="ignore"):
        inside = (times >= start) & (times <= stop)
    return bool(np.sum(inside) >= MIN_INSIDE * times.size)


def auto_events(columns: Iterable[str], values: Callable[[str], np.ndarray | None], start: np.ndarray,
                stop: np.ndarray) -> list[str]:
    """The event columns 'auto' uses, in table order: `event_candidates(columns)` whose `values(column)`
    ([trial] of the loaded trials; None when not numeric or not one value per trial) are
    `inside_trials` [start, stop] ([trial] seconds)."""
    out = []
    for column in event_candidates(columns):
        times = values(column)
        if times is not None and np.asarray(times).dtype.kind in "iuf" and inside_trials(times, start, stop):
            out.append(column)
    return out


def event_bins(times_s: np.ndarray, window_start_s: np.ndarray, bin_s: float, lengths: np.ndarray) -> np.ndarray:
    """[trial] float64 event times in bins from each trial window's start (fractional), NaN where the
    trial has no event (NaN) or it falls outside its window [0, lengths] (bins).

    times_s, window_start_s: [trial] seconds on the same clock (absolute, or both from the trial's start);
    lengths: [trial] bins of each trial's window."""
    with np.errstate(invalid="ignore"):
        bins = (np.asarray(times_s, dtype=np.float64) - np.asarray(window_start_s, dtype=np.float64)) / float(bin_s)
        inside = (bins >= -EDGE_BINS) & (bins <= np.asarray(lengths, dtype=np.float64) + EDGE_BINS)
    return np.where(inside, np.clip(bins, 0.0, None), np.nan)
