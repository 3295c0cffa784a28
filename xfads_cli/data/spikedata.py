"""`SpikeData`: the one container every loader produces and every command consumes."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

SPLITS = ("train", "valid", "test")


@dataclass
class SpikeData:
    """Binned spike counts of one recording session, cut into trials.

    counts:     [trial, time, neuron] float32 spike counts per bin (NaN marks a missing bin)
    bin_ms:     bin width in milliseconds
    unit_ids:   [neuron] unit identifiers as strings (from the file's units table)
    trial_ids:  [trial] integer ids (row of the trials/interval table, or window index)
    split:      [trial] 'train' | 'valid' | 'test'
    session:    session name (file stem unless configured)
    heldout:    [neuron] bool, True for neurons the encoder must never read (co-bps)
    behavior:   [trial, time, dim] float32 or None; `behavior_names` label the dims
    start_s:    [trial] start time of each trial window in the recording (seconds), or None
    truth:      ground truth for simulated data, e.g. 'latents' [trial, time, latent],
                'rates' [trial, time, neuron] (expected counts per bin),
                'retest_counts' [trial, time, neuron] (an independent second draw)
    conditions: [trial] condition label per trial (for PSTHs), or None
    events:     event name -> [trial] float64 time of that event in bins from the start of the trial's
                window (fractional: 2.5 is the middle of bin 2); NaN where the trial has no such event
                or it falls outside the window. Empty: no events.
    provenance: plain dict: path, sha256, format and the options that produced this container
    lengths:    [trial] int bins of each trial before its padding (None: every trial has n_time).
                Trials of different durations are padded to the longest with NaN: counts (and
                behaviour, truth) at bins >= lengths[k] are NaN. Bins before it may be NaN too
                (missing data, e.g. a window that starts before the trial).
    """

    counts: np.ndarray
    bin_ms: float
    unit_ids: np.ndarray
    trial_ids: np.ndarray
    split: np.ndarray
    session: str
    heldout: np.ndarray
    behavior: np.ndarray | None = None
    behavior_names: list[str] = field(default_factory=list)
    start_s: np.ndarray | None = None
    truth: dict[str, np.ndarray] = field(default_factory=dict)
    conditions: np.ndarray | None = None
    provenance: dict = field(default_factory=dict)
    lengths: np.ndarray | None = None
    events: dict[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self):
        n_trial, n_time, n_neuron = self.counts.shape
        checks = {
            "unit_ids": (self.unit_ids, (n_neuron,)),
            "trial_ids": (self.trial_ids, (n_trial,)),
            "split": (self.split, (n_trial,)),
            "heldout": (self.heldout, (n_neuron,)),
        }
        for name, (arr, shape) in checks.items():
            if np.shape(arr) != shape:
                raise ValueError(f"SpikeData.{name} has shape {np.shape(arr)}, expected {shape}")
        if self.behavior is not None and self.behavior.shape[:2] != (n_trial, n_time):
            raise ValueError(f"SpikeData.behavior has shape {self.behavior.shape}, expected ({n_trial}, {n_time}, dim)")
        for name, times in self.events.items():
            if np.shape(times) != (n_trial,) or np.asarray(times).dtype.kind != "f":
                raise ValueError(f"SpikeData.events['{name}'] has shape {np.shape(times)} "
                                 f"({np.asarray(times).dtype}), expected ({n_trial},) float (bins)")
        self.lengths = self._checked_lengths()

    def _checked_lengths(self) -> np.ndarray:
        """[trial] int64 lengths: all n_time when not given; else 0..n_time with NaN counts past each."""
        n_trial, n_time = self.counts.shape[:2]
        if self.lengths is None:
            return np.full(n_trial, n_time, dtype=np.int64)
        lengths = np.asarray(self.lengths)
        if lengths.shape != (n_trial,) or lengths.dtype.kind not in "iu":
            raise ValueError(f"SpikeData.lengths has shape {lengths.shape} ({lengths.dtype}), expected ({n_trial},) int")
        if n_trial and (lengths.min() < 0 or lengths.max() > n_time):
            raise ValueError(f"SpikeData.lengths must lie in 0..{n_time} (bins), got {lengths.min()}..{lengths.max()}")
        if (lengths < n_time).any() and not np.isnan(self.counts[padding_mask(lengths, n_time)]).all():
            raise ValueError("SpikeData.counts must be NaN past each trial's length (the padding)")
        return lengths.astype(np.int64)

    @property
    def n_trials(self) -> int:
        return self.counts.shape[0]

    @property
    def n_time(self) -> int:
        return self.counts.shape[1]

    @property
    def n_neurons(self) -> int:
        return self.counts.shape[2]

    @property
    def dt(self) -> float:
        """Bin width in seconds."""
        return self.bin_ms / 1000.0

    def select(self, trials) -> "SpikeData":
        """A new SpikeData with only `trials` (boolean mask or indices), all per-trial fields cut alike."""
        idx = np.arange(self.n_trials)[trials]
        take = lambda a: None if a is None else a[idx]  # noqa: E731
        return replace(
            self,
            counts=self.counts[idx],
            trial_ids=self.trial_ids[idx],
            split=self.split[idx],
            behavior=take(self.behavior),
            start_s=take(self.start_s),
            conditions=take(self.conditions),
            events={k: v[idx] for k, v in self.events.items()},
            truth={k: v[idx] for k, v in self.truth.items()},
            lengths=self.lengths[idx],
        )

    def subset(self, split: str) -> "SpikeData":
        """Trials of one split ('train', 'valid', 'test'); 'all' returns self."""
        if split == "all":
            return self
        return self.select(self.split == split)

    def split_index(self, split: str) -> np.ndarray:
        """[trial] positions in this container of the trials subset(split) holds ('all': every trial)."""
        return np.arange(self.n_trials) if split == "all" else np.flatnonzero(self.split == split)

    def summary(self) -> dict:
        """Plain-data description (used by `inspect --json` and output attributes)."""
        total = float(np.nansum(self.counts))
        seconds = float(np.sum(self.lengths)) * self.dt  # the padding is no recorded time
        return {
            "session": self.session,
            "trials": self.n_trials,
            "bins": self.n_time,
            "bin_ms": self.bin_ms,
            "neurons": self.n_neurons,
            "heldout_neurons": int(np.sum(self.heldout)),
            "spikes": total,
            "mean_rate_hz": total / max(seconds * self.n_neurons, 1e-12),
            "split": {s: int(np.sum(self.split == s)) for s in SPLITS},
            "behavior": list(self.behavior_names),
            "truth": sorted(self.truth),
            "trial_lengths": self.length_summary(),
        }

    def length_summary(self) -> dict:
        """Per-trial lengths for `inspect`: min/median/max in bins and seconds, and how many trials
        are shorter than the longest (padded with NaN)."""
        if self.n_trials == 0:
            return {}
        quantiles = dict(zip(("min", "median", "max"), np.quantile(self.lengths, [0, 0.5, 1])))
        out = {f"{k}_bins": float(v) if k == "median" else int(v) for k, v in quantiles.items()}
        out |= {f"{k}_s": float(v) * self.dt for k, v in quantiles.items()}
        out["shorter_than_longest"] = int(np.sum(self.lengths < self.lengths.max()))
        return out


def padding_mask(lengths: np.ndarray, n_time: int) -> np.ndarray:
    """[trial, time] bool: True at the bins past each trial's length (its NaN padding)."""
    return np.arange(n_time)[None, :] >= np.asarray(lengths)[:, None]


def trailing_lengths(counts: np.ndarray) -> np.ndarray:
    """[trial] bins of each trial up to its last bin with any observed count: counts [trial, time,
    neuron] padded with NaN at the end (an all-NaN trial has length 0)."""
    observed = np.zeros(counts.shape[:2], dtype=bool)
    for j in range(counts.shape[2]):  # neuron by neuron: no boolean copy of the whole array
        observed |= ~np.isnan(counts[:, :, j])
    last = counts.shape[1] - np.argmax(observed[:, ::-1], axis=1)
    return np.where(observed.any(axis=1), last, 0).astype(np.int64)


def blank_padding(part: dict[str, np.ndarray], lengths: np.ndarray, first_bin: int = 0) -> dict[str, np.ndarray]:
    """`part` with NaN in every float array at the bins past each trial's length, so that outputs
    hold no model extrapolation into the padding. part: name -> [trial, time, ...] arrays, or
    [trial, sample, time, ...] for names ending in '_samples'; their bin i is bin first_bin + i of
    the trial (a forecast's horizon starts after its context). lengths: [trial] of those trials."""
    out = {}
    for name, arr in part.items():
        arr = np.asarray(arr)
        axis = 2 if name.endswith("_samples") else 1
        if arr.dtype.kind != "f" or arr.ndim <= axis:
            out[name] = arr
            continue
        pad = padding_mask(np.asarray(lengths) - first_bin, arr.shape[axis])  # [trial, time]
        if axis == 2:
            pad = pad[:, None]
        pad = pad.reshape(pad.shape + (1,) * (arr.ndim - pad.ndim))
        out[name] = np.where(pad, np.nan, arr).astype(arr.dtype, copy=False) if pad.any() else arr
    return out


class Padding:
    """blank_padding for an output written block by block: blank(part) blanks the next consecutive
    trials' arrays past their `lengths` ([trial] of all the output's trials). Bin i of the arrays is
    bin first_bin + i of the trial, except for the `skip` names (inputs such as a forecast's
    context_counts, which cover other bins and hold NaN at the padding already)."""

    def __init__(self, lengths: np.ndarray, first_bin: int = 0, skip=()):
        self.lengths, self.first_bin, self.skip = np.asarray(lengths), int(first_bin), set(skip)
        self.position = 0  # trials blanked so far

    def blank(self, part: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if not part:
            return part
        n = len(next(iter(part.values())))
        lengths = self.lengths[self.position : self.position + n]
        self.position += n
        kept = {k: v for k, v in part.items() if k in self.skip}
        return blank_padding({k: v for k, v in part.items() if k not in self.skip}, lengths, self.first_bin) | kept


def assign_split(n_trials: int, fractions: tuple[float, float, float], seed: int) -> np.ndarray:
    """Seeded random train/valid/test split by trial. Every split gets at least one trial when
    there are enough trials, so that validation and test metrics always exist."""
    frac = np.asarray(fractions, dtype=float)
    if not (np.isfinite(frac).all() and (frac >= 0).all() and frac.sum() > 0):
        from xfads_cli.errors import UsageError

        raise UsageError(f"data.split must be train, valid and test fractions >= 0 that do not all equal 0, got "
                         f"{[float(f) for f in frac]}; e.g. --set data.split=[0.8,0.1,0.1]")
    if n_trials == 0:
        return np.array([], dtype="<U5")
    frac = frac / frac.sum()
    counts = np.floor(frac * n_trials).astype(int)
    for i in (1, 2):  # valid and test get one trial each before train takes the remainder
        if frac[i] > 0 and counts[i] == 0 and n_trials - counts[1:].sum() > 1:
            counts[i] = 1
    counts[0] = n_trials - counts[1] - counts[2]
    empty = [name for name, f, c in zip(SPLITS, frac, counts) if f > 0 and c == 0]
    if empty:
        import warnings

        warnings.warn(f"{n_trials} trial(s) split into train {counts[0]} / valid {counts[1]} / test {counts[2]}: no "
                      f"{' or '.join(empty)} trials, so {' and '.join(empty)} metrics will be missing; "
                      "a recording with more trials (or windows: data.chop_ms) gives every split some", stacklevel=2)
    labels = np.repeat(np.array(SPLITS), counts)
    order = np.random.default_rng(seed).permutation(n_trials)
    split = np.empty(n_trials, dtype="<U5")
    split[order] = labels
    return split
