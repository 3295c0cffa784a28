"""The forecast score grid (xfads_cli/scoring/grid.py): which windows are scored and the one-line verdict."""

import math

import numpy as np
import pytest

from xfads_cli.scoring.grid import Window, forecast_grid, grid_verdict, worst_window

NAN = np.nan


def test_clock_windows_are_evenly_spaced_and_all_fit():
    grid = forecast_grid(200)  # horizon 50; contexts from 25 to 150
    assert [w.context for w in grid] == [25, 56, 88, 119, 150]  # 87.5 rounds up
    assert [w.name for w in grid] == ["t25", "t56", "t88", "t119", "t150"]
    assert all(w.horizon == 50 and w.anchor == "clock" for w in grid)
    assert grid[0] == Window("t25", 25, 50, "clock")
    for n_time in range(1, 60):
        for horizon in (None, 1, 3, n_time // 2, n_time - 1, n_time):
            for w in forecast_grid(n_time, horizon):
                assert w.context >= 1 and w.context + w.horizon <= n_time, (n_time, horizon, w)
    assert [w.context for w in forecast_grid(100, 20, n_clock=3)] == [12, 46, 80]
    assert [w.context for w in forecast_grid(100, 20, n_clock=1)] == [12]
    assert forecast_grid(100, 20, n_clock=0) == []


def test_windows_that_do_not_fit_are_dropped_not_shortened():
    assert forecast_grid(100, 100) == [] and forecast_grid(100, 150) == [] and forecast_grid(100, 0) == []
    assert forecast_grid(100, 99) == [Window("t1", 1, 99, "clock")]  # only context 1 leaves 99 bins
    # the first clock context (100 // 8 = 12) is past the last that fits (100 - 95 = 5): 5 alone survives
    assert [w.context for w in forecast_grid(100, 95)] == [5]


def test_tiny_trials():
    assert forecast_grid(0) == [] and forecast_grid(1) == []
    assert forecast_grid(2) == [Window("t1", 1, 1, "clock")]
    assert [w.context for w in forecast_grid(3)] == [1, 2]  # duplicates of the rounding dropped
    assert [w.context for w in forecast_grid(8)] == [1, 2, 4, 5, 6]  # 1, 2.25, 3.5, 4.75, 6
    assert forecast_grid(2, events={"go": np.array([1.0, 1.0])}) == [Window("t1", 1, 1, "clock")]


def test_event_windows_start_the_forecast_two_bins_before_the_median_event():
    events = {"go_time": np.array([70.0, 72.9, NAN, 75.0]),  # median 72.9 -> context 70
              "reward_time": np.array([NAN, NAN]),  # never happens: ignored
              "cue_time": np.array([27.0, 27.5])}  # median 27.25 -> 25, a clock context already: dropped
    grid = forecast_grid(200, events=events)
    assert [w.context for w in grid] == [25, 56, 70, 88, 119, 150]
    event = grid[2]
    assert event == Window("go_time-2", 70, 50, "go_time")
    assert event.context + 2 == math.floor(np.nanmedian(events["go_time"]))
    assert [w.name for w in grid].count("t25") == 1 and not any(w.anchor == "cue_time" for w in grid)
    # an event too late for the horizon, or before the first bins, has no window
    outside = {"late": np.array([190.0]), "early": np.array([2.0])}
    assert all(w.anchor == "clock" for w in forecast_grid(200, events=outside))
    assert forecast_grid(200, events={"at3": np.array([3.0])})[0] == Window("at3-2", 1, 50, "at3")
    # two events at the same bin: one window, the first by name; the result does not depend on dict order
    a = forecast_grid(200, events={"b_time": np.array([40.0]), "a_time": np.array([40.4])})
    b = forecast_grid(200, events={"a_time": np.array([40.4]), "b_time": np.array([40.0])})
    assert a == b and [w.name for w in a if w.anchor != "clock"] == ["a_time-2"]


def test_worst_window_ignores_nan_and_takes_the_lowest_margin():
    scores = {"t25": (0.10, 0.05), "t56": (0.02, 0.09), "t88": (NAN, 0.5), "go_time-2": (0.20, 0.25)}
    assert worst_window(scores) == "t56"
    assert worst_window({"a": (NAN, 0.1), "b": (0.1, NAN)}) is None and worst_window({}) is None
    assert worst_window({"a": (0.1, 0.0), "b": (-math.inf, 0.1)}) == "b"
    assert worst_window({"a": (0.5, 0.25), "b": (0.75, 0.5)}) == "a"  # ties: the first


def test_grid_verdict_text():
    scores = {"t25": (0.12, 0.05), "t56": (0.10, 0.08), "t100": (0.031, 0.090), "t119": (0.2, 0.1),
              "t150": (0.15, 0.1), "go_time-2": (0.05, 0.06)}
    described = "condition-aware leave-one-out PSTH (each trial predicted by the other trials of the same condition ...)"
    assert grid_verdict(scores, described) == ("forecast grid: the model beats the condition-aware leave-one-out PSTH "
                                               "in 4/6 context windows; worst: t100 (0.031 vs 0.090 bits/spike)")
    losing = grid_verdict({"t10": (0.01, 0.02), "t20": (0.03, 0.02), "t30": (NAN, 0.1)}, "leave-one-out PSTH")
    assert losing == ("warning: forecast grid: the model beats the leave-one-out PSTH in 1/2 context windows "
                      "(1 undefined); worst: t10 (0.010 vs 0.020 bits/spike)")
    assert grid_verdict({"t10": (0.3, 0.1)}) == ("forecast grid: the model beats the baseline in 1/1 context windows; "
                                                 "worst: t10 (0.300 vs 0.100 bits/spike)")
    assert grid_verdict({}).startswith("warning: forecast grid: no context window")
    assert grid_verdict({"t10": (NAN, 0.1)}, "x").endswith("(1 undefined)")
