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
    provenance: plain dict: path, sha256, format and the options that produced this container
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
            truth={k: v[idx] for k, v in self.truth.items()},
        )

    def subset(self, split: str) -> "SpikeData":
        """Trials of one split ('train', 'valid', 'test'); 'all' returns self."""
        if split == "all":
            return self
        return self.select(self.split == split)

    def summary(self) -> dict:
        """Plain-data description (used by `inspect --json` and output attributes)."""
        total = float(np.nansum(self.counts))
        seconds = self.n_trials * self.n_time * self.dt
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
        }


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
