"""The forecast score grid (issue 23): several (context, horizon) windows per trial instead of one.

One forecast window can miss where a model is weak: a model may forecast the quiet end of a trial well
and the stimulus response badly, or the other way round. `forecast_grid` lists the windows to score,
all of one horizon: contexts evenly spaced along the trial ("clock" windows) plus, for each task event,
a window whose forecast starts 2 bins before the event's median bin (so the forecast has to predict
the response to it). `worst_window` and `grid_verdict` summarise the per-window scores (model vs
baseline, bits/spike) in one line. Pure functions: nothing here reads data or runs a model.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

EVENT_LEAD = 2  # an event window's forecast starts this many bins before the event
GRID_MARK = "@"  # metric keys of a forecast-grid window: '{split}_fp_bps@{window}', '{split}_fp_baseline_bps@{window}'


class Window(NamedTuple):
    """One scored forecast: bins 0 .. context-1 of each trial are read, bins context .. context +
    horizon - 1 are forecast. anchor: 'clock' or the event name the context was placed by."""

    name: str
    context: int
    horizon: int
    anchor: str


def _fits(context: int, horizon: int, n_time: int) -> bool:
    return context >= 1 and context + horizon <= n_time


def forecast_grid(n_time: int, horizon: int | None = None, events: dict[str, np.ndarray] | None = None,
                  n_clock: int = 5) -> list[Window]:
    """The forecast windows of trials of n_time bins, sorted by context; [] when no context fits.

    horizon: bins forecast in every window (default max(1, n_time // 4)); no window is shortened, a
    window that does not fit (context >= 1, context + horizon <= n_time) is dropped.
    Clock windows: n_clock contexts evenly spaced from max(1, n_time // 8) to n_time - horizon,
    rounded half up, duplicates dropped; named 't{context}'.
    Event windows: events maps a name to per-trial event bins ([trial] float, counted from the trial
    window's start, NaN = no event in that trial); context = floor(median of the finite bins) - 2,
    named '{event}-2'; events without a finite bin, windows that do not fit and contexts that another
    window already has are dropped (clock windows first, then events by name)."""
    n_time = int(n_time)
    horizon = max(1, n_time // 4) if horizon is None else int(horizon)
    if horizon < 1 or not _fits(1, horizon, n_time):
        return []
    windows: dict[int, Window] = {}
    low, high = max(1, n_time // 8), n_time - horizon
    if n_clock > 0:
        # half up rather than numpy's half to even: 87.5 -> 88 and 86.5 -> 87 alike
        for value in np.linspace(low, high, int(n_clock)):
            context = int(math.floor(value + 0.5))
            if _fits(context, horizon, n_time) and context not in windows:
                windows[context] = Window(f"t{context}", context, horizon, "clock")
    for name in sorted(events or {}):
        bins = np.asarray(events[name], dtype=np.float64).reshape(-1)
        bins = bins[np.isfinite(bins)]
        if not len(bins):
            continue
        context = int(math.floor(float(np.median(bins)))) - EVENT_LEAD
        if _fits(context, horizon, n_time) and context not in windows:
            windows[context] = Window(f"{name}-{EVENT_LEAD}", context, horizon, name)
    return [windows[c] for c in sorted(windows)]


def _margins(scores: dict[str, tuple[float, float]]) -> dict[str, float]:
    """name -> model - baseline bits/spike, windows whose margin is NaN left out."""
    out = {}
    for name, (model, base) in scores.items():
        margin = float(model) - float(base)
        if not math.isnan(margin):
            out[name] = margin
    return out


def worst_window(scores: dict[str, tuple[float, float]]) -> str | None:
    """The window name with the lowest model - baseline margin, from scores {name: (model_bps,
    baseline_bps)}; windows where either is NaN are ignored, ties go to the first in `scores`' order.
    None when no window has a margin."""
    margins = _margins(scores)
    return min(margins, key=margins.__getitem__) if margins else None


def grid_verdict(scores: dict[str, tuple[float, float]], baseline: str | None = None) -> str:
    """One line on the forecast grid from scores {window name: (model_bps, baseline_bps)}, e.g.

        forecast grid: the model beats the condition-aware leave-one-out PSTH in 4/6 context windows;
        worst: t100 (0.031 vs 0.090 bits/spike)

    baseline: the baseline's name or its whole description (Baselines.describe()["fp"]; the text
    before " (" names it), default "baseline". Windows with a NaN score count in neither number (the
    line says how many were undefined). The line starts with 'warning: ' (as verdicts' lines) when
    the model beats the baseline in at most half of the scored windows."""
    name = baseline.split(" (")[0] if baseline else "baseline"
    margins = _margins(scores)
    undefined = len(scores) - len(margins)
    if not margins:
        return (f"warning: forecast grid: no context window has both a model and a {name} score"
                + (f" ({undefined} undefined)" if undefined else ""))
    wins = sum(m > 0 for m in margins.values())
    worst = worst_window(scores)
    model, base = scores[worst]
    line = (f"forecast grid: the model beats the {name} in {wins}/{len(margins)} context windows"
            + (f" ({undefined} undefined)" if undefined else "")
            + f"; worst: {worst} ({float(model):.3f} vs {float(base):.3f} bits/spike)")
    return ("warning: " + line) if 2 * wins <= len(margins) else line
