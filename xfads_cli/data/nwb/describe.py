"""`describe_nwb`: a plain JSON-serialisable summary of an NWB file for `xfads inspect`.

What the file holds (units and their rates, interval tables, behaviour series, ground truth), a
suggested bin size, and what loading it with the default options would give. A units table or
trials the defaults cannot load are reported in the summary; a file that cannot be read raises.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from xfads_cli.config import DataConfig
from xfads_cli.data.nwb.columns import text
from xfads_cli.data.nwb.opening import nwb_version, open_nwb
from xfads_cli.data.nwb.series import TRUTH_MODULE, all_series, parse_simulation
from xfads_cli.data.nwb.units import Units, read_units
from xfads_cli.data.nwb.windows import interval_tables, trial_windows
from xfads_cli.data.source import parse_source, source_text
from xfads_cli.errors import BadFile, UsageError

BIN_CHOICES_MS = (20, 50, 100)
# Population spikes per bin that `describe_nwb` aims for: the latent state is inferred from the
# whole population, so what matters is how many spikes all units fire together in one bin.
SPIKES_PER_BIN = 5.0


def describe_nwb(path: Path) -> dict:
    """Plain JSON-serialisable summary of an NWB file for `xfads inspect`.

    Per-unit mean rates are spikes / observed time, where observed time is the unit's
    obs_intervals when given, else the recording's active time: the span from first to last spike
    (any unit) minus pauses, i.e. gaps between consecutive spikes of all units merged that are
    longer than max(10 s, 50 x the median such gap). That keeps files holding only a few trials
    cut from a long session (e.g. mc_maze_2trials) from reporting near-zero rates.

    suggested_bin_ms: the smallest of 20, 50, 100 ms at which the whole population fires at least
    5 spikes per bin on average (100 ms when none does).

    defaults: what `load_nwb(path, DataConfig())` would produce (trials source, trial and bin
    counts), or the error it would raise.
    """
    path = parse_source(path)
    with open_nwb(path) as (io, nwb):
        info = {
            "path": source_text(path),
            "identifier": text(nwb.identifier),
            "session_description": text(nwb.session_description),
            "nwb_version": nwb_version(io),
        }
        units = None
        try:
            units = read_units(nwb, None)
            info["units"] = _describe_units(units)
        except BadFile:
            raise
        except UsageError as exc:
            info["units"] = {"count": 0, "error": str(exc)}
        info["intervals"] = {
            name: {"rows": len(table), "columns": list(table.colnames)}
            for name, table in interval_tables(nwb).items()
        }
        info["behavior"] = [_describe_series(p, ts) for p, ts in all_series(nwb)]
        info["ground_truth"] = _describe_truth(nwb)
        active = info["units"].get("active_s") or 0.0
        population_rate = info["units"].get("total_spikes", 0) / active if active > 0 else 0.0
        info["suggested_bin_ms"] = suggest_bin_ms(population_rate)
        info["defaults"] = _describe_defaults(nwb, units)
    return info


def suggest_bin_ms(population_rate_hz: float) -> int:
    """Smallest bin of BIN_CHOICES_MS where a population firing `population_rate_hz` spikes per second
    in total expects at least SPIKES_PER_BIN spikes per bin; the largest choice when none does."""
    for bin_ms in BIN_CHOICES_MS:
        if population_rate_hz * bin_ms / 1000.0 >= SPIKES_PER_BIN:
            return bin_ms
    return BIN_CHOICES_MS[-1]


def _describe_units(units: Units) -> dict:
    spikes = units.spikes
    n_spikes = np.array([len(s) for s in spikes])
    active = _active_seconds(spikes)
    observed = np.full(len(spikes), active)
    for j, iv in enumerate(units.obs or []):
        if len(iv):
            observed[j] = float(np.sum(iv[:, 1] - iv[:, 0]))
    with np.errstate(divide="ignore", invalid="ignore"):
        rates = np.where(observed > 0, n_spikes / observed, 0.0)
    return {
        "count": len(spikes),
        "columns": list(units.table.colnames),
        "total_spikes": int(n_spikes.sum()),
        "start_s": units.t_first,
        "stop_s": units.t_last,
        "duration_s": units.t_last - units.t_first,
        "active_s": active,
        "rate_hz_quantiles": [float(q) for q in np.quantile(rates, [0, 0.25, 0.5, 0.75, 1])],
        "units_below_0.1hz": int(np.sum(rates < 0.1)),
        "has_obs_intervals": units.obs is not None,
    }


def _active_seconds(spikes: list[np.ndarray]) -> float:
    """Recording time with spiking: first-to-last spike minus gaps (all units merged) longer than
    max(10 s, 50 x the median gap), which are taken as pauses between recorded segments."""
    merged = np.sort(np.concatenate(spikes))
    merged = merged[np.isfinite(merged)]
    if merged.size < 2:
        return 0.0
    gaps = np.diff(merged)
    pause = max(10.0, 50.0 * float(np.median(gaps)))
    return float(np.sum(gaps[gaps <= pause]))


def _describe_series(path: str, ts) -> dict:
    entry = {"name": ts.name, "path": path, "shape": [int(n) for n in ts.data.shape], "unit": text(ts.unit)}
    if ts.timestamps is not None:
        stamps = ts.timestamps
        entry["n_timestamps"] = int(len(stamps))
        if len(stamps):
            entry["time_range_s"] = [float(stamps[0]), float(stamps[len(stamps) - 1])]
    elif ts.rate is not None:
        entry["rate_hz"] = float(ts.rate)
        start = float(ts.starting_time or 0.0)
        entry["time_range_s"] = [start, start + (int(ts.data.shape[0]) - 1) / float(ts.rate)]
    return entry


def _describe_truth(nwb) -> dict | None:
    if TRUTH_MODULE not in nwb.processing:
        return None
    module = nwb.processing[TRUTH_MODULE]
    return {"series": sorted(module.data_interfaces), "simulation": parse_simulation(module.description, [])}


def _describe_defaults(nwb, units: Units | None) -> dict:
    cfg = DataConfig()
    if units is None:
        return {"error": "no units to load"}
    try:
        windows = trial_windows(nwb, cfg, units, -np.inf, [])
    except BadFile:
        raise
    except UsageError as exc:
        return {"error": str(exc)}
    out = {
        "trials_from": "chopped" if windows.table is None else windows.source,
        "n_trials": int(len(windows.starts)),
        "bins_per_trial": windows.n_bins,
        "bin_ms": cfg.bin_ms,
    }
    shorter = 0 if windows.lengths is None else int(np.sum(windows.lengths < windows.n_bins))
    if shorter:  # bins_per_trial is the longest trial's; the others are padded with NaN
        out |= {"shortest_trial_bins": int(windows.lengths.min()), "trials_shorter_than_longest": shorter}
    return out
