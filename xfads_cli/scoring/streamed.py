"""The score sets of smoothed and forecast rates, each model score next to its baseline's on the same
trials and bins: fed whole arrays (`score_smoothed`, `score_forecast`) or block by block as the rates
are made (`SmoothedScores`, `ForecastScores`: smooth, forecast and evaluate stream through them).
"""

from __future__ import annotations

import numpy as np

from xfads_cli.data.spikedata import SpikeData
from xfads_cli.scoring.baselines import baselines_for
from xfads_cli.scoring.bits import BLOCK_TRIALS, BitsPerSpike, bits_per_spike_blocked


def score_smoothed(rates: np.ndarray, data: SpikeData, baselines: bool = False) -> dict:
    """co-bps on held-out neurons, and test-retest bps when the data hold a second draw; with
    `baselines`, co_baseline_bps of the smoothing baseline fitted on `data`'s train split."""
    scores = SmoothedScores(data, co_baseline=baselines_for(data).co_source(np.arange(data.n_trials)) if baselines else None)
    for start in range(0, len(rates), BLOCK_TRIALS):
        scores.add(rates[start : start + BLOCK_TRIALS])
    return scores.result()


def score_forecast(rates: np.ndarray, data: SpikeData, context: int, baselines: bool = False) -> dict:
    """fp-bps of forecast rates [trial, horizon, neuron] against the observed bins after the context;
    with `baselines`, fp_baseline_bps of the fp baseline of `data` (all its trials)."""
    horizon = rates.shape[1]
    source = baselines_for(data).fp_source(np.arange(data.n_trials), context, horizon) if baselines else None
    scores = ForecastScores(data, context, horizon, fp_baseline=source)
    for start in range(0, len(rates), BLOCK_TRIALS):
        scores.add(rates[start : start + BLOCK_TRIALS])
    return scores.result()


class SmoothedScores:
    """score_smoothed fed block by block: add(rates_mean [block, time, neuron]) for consecutive
    trials of `data`, then result(). trials: optional [trial] mask of the trials scored (one split),
    the others' rates are passed over. The inputs (counts, truth) are used in place, never copied.
    co_baseline: optional callable(positions) -> baseline rates [len(positions), time, neuron] of
    those trials of `data` (Baselines.co_source), scored as co_baseline_bps on the same trials."""

    def __init__(self, data: SpikeData, trials: np.ndarray | None = None, co_baseline=None):
        self.data, self.trials = data, trials
        self.scores = {}
        self.baseline = co_baseline if data.heldout.any() else None
        self.position = 0
        if data.heldout.any():
            self.scores["co_bps"] = BitsPerSpike(data.counts, neurons=data.heldout, trials=trials)
        if self.baseline is not None:
            self.scores["co_baseline_bps"] = BitsPerSpike(data.counts, neurons=data.heldout, trials=trials)
        if "retest_counts" in data.truth:
            self.scores["retest_bps"] = BitsPerSpike(data.truth["retest_counts"], trials=trials)

    def add(self, rates: np.ndarray) -> None:
        start, self.position = self.position, self.position + len(rates)
        for key, score in self.scores.items():
            if key != "co_baseline_bps":
                score.add(rates)
        if self.baseline is not None:
            self.scores["co_baseline_bps"].add(_baseline_block(self.baseline, start, self.position, self.trials,
                                                               rates.shape))

    def result(self) -> dict:
        out = {k: score.value() for k, score in self.scores.items()}
        if "retest_counts" in self.data.truth:
            out["retest_oracle_bps"] = bits_per_spike_blocked(self.data.truth["rates"], self.data.truth["retest_counts"],
                                                                self.trials)
        return out


class ForecastScores:
    """score_forecast fed block by block: add(rates_mean [block, horizon, neuron]) of forecasts after
    the first `context` bins of consecutive trials of `data`, then result(); no scores when the
    trials end before context + horizon. fp_baseline: optional callable(positions) -> baseline rates
    [len(positions), horizon, neuron] for those trials (Baselines.fp_source): fp_baseline_bps."""

    def __init__(self, data: SpikeData, context: int, horizon: int, fp_baseline=None):
        self.observed = data.counts[:, context : context + horizon]  # a view
        self.scored = self.observed.shape[1] == horizon
        self.fp = BitsPerSpike(self.observed) if self.scored else None
        self.baseline = fp_baseline if self.scored else None
        self.fp_baseline = BitsPerSpike(self.observed) if self.baseline is not None else None
        self.position = 0
        self.truth = data.truth["rates"][:, context : context + horizon] if "rates" in data.truth else None

    def add(self, rates: np.ndarray) -> None:
        start, self.position = self.position, self.position + len(rates)
        if self.scored:
            self.fp.add(rates)
        if self.baseline is not None:
            self.fp_baseline.add(_baseline_block(self.baseline, start, self.position, None, rates.shape))

    def result(self) -> dict:
        if not self.scored:
            return {}
        out = {"fp_bps": self.fp.value()}
        if self.fp_baseline is not None:
            out["fp_baseline_bps"] = self.fp_baseline.value()
        if self.truth is not None:
            out["fp_oracle_bps"] = bits_per_spike_blocked(self.truth, self.observed)
        return out


def forecast_scoring(base, rows: SpikeData, rows_index: np.ndarray, context: int, horizon: int
                     ) -> tuple[ForecastScores, dict]:
    """What `xfads forecast` and the Python API's Run.forecast score and store beside the forecasts of
    the trials `rows` (rows_index: their positions in the recording, whose Baselines are `base`) after
    their first `context` bins: the scores (fp-bps next to the trial-average baseline) and the per-trial
    inputs (counts [trial, horizon, neuron], context_counts [trial, context, neuron], true_rates when
    simulated), views of the recording."""
    inputs = {"counts": rows.counts[:, context : context + horizon], "context_counts": rows.counts[:, :context]}
    if "rates" in rows.truth:
        inputs["true_rates"] = rows.truth["rates"][:, context : context + horizon]
    scores = ForecastScores(rows, context, horizon, fp_baseline=base.fp_source(rows_index, context, horizon))
    return scores, inputs


def _baseline_block(source, start: int, stop: int, trials: np.ndarray | None, shape) -> np.ndarray:
    """Baseline rates for trials start..stop-1 shaped like the model's block; only the trials of the
    `trials` mask are computed (the others are passed over by the scores: ones)."""
    keep = np.arange(start, stop) if trials is None else start + np.flatnonzero(trials[start:stop])
    if len(keep) == stop - start:
        return source(keep)
    block = np.ones(shape)
    block[keep - start] = source(keep) if len(keep) else 0.0
    return block
