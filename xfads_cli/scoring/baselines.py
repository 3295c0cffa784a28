"""The trivial baselines of a recording, fitted once and kept: what every model score is set beside.

`baselines_for(data)` gives the one `Baselines` of a SpikeData (fitted on first use, so fit's
per-epoch, final and summary calls and smooth/forecast share one fit); its fp_source / co_source
make the baseline rates the score sets of scoring/streamed.py take, one block of trials at a time.
"""

from __future__ import annotations

import functools
import weakref

import numpy as np

from xfads_cli.data.spikedata import SpikeData
from xfads_cli.scoring.glm import fit_smoothing_glm, smoothing_glm_rates
from xfads_cli.scoring.psth import choose_psth_sigma, loo_psth, mean_rate, psth_pool

FP_PSTH = "leave-one-out PSTH"
FP_PSTH_CONDITION = f"condition-aware {FP_PSTH}"  # verdicts name the baseline by this leading text
FP_MEAN = "train-split mean rate"


def trial_aligned(provenance: dict) -> bool:
    """True unless the loader chopped the windows out of a continuous recording
    (SpikeData.provenance["trials_from"] == "chopped"); interval tables, simulated trials and HDF5
    tensors are trial-aligned."""
    return provenance.get("trials_from") != "chopped"


class Baselines:
    """The trivial baselines of one recording `data` (all its trials; scoring/psth.py and
    scoring/glm.py), each fitted on first use and kept (baselines_for keeps one per SpikeData):

    fp: the leave-one-out PSTH over all other trials (smoothing width chosen on the train split) for
        trial-aligned windows, condition-aware when data.conditions is not None (the other trials of
        the same condition; a trial alone in its condition: all other trials), each neuron's
        train-split mean rate for windows chopped out of a continuous recording
        (provenance["trials_from"] == "chopped");
    co: the smoothing baseline, a Poisson GLM from smoothed held-in counts to the held-out neurons
        fitted on the train split (None without held-out neurons or training trials).

    fp_source / co_source give callables(positions) -> rates for the trials index[positions] of
    `data`: what ForecastScores / SmoothedScores take, one block at a time."""

    def __init__(self, data: SpikeData):
        self._data = weakref.ref(data)  # no cycle: baselines_for's cache must not keep a recording alive
        self.aligned = trial_aligned(data.provenance)
        self.source = str(data.provenance.get("trials_from", "trials"))

    @property
    def data(self) -> SpikeData:
        data = self._data()
        if data is None:
            raise RuntimeError("the recording of these baselines is gone")
        return data

    @functools.cached_property
    def fp(self):
        """("psth", sigma_bins, PsthPool) or ("mean", [neuron] rates), or None (no training trials).
        The PsthPool is condition-aware (pool.conditioned) when data.conditions is not None, and the
        width is then chosen with the condition-aware PSTH too."""
        data = self.data
        train = data.split == "train"
        if self.aligned:
            conditions = data.conditions
            sigma, _ = choose_psth_sigma(data.counts, train, conditions=conditions) if train.sum() >= 2 else (0.0, {})
            return "psth", sigma, psth_pool(data.counts, conditions=conditions)
        if not train.any():
            return None
        return "mean", mean_rate(data.counts, train)

    @functools.cached_property
    def co(self):
        data = self.data
        return fit_smoothing_glm(data.counts, data.heldout, data.split == "train", data.bin_ms)

    def fp_source(self, index: np.ndarray, context: int, horizon: int):
        """callable(positions) -> fp baseline rates [len(positions), horizon, neuron] of the trials
        index[positions] at bins context .. context + horizon - 1; None without a baseline."""
        if self.fp is None:
            return None
        counts = self.data.counts

        def rates(positions: np.ndarray) -> np.ndarray:
            if self.fp[0] == "mean":
                return np.broadcast_to(self.fp[1], (len(positions), horizon, counts.shape[2]))
            return loo_psth(counts, index[positions], self.fp[1], self.fp[2])[:, context : context + horizon]

        return rates

    def co_source(self, index: np.ndarray):
        """callable(positions) -> co baseline rates [len(positions), time, neuron] (held-out columns
        from the GLM, held-in ones 1: never scored) of the trials index[positions]; None without one."""
        if not self.data.heldout.any() or self.co is None:
            return None
        counts, model = self.data.counts, self.co

        def rates(positions: np.ndarray) -> np.ndarray:
            rows = index[positions]
            out = np.ones((len(rows), counts.shape[1], counts.shape[2]))
            out[..., model.heldout] = smoothing_glm_rates(model, counts[rows])
            return out

        return rates

    def describe(self) -> dict:
        """{"fp": ..., "co": ...}: which baseline each score used (only those computed so far)."""
        out = {}
        if self.__dict__.get("fp") is not None:
            if self.fp[0] == "psth" and self.fp[2].conditioned:
                out["fp"] = (f"{FP_PSTH_CONDITION} (each trial predicted by the other trials of the same condition, "
                             f"{self._condition_source()}, {len(self.fp[2].labels)} conditions, at the same bins, "
                             "plus one pseudo-trial at the neuron's mean rate; a trial alone in its condition by all "
                             f"other trials; Gaussian smoothing sigma {self.fp[1]:g} bins chosen on the train split; "
                             f"trial-aligned windows from '{self.source}')")
            elif self.fp[0] == "psth":
                out["fp"] = (f"{FP_PSTH} (each trial predicted by all other trials of the recording at the same bins, "
                             f"plus one pseudo-trial at the neuron's mean rate; Gaussian smoothing sigma {self.fp[1]:g} "
                             f"bins chosen on the train split; trial-aligned windows from '{self.source}')")
            else:
                out["fp"] = f"{FP_MEAN} (each neuron's mean over the training trials; windows chopped from the recording)"
        if self.__dict__.get("co") is not None:
            out["co"] = self.co.describe()
        return out

    def _condition_source(self) -> str:
        """"data.condition 'stimulus'" when the loader recorded the column, else "data.condition"."""
        column = self.data.provenance.get("condition")
        return f"data.condition '{column}'" if isinstance(column, str) and column else "data.condition"


# (weak reference to the recording, its Baselines): SpikeData is an unhashable dataclass, so no
# WeakKeyDictionary; a recording is found by identity, never by id(), which a later object can reuse
_CACHE: list[tuple[weakref.ref, Baselines]] = []


def baselines_for(data: SpikeData) -> Baselines:
    """The Baselines of `data`, one per SpikeData object while it lives (so the per-epoch, final and
    summary calls share one fit). The cache holds the recording weakly and drops its entry when the
    recording is gone."""
    for ref, base in list(_CACHE):  # a snapshot: a recording collected meanwhile edits the list
        if ref() is data:
            return base
    base = Baselines(data)
    _CACHE.append((weakref.ref(data, _forget), base))
    return base


def _forget(gone: weakref.ref) -> None:
    _CACHE[:] = [entry for entry in _CACHE if entry[0] is not gone]
