"""xfads: fit and forecast neural population recordings with XFADS, from Python (docs/api.md).

    import xfads

    xfads.simulate("lorenz", "lorenz.nwb", neurons=20, trials=40, bins=60)
    run = xfads.fit("lorenz.nwb", "runs/lorenz", max_epochs=5)   # or: run = xfads.load_run("runs/lorenz")
    smoothed = run.smooth("lorenz.nwb")          # Smoothed: rates_mean [trial, time, neuron], latents_mean, ...
    fc = run.forecast("lorenz.nwb", context=40, horizon=20, split="test")   # Forecast: [trial, horizon, neuron]

The public surface is exactly `__all__`: fit, load_run, simulate, Run, Smoothed, Forecast, UsageError,
RunFailure. Importing xfads is cheap: the names are resolved on first use (PEP 562), and torch is imported
only when a run is fitted or loaded. The command line (`xfads ...`) is the package xfads_cli.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

__all__ = ["Forecast", "Run", "RunFailure", "Smoothed", "UsageError", "fit", "load_run", "simulate"]

_HOME = {"Forecast": "xfads_cli.api", "Run": "xfads_cli.api", "Smoothed": "xfads_cli.api", "fit": "xfads_cli.api",
         "load_run": "xfads_cli.api", "simulate": "xfads_cli.api", "UsageError": "xfads_cli.errors",
         "RunFailure": "xfads_cli.errors"}

if TYPE_CHECKING:  # for type checkers and IDEs; at run time the names load lazily
    from xfads_cli.api import Forecast, Run, Smoothed, fit, load_run, simulate
    from xfads_cli.errors import RunFailure, UsageError


def __getattr__(name: str):
    if name == "__version__":
        from importlib.metadata import version

        return version("xfads")
    if name not in _HOME:
        raise AttributeError(f"module 'xfads' has no attribute '{name}'")
    import importlib

    value = getattr(importlib.import_module(_HOME[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*__all__, "__version__"])
