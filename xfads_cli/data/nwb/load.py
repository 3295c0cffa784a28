"""Loading an NWB file: `load_nwb` bins it into trials (`SpikeData`), `load_nwb_recording` keeps a
session without trials as spike times (`Recording`, data/recording.py).

Everything is copied into numpy arrays while the file is open; no pynwb object escapes the package.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from xfads_cli.config import DataConfig
from xfads_cli.data.binning import bin_edges, bin_spikes, observed_bins
from xfads_cli.data.nwb.opening import nwb_version
from xfads_cli.data.nwb.series import find_series, read_truth, resample_behaviour, series_times
from xfads_cli.data.nwb.trial_columns import trial_conditions, trial_events
from xfads_cli.data.nwb.units import Units, read_heldout, read_units
from xfads_cli.data.nwb.windows import Windows, outside_trials, trial_windows
from xfads_cli.data.opened import OpenFile, open_file
from xfads_cli.data.spikedata import SpikeData, assign_split
from xfads_cli.errors import UsageError


def load_nwb(path: Path, cfg: DataConfig = DataConfig()) -> SpikeData:
    """Bin the units of the NWB file at `path` into trials as `cfg` says (`read_nwb` of the file)."""
    with open_file(path) as f:
        return read_nwb(f, cfg)


def read_nwb(f: OpenFile, cfg: DataConfig = DataConfig()) -> SpikeData:
    """Bin the units of the open NWB file `f` (data/opened.py) into trials as `cfg` says.

    Returns SpikeData with counts [trial, time, neuron] (NaN where a bin is not fully inside a unit's
    obs_intervals), behavior [trial, time, dim] when `cfg.behavior` names series, and for simulated
    files truth 'latents' [trial, time, latent], 'rates' [trial, time, neuron] in expected counts per
    bin and, when the bin is a whole multiple of the simulation bin, 'retest_counts'.
    Raises UsageError for anything the user can fix (paths, options, malformed files).
    """
    path = f.source
    if not (cfg.bin_ms > 0 and np.isfinite(cfg.bin_ms)):
        raise UsageError(f"data.bin_ms must be positive and finite, got {cfg.bin_ms}; e.g. --set data.bin_ms=20")
    bin_s = cfg.bin_ms / 1000.0
    notes: list[str] = []  # user warnings, issued after pynwb's own warnings are no longer muted
    with f.nwb() as (io, nwb):
        units = read_units(nwb, cfg.units)
        series = [find_series(nwb, name) for name in cfg.behavior]
        times = [series_times(ts) for _, _, ts in series]
        behaviour_end = max((float(np.nanmax(t)) for t in times if len(t)), default=-np.inf)
        windows = trial_windows(nwb, cfg, units, behaviour_end, notes)
        edges = bin_edges(windows.starts, windows.n_bins, bin_s)
        behavior, behavior_names = resample_behaviour(series, times, edges)
        truth, simulation = read_truth(nwb, edges, cfg.bin_ms, units, notes)
        conditions, condition_column = trial_conditions(windows, cfg.condition)
        events = trial_events(windows, cfg.events, bin_s)
        heldout = read_heldout(cfg, units)
        version = nwb_version(io)
    for note in notes:
        warnings.warn(note, stacklevel=2)

    counts = _counts(units, windows, edges)
    outside = outside_trials(windows)
    for arr in (counts, behavior, *truth.values()):
        if arr is not None:
            arr[outside] = np.nan  # spikes (and samples) before or after a trial are not its own

    provenance = {
        **f.provenance(),
        "format": "nwb",
        "nwb_version": version,
        "trials_from": windows.source,
        "condition": condition_column,
        "events": list(events),
    }
    if simulation is not None:
        provenance["simulation"] = simulation
    return SpikeData(
        counts=counts,
        bin_ms=float(cfg.bin_ms),
        unit_ids=units.ids,
        trial_ids=windows.trial_ids,
        split=assign_split(len(windows.starts), cfg.split, cfg.split_seed),
        session=cfg.session or path.stem,
        heldout=heldout,
        behavior=behavior,
        behavior_names=behavior_names,
        start_s=windows.starts,
        truth=truth,
        conditions=conditions,
        provenance=provenance,
        lengths=windows.lengths,
        events=events,
    )


def _counts(units: Units, windows: Windows, edges: np.ndarray) -> np.ndarray:
    """[trial, time, neuron] spike counts, NaN where a bin is not wholly inside the unit's obs_intervals."""
    counts = bin_spikes(units.spikes, edges)
    if units.obs is not None:
        for j, intervals in enumerate(units.obs):
            counts[:, :, j][~observed_bins(intervals, edges)] = np.nan
    return counts


def load_nwb_recording(path: Path, cfg: DataConfig = DataConfig()):
    """`read_nwb_recording` of the NWB file at `path`."""
    with open_file(path) as f:
        return read_nwb_recording(f, cfg)


def read_nwb_recording(f: OpenFile, cfg: DataConfig = DataConfig()):
    """The session of the open NWB file `f` as a `Recording` (spike times, segments) when `cfg` defines
    no trials on it (no trials table and no data.intervals: the recording `read_nwb` chops into
    windows), else None. The units, their selection and the held-out neurons are `read_nwb`'s."""
    from xfads_cli.data.recording import Recording, observed_segments

    path = f.source
    with f.nwb() as (io, nwb):
        if cfg.intervals is not None or nwb.trials is not None:
            return None
        units = read_units(nwb, cfg.units)
        heldout = read_heldout(cfg, units)
        version = nwb_version(io)
    # Finite already (units.py checks). The units' times are views of the one column read, kept as they
    # are when every unit is kept and in order, so the recording holds its spikes once (8 bytes each); a
    # unit selection copies (views would keep the dropped units' spikes alive), as does an out-of-order
    # unit (a stable sort is linear on sorted input).
    whole = len(units.rows) == units.n_rows
    spikes = [t if whole and np.all(t[1:] >= t[:-1]) else np.sort(t, kind="stable")
              for t in (np.asarray(u, dtype=np.float64) for u in units.spikes)]
    provenance = {**f.provenance(), "format": "nwb",
                  "nwb_version": version, "trials_from": "continuous"}
    return Recording(spikes=spikes, obs=units.obs, segments=observed_segments(units.t_first, units.t_last, units.obs),
                     unit_ids=units.ids, heldout=heldout, bin_ms=float(cfg.bin_ms), session=cfg.session or path.stem,
                     provenance=provenance)
