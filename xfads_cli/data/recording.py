"""`Recording`: a session without trials, kept as spike times and binned stretch by stretch on demand.

Where `SpikeData` holds every bin at once (trials, or windows chopped out of a continuous session for
training), a Recording holds the spike times and the contiguous segments of the session, so that
`smooth` and `forecast` can run over hours of recording in pieces whose memory does not grow with the
session (model/streaming.py). Times are seconds on the file's clock; segment s has bins
[start_s + k * bin_s, start_s + (k + 1) * bin_s) for k = 0 .. n_bins(s) - 1.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from xfads_cli.errors import UsageError


@dataclass
class Recording:
    """spikes:    one sorted float64 array of spike times (s) per unit, [neuron] units
    obs:       per unit its observation intervals [k, 2] (s), or None (observed throughout); a bin not
               wholly inside them is NaN (missing) for that unit
    segments:  [segment, 2] start and stop (s) of the stretches in which some unit is observed
    unit_ids:  [neuron] strings; heldout: [neuron] bool (as the run's training data)
    provenance: path, sha256, format, trials_from='continuous'"""

    spikes: list[np.ndarray]
    obs: list[np.ndarray] | None
    segments: np.ndarray
    unit_ids: np.ndarray
    heldout: np.ndarray
    bin_ms: float
    session: str
    provenance: dict = field(default_factory=dict)

    @property
    def n_neurons(self) -> int:
        return len(self.spikes)

    @property
    def bin_s(self) -> float:
        return self.bin_ms / 1000.0

    def n_bins(self, segment: int) -> int:
        """Whole bins in segment `segment` (a last partial bin is dropped, as in trial windows)."""
        start, stop = self.segments[segment]
        return int(np.floor((stop - start) / self.bin_s + 1e-9))

    def timestamps(self, segment: int, b0: int = 0, b1: int | None = None) -> np.ndarray:
        """Start times (s) of bins [b0, b1) of a segment, float64 [time]."""
        b1 = self.n_bins(segment) if b1 is None else b1
        return self.segments[segment, 0] + np.arange(b0, b1) * self.bin_s

    def counts(self, segment: int, b0: int, b1: int) -> np.ndarray:
        """Spike counts of bins [b0, b1) of a segment: float32 [time, neuron], NaN where a unit was not
        observed for the whole bin."""
        edges = self.segments[segment, 0] + np.arange(b0, b1 + 1) * self.bin_s
        out = np.empty((b1 - b0, self.n_neurons), dtype=np.float32)
        for j, times in enumerate(self.spikes):
            # side='left': a spike on an edge falls into the bin that starts there (as data/binning.py)
            out[:, j] = np.diff(np.searchsorted(times, edges, side="left"))
        if self.obs is not None:
            from xfads_cli.data.binning import observed_bins

            for j, intervals in enumerate(self.obs):
                out[~observed_bins(intervals, edges[None])[0], j] = np.nan
        return out

    def summary(self) -> dict:
        """Plain data for inspect and output attributes."""
        lengths = [self.n_bins(s) for s in range(len(self.segments))]
        return {"session": self.session, "neurons": self.n_neurons, "bin_ms": self.bin_ms,
                "heldout_neurons": int(np.sum(self.heldout)), "segments": len(lengths), "bins": int(sum(lengths)),
                "segment_bins": lengths, "segment_start_s": self.segments[:, 0].tolist(),
                "spikes": int(sum(len(t) for t in self.spikes))}


def observed_segments(t_first: float, t_last: float, obs: list[np.ndarray] | None) -> np.ndarray:
    """[segment, 2]: the union of the units' observation intervals (merged where they touch or overlap),
    or [t_first, t_last] without them."""
    if obs is None or not any(len(iv) for iv in obs):
        return np.array([[t_first, t_last]], dtype=np.float64)
    iv = np.concatenate([np.asarray(x, dtype=np.float64).reshape(-1, 2) for x in obs if len(x)])
    iv = iv[np.isfinite(iv).all(1) & (iv[:, 1] > iv[:, 0])]
    iv = iv[np.argsort(iv[:, 0])]
    merged = [list(iv[0])]
    for lo, hi in iv[1:]:
        if lo <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], hi)
        else:
            merged.append([lo, hi])
    return np.array(merged, dtype=np.float64)


def forecast_windows(recording: Recording, times: np.ndarray, context: int, horizon: int
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each time: the counts of the `context` bins before it and the `horizon` bins from it, on its
    segment's bin grid (the forecast starts at the bin edge nearest the time): [time, context, neuron]
    and [time, horizon, neuron], and the first forecast bin's start time [time]."""
    ctx = np.empty((len(times), context, recording.n_neurons), dtype=np.float32)
    future = np.empty((len(times), horizon, recording.n_neurons), dtype=np.float32)
    starts = np.empty(len(times))
    for i, t in enumerate(times):
        inside = np.flatnonzero((recording.segments[:, 0] <= t) & (t <= recording.segments[:, 1]))
        b = -1 if inside.size == 0 else int(round((t - recording.segments[inside[0], 0]) / recording.bin_s))
        if inside.size == 0 or b < context or b + horizon > recording.n_bins(inside[0]):
            raise UsageError(f"--at-s {t:g}: the {context}-bin context before it and the {horizon}-bin horizon after it "
                             f"must lie in one recorded segment ({_segments_text(recording)}); choose another time or a "
                             "shorter --context/--horizon")
        seg = inside[0]
        counts = recording.counts(seg, b - context, b + horizon)
        ctx[i], future[i], starts[i] = counts[:context], counts[context:], recording.timestamps(seg, b, b + 1)[0]
    return ctx, future, starts


def _segments_text(recording) -> str:
    return ", ".join(f"{a:.3f}-{b:.3f} s" for a, b in recording.segments[:4]) + (" ..." if len(recording.segments) > 4 else "")
