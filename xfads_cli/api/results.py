"""What the Python API returns: `Smoothed` and `Forecast`, frozen dataclasses of numpy arrays whose
dimensions are named in `dims` (the same numbers `xfads smooth` / `xfads forecast` write to HDF5).

numpy only at import: xarray (`to_xarray`) and pynapple (`to_pynapple`) are imported when asked for.

Two layouts, as the CLI's outputs:
    "trials"      a trial-aligned recording (or the windows of one without trials): [trial, time, ...]
    "continuous"  a recording without trials smoothed whole: [time, ...], the segments one after another,
                  on the recording's own clock (`times`, `segments`)
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from xfads_cli.errors import UsageError

# field -> its dims after the leading row dims ("trial"/"time" or "time"); index fields name theirs whole
_SMOOTH_FIELDS = {"latents_mean": ("latent",), "latents_var": ("latent",), "rates_mean": ("neuron",),
                  "rates_q05": ("neuron",), "rates_q50": ("neuron",), "rates_q95": ("neuron",),
                  "counts": ("neuron",)}
_FORECAST_FIELDS = {"rates_mean": ("neuron",), "rates_q05": ("neuron",), "rates_q50": ("neuron",),
                    "rates_q95": ("neuron",), "latents_mean": ("latent",), "counts": ("neuron",)}


TRUTH_DIMS = {"rates": "neuron", "retest_counts": "neuron", "latents": "true_latent"}  # simulated recordings


@dataclass(frozen=True)
class Smoothed:
    """Smoothed latents and rates of a recording under a run (`Run.smooth`).

    layout "trials":       rates_mean, rates_q05/q50/q95, counts [trial, time, neuron];
                           latents_mean, latents_var [trial, time, latent];
                           trial_ids, split, lengths [trial]; start_s [trial] (s, NWB files; else None);
                           times [time]: each bin's start in seconds from its trial's start
    layout "continuous":   the same fields as [time, ...]; times [time]: each bin's start (s) on the
                           recording's clock; segments [segment, 2]: first and stop row of each segment
    Both:                  unit_ids, heldout [neuron]; bin_ms; metrics (co-bps etc., as the CLI's);
                           truth: the recording's ground truth (simulated data: 'rates', 'latents',
                           [trial, time, ...]) or {}.
    Rates are expected counts per bin (divide by bin_ms / 1000 for Hz); NaN past a trial's length."""

    layout: str
    rates_mean: np.ndarray
    rates_q05: np.ndarray
    rates_q50: np.ndarray
    rates_q95: np.ndarray
    latents_mean: np.ndarray
    latents_var: np.ndarray
    counts: np.ndarray
    times: np.ndarray
    unit_ids: np.ndarray
    heldout: np.ndarray
    bin_ms: float
    metrics: dict = field(default_factory=dict)
    trial_ids: np.ndarray | None = None
    split: np.ndarray | None = None
    lengths: np.ndarray | None = None
    start_s: np.ndarray | None = None
    segments: np.ndarray | None = None
    truth: dict = field(default_factory=dict)

    @property
    def dims(self) -> dict[str, tuple[str, ...]]:
        """Each array field's dimension names, e.g. {'rates_mean': ('trial', 'time', 'neuron'), ...}."""
        return _dims(self, _SMOOTH_FIELDS, ("time",))

    def to_xarray(self):
        """An xarray.Dataset of the arrays with their dims and coordinates (trial ids, unit ids, times);
        needs xarray (not a dependency of xfads: pip install xarray)."""
        return _to_xarray(self, self.dims, {"time": self.times})

    def to_pynapple(self, name: str = "rates_mean"):
        """A continuous recording's `name` (rates_mean, rates_q05/q50/q95, counts, latents_mean,
        latents_var) as a pynapple TsdFrame on the recording's clock: one row per bin, at the bin's
        centre (`times` + bin_ms / 2, where pynapple's own count() puts binned data), columns the unit
        ids (latents: 0..L-1), the time support the recording's segments. Trial results have no single
        time base and raise UsageError: use the arrays or `to_xarray()`. Needs pip install 'xfads[pynapple]'."""
        if self.layout != "continuous":
            raise UsageError("to_pynapple() needs a recording without trials (smoothed whole, on its own time base); "
                             "this result holds trials [trial, time, ...]: use its arrays or to_xarray()")
        if name not in _SMOOTH_FIELDS:
            raise UsageError(f"to_pynapple: no field '{name}'; one of {', '.join(_SMOOTH_FIELDS)}")
        nap = _pynapple()
        bin_s = self.bin_ms / 1000.0
        starts = self.times[self.segments[:, 0]]
        stops = self.times[self.segments[:, 1] - 1] + bin_s
        columns = list(self.unit_ids) if _SMOOTH_FIELDS[name] == ("neuron",) else None
        return nap.TsdFrame(t=self.times + bin_s / 2, d=getattr(self, name), columns=columns,
                            time_support=nap.IntervalSet(start=starts, end=stops), time_units="s")


