"""The documented Python API (docs/api.md), re-exported by the top-level package `xfads`:

    import xfads
    xfads.simulate("lorenz", "lorenz.nwb", neurons=20, trials=40, bins=60)
    run = xfads.fit("lorenz.nwb", "runs/lorenz", max_epochs=5)       # or xfads.load_run("runs/lorenz")
    smoothed = run.smooth("lorenz.nwb")                                # Smoothed: rates_mean [trial, time, neuron], ...
    fc = run.forecast("lorenz.nwb", context=40, horizon=20, split="test")

    run.py      Run, fit, load_run, simulate (torch imported when one is called)
    apply.py    smooth and forecast computed in memory through the library the CLI's commands use
    results.py  Smoothed, Forecast: frozen dataclasses of numpy arrays with named dims (numpy only)

A part beside the commands (tests/test_architecture.py): it calls fitting, the runs library and the
commands' public helpers, and nothing below it imports it.
"""

from xfads_cli.api.results import Forecast, Smoothed
from xfads_cli.api.run import Run, fit, load_run, simulate

__all__ = ["Forecast", "Run", "Smoothed", "fit", "load_run", "simulate"]
