"""Exact, vectorised binning of spike times and resampling of behaviour onto bins.

Bins are half-open, [edge_k, edge_{k+1}): a spike exactly on an edge belongs to the later bin.
Edges are computed once as start + k * bin_s, and everything (counts, masks, behaviour) uses the
same edges, so a brute-force loop over spikes with the same comparison gives identical counts.
"""

from __future__ import annotations

import numpy as np


def bin_edges(starts_s: np.ndarray, n_bins: int, bin_s: float) -> np.ndarray:
    """Bin edges of every trial window: [trial, n_bins + 1] in seconds."""
    return np.asarray(starts_s, dtype=np.float64)[:, None] + np.arange(n_bins + 1) * float(bin_s)


def bin_spikes(spike_times: list[np.ndarray], edges: np.ndarray) -> np.ndarray:
    """Count spikes of each unit in each bin.

    spike_times: one array of spike times (seconds, any order) per unit
    edges:       [trial, time + 1] bin edges from `bin_edges`
    returns      [trial, time, neuron] float32 counts
    """
    n_trial, n_edge = edges.shape
    counts = np.zeros((n_trial, n_edge - 1, len(spike_times)), dtype=np.float32)
    flat = edges.ravel()
    for j, times in enumerate(spike_times):
        times = np.sort(np.asarray(times, dtype=np.float64))
        # side='left' counts spikes < edge, so a spike on an edge falls into the bin that starts there.
        below = np.searchsorted(times, flat, side="left").reshape(n_trial, n_edge)
        counts[:, :, j] = np.diff(below, axis=1)
    return counts


def observed_bins(intervals: np.ndarray | None, edges: np.ndarray) -> np.ndarray:
    """[trial, time] bool: True where the whole bin lies inside one of the observation `intervals`
    ([k, 2] start/stop seconds). None means the unit was observed throughout."""
    if intervals is None or len(intervals) == 0:
        return np.ones((edges.shape[0], edges.shape[1] - 1), dtype=bool)
    iv = np.asarray(intervals, dtype=np.float64).reshape(-1, 2)
    iv = iv[np.argsort(iv[:, 0])]
    lo, hi = edges[:, :-1], edges[:, 1:]
    # The interval that starts last at or before the bin start is the only one that can contain it.
    k = np.searchsorted(iv[:, 0], lo, side="right") - 1
    valid = k >= 0
    k = np.clip(k, 0, None)
    return valid & (hi <= iv[k, 1])


def window_starts(t_start: float, t_stop: float, window_s: float, overlap_s: float = 0.0) -> np.ndarray:
    """Start times of fixed windows chopping [t_start, t_stop) with the given overlap; only whole
    windows are kept."""
    step = window_s - overlap_s
    if step <= 0:
        raise ValueError("window overlap must be smaller than the window")
    n = int(np.floor((t_stop - t_start - window_s) / step + 1e-9)) + 1
    return t_start + step * np.arange(max(n, 0))


def resample(timestamps: np.ndarray, values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Resample a time series onto bins.

    timestamps: [sample] seconds (sorted or not); values: [sample, dim] (or [sample])
    edges:      [trial, time + 1]
    returns     [trial, time, dim] float32: the mean of the samples inside each bin, or, for bins
                with no sample (series slower than the bins), linear interpolation at the bin centre;
                NaN outside the series' time range. NaN samples are ignored.
    """
    ts = np.asarray(timestamps, dtype=np.float64)
    vals = np.asarray(values, dtype=np.float64)
    if vals.ndim == 1:
        vals = vals[:, None]
    vals = vals.reshape(len(vals), -1)
    order = np.argsort(ts, kind="stable")
    ts, vals = ts[order], vals[order]
    finite = np.isfinite(vals)
    csum = np.concatenate([np.zeros((1, vals.shape[1])), np.cumsum(np.where(finite, vals, 0.0), axis=0)])
    ccnt = np.concatenate([np.zeros((1, vals.shape[1])), np.cumsum(finite, axis=0)])

    n_trial, n_edge = edges.shape
    idx = np.searchsorted(ts, edges.ravel(), side="left").reshape(n_trial, n_edge)
    lo, hi = idx[:, :-1], idx[:, 1:]
    total = csum[hi] - csum[lo]
    count = ccnt[hi] - ccnt[lo]
    with np.errstate(invalid="ignore", divide="ignore"):
        out = total / count

    centres = 0.5 * (edges[:, :-1] + edges[:, 1:])
    empty = count == 0
    if empty.any():
        for d in range(vals.shape[1]):
            ok = finite[:, d]
            if ok.sum() < 2:
                continue
            interp = np.interp(centres, ts[ok], vals[ok, d], left=np.nan, right=np.nan)
            out[..., d] = np.where(empty[..., d], interp, out[..., d])
    return out.astype(np.float32)