@dataclass(frozen=True)
class Forecast:
    """Forecasts of a recording under a run (`Run.forecast`): `horizon` bins after a `context`.

    layout "trials":      one forecast per trial, after its first `context` bins;
    layout "continuous":  one per time of `at_s` (a recording without trials), after the context before it.
    rates_mean, rates_q05/q50/q95 [trial, horizon, neuron]; latents_mean [trial, horizon, latent];
    counts [trial, horizon, neuron] (observed); context_counts [trial, context, neuron];
    true_rates [trial, horizon, neuron] (simulated trial data) or None; times [horizon]: seconds from the
    first forecast bin; start_s [trial]: time of each first forecast bin (s; None for HDF5 trials);
    trial_ids, split, lengths [trial] (trials) or at_s [trial] (continuous); unit_ids [neuron];
    context, horizon (bins), bin_ms, metrics (fp-bps next to its baseline, as the CLI's)."""

    layout: str
    rates_mean: np.ndarray
    rates_q05: np.ndarray
    rates_q50: np.ndarray
    rates_q95: np.ndarray
    latents_mean: np.ndarray
    counts: np.ndarray
    context_counts: np.ndarray
    times: np.ndarray
    unit_ids: np.ndarray
    context: int
    horizon: int
    bin_ms: float
    metrics: dict = field(default_factory=dict)
    true_rates: np.ndarray | None = None
    trial_ids: np.ndarray | None = None
    split: np.ndarray | None = None
    lengths: np.ndarray | None = None
    start_s: np.ndarray | None = None
    at_s: np.ndarray | None = None

    @property
    def dims(self) -> dict[str, tuple[str, ...]]:
        """Each array field's dimension names, e.g. {'rates_mean': ('trial', 'horizon', 'neuron'), ...}."""
        found = {k: ("trial", "horizon", *v) for k, v in _FORECAST_FIELDS.items()}
        found["context_counts"] = ("trial", "context", "neuron")
        if self.true_rates is not None:
            found["true_rates"] = ("trial", "horizon", "neuron")
        found |= {k: ("trial",) for k in ("trial_ids", "split", "lengths", "start_s", "at_s")
                  if getattr(self, k) is not None}
        return found | {"unit_ids": ("neuron",)}

    def to_xarray(self):
        """An xarray.Dataset of the arrays with their dims and coordinates; needs xarray."""
        return _to_xarray(self, self.dims, {"horizon": self.times})


def _dims(result, fields: dict, rows: tuple[str, ...]) -> dict[str, tuple[str, ...]]:
    lead = ("trial", *rows) if result.layout == "trials" else rows
    found = {k: (*lead, *v) for k, v in fields.items()}
    found |= {f"truth_{k}": (*lead, TRUTH_DIMS.get(k, f"{k}_dim")) for k in result.truth}
    found |= {k: ("trial",) for k in ("trial_ids", "split", "lengths", "start_s") if getattr(result, k) is not None}
    if result.segments is not None:
        found["segments"] = ("segment", "edge")
    return found | {"unit_ids": ("neuron",), "heldout": ("neuron",)}


def _value(result, name: str):
    return result.truth[name[6:]] if name.startswith("truth_") else getattr(result, name)


def _to_xarray(result, dims: dict, coords: dict):
    try:
        import xarray as xr
    except ImportError:
        raise UsageError("to_xarray() needs xarray, which xfads does not install: pip install xarray") from None
    index = {"unit_ids", "trial_ids"}
    data = {k: (v, _value(result, k)) for k, v in dims.items() if k not in index}
    coords = dict(coords) | {"neuron": result.unit_ids}
    if result.trial_ids is not None:
        coords["trial"] = result.trial_ids
    attrs = {"layout": result.layout, "bin_ms": result.bin_ms}
    attrs |= {k: getattr(result, k) for k in ("context", "horizon") if hasattr(result, k)}
    return xr.Dataset(data, coords=coords, attrs=attrs | {"metrics": dict(result.metrics)})


def _pynapple():
    try:
        import pynapple
    except ImportError:
        raise UsageError("to_pynapple() needs pynapple: pip install 'xfads[pynapple]'") from None
    return pynapple

