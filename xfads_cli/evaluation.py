"""Scores (docs/metrics.md) and the trivial baselines beside them: `evaluate` for fit's per-epoch
and final metrics, the streaming score accumulators of smooth/forecast, and the verdict lines.
"""

from __future__ import annotations

import functools

import numpy as np

from xfads_cli.config import Config
from xfads_cli.data.spikedata import SpikeData, blank_padding
from xfads_cli.inference import iter_forecast, iter_smooth
from xfads_cli.outputs import baselines as B
from xfads_cli.outputs import metrics as M
from xfads_cli.runs import model_inputs


def default_forecast_window(n_time: int, config: Config) -> tuple[int, int] | None:
    """(context, horizon) bins of the scored forecast (eval.context_bins / horizon_bins; default: the
    first 2/3 of the trial, then the rest), or None when they leave no forecast inside n_time bins."""
    context = config.eval.context_bins or max(1, (2 * n_time) // 3)
    horizon = config.eval.horizon_bins or n_time - context
    if horizon < 1 or context + horizon > n_time:
        return None
    return context, horizon


EVAL_SPLITS = ("valid", "test")


def evaluate(model, data: SpikeData, config: Config, splits=EVAL_SPLITS, forecast: bool = True,
             decode: bool = True, smoothed: np.ndarray | None = None, baselines: bool = True) -> dict:
    """Honest metrics (docs/metrics.md) for the trials of each split in `splits`, keyed `{split}_{metric}`:
    co_bps (held-out neurons), retest_bps + retest_oracle_bps (simulated data), fp_bps (+ oracle),
    and with `decode`: behavior_r2 (R^2 of the data.behavior series, whatever it is, decoded linearly
    from the rates by NLB's vel_r2 procedure, decoder fit on train-split rates), psth_r2 (conditions).
    With `baselines`, co_baseline_bps and fp_baseline_bps next to co_bps and fp_bps: what the trivial
    baselines of `Baselines` score on the same trials and bins (fitted once per `data`, see
    baselines_for; baseline_summary describes them and says whether the model beats them).
    smoothed: rates_mean [trial, time, neuron] of every trial of `data` when already computed.
    Smoothed rates_mean of the splits are held whole (the decoders need them); forecasts are scored
    block by block."""
    out: dict = {}
    base = baselines_for(data) if baselines else None
    decode_behavior = decode and data.behavior is not None
    need = set(splits) | ({"train"} if decode_behavior else set())
    rates = {}
    for split in need:
        sub = data.subset(split)
        if sub.n_trials and smoothed is not None:
            rates[split] = smoothed[data.split == split]
        elif sub.n_trials:
            rates[split] = np.concatenate([part["rates_mean"] for part in
                                           iter_smooth(model, sub.counts, batch_size=config.train.batch_size,
                                                       u=model_inputs(model, sub))])
        if split in rates:  # the decoders and PSTHs average rates over trials: not over their padding
            rates[split] = blank_padding({"rates": rates[split]}, sub.lengths)["rates"]
    for split in splits:
        sub = data.subset(split)
        if split not in rates:
            continue
        index = np.flatnonzero(data.split == split)
        smoothed_scores = SmoothedScores(sub, co_baseline=None if base is None else base.co_source(index))
        for start in range(0, sub.n_trials, M.BLOCK_TRIALS):  # baseline rates are made one block at a time
            smoothed_scores.add(rates[split][start : start + M.BLOCK_TRIALS])
        out.update({f"{split}_{k}": v for k, v in smoothed_scores.result().items()})
        lag = int(round(config.eval.behavior_lag_ms / data.bin_ms))
        # A lag as long as the trial leaves no (rate, behaviour) pair inside any trial: no score.
        if decode_behavior and "train" in rates and split != "train" and 0 <= lag < data.n_time:
            out[f"{split}_behavior_r2"] = M.vel_r2(rates["train"], data.subset("train").behavior, rates[split], sub.behavior, lag_bins=lag)
        if decode and data.conditions is not None:
            out[f"{split}_psth_r2"] = M.psth_r2(rates[split], sub.counts, sub.conditions, data.bin_ms, config.eval.psth_sigma_ms)
        window = default_forecast_window(data.n_time, config)
        if forecast and window is not None:  # else no fp-bps
            out.update({f"{split}_{k}": v for k, v in
                        score_window(model, sub, *window, config, base, index).items()})
        # the grid of the split verdicts judge (test, else valid): 5+ forecast passes per split
        if forecast and split == ("test" if "test" in splits and (data.split == "test").any() else "valid"):
            out.update({f"{split}_{k}": v for k, v in grid_scores(model, sub, config, base, index).items()})
    return {k: float(v) for k, v in out.items()}


GRID_MARK = "@"  # metric keys of a forecast-grid window: '{split}_fp_bps@{window}', '{split}_fp_baseline_bps@{window}'


def grid_windows(data: SpikeData, config: Config) -> list:
    """The forecast-grid windows (forecast_grid.py) of trial-aligned `data`: contexts across the trial
    and just before each event (data.events), horizon eval.horizon_bins (default a quarter of the
    trial); none for windows chopped from a continuous recording (no trial clock to align them by)."""
    from xfads_cli.forecast_grid import forecast_grid

    if not B.trial_aligned(data.provenance):
        return []
    return forecast_grid(data.n_time, config.eval.horizon_bins, getattr(data, "events", None) or None)


def grid_scores(model, sub: SpikeData, config: Config, base=None, index=None, n_samples: int | None = None) -> dict:
    """{'fp_bps@W': ..., 'fp_baseline_bps@W': ...} for each forecast-grid window W of `sub`'s trials
    (grid_windows; empty for chopped windows). base, index: as score_window's."""
    out = {}
    for w in grid_windows(sub, config):
        found = score_window(model, sub, w.context, w.horizon, config, base, index, n_samples=n_samples)
        out.update({f"{k}{GRID_MARK}{w.name}": v for k, v in found.items() if k != "fp_oracle_bps"})
    return out


def grid_verdict_line(metrics: dict, baseline: str | None, split: str = "") -> str | None:
    """forecast_grid.grid_verdict over the grid scores of `split` in metrics ('' : unprefixed keys,
    as forecast's), or None without grid scores."""
    from xfads_cli.forecast_grid import grid_verdict

    prefix = f"{split}_" if split else ""
    scores = {}
    for key, value in metrics.items():
        if key.startswith(f"{prefix}fp_bps{GRID_MARK}"):
            name = key.split(GRID_MARK, 1)[1]
            scores[name] = (value, metrics.get(f"{prefix}fp_baseline_bps{GRID_MARK}{name}", float("nan")))
    return grid_verdict(scores, baseline) if scores else None


def score_window(model, sub: SpikeData, context: int, horizon: int, config: Config, base=None, index=None,
                 n_samples: int | None = None, generator=None) -> dict:
    """fp_bps (and fp_baseline_bps with `base`, fp_oracle_bps on simulated data) of the forecasts of
    bins context .. context + horizon - 1 of `sub`'s trials from their first `context` bins, the
    model given the task inputs known in advance (runs.model_inputs). index: the rows of `sub` in the
    recording `base` was fitted on. generator: a torch.Generator for every draw (fit's selection)."""
    scores = ForecastScores(sub, context, horizon,
                            fp_baseline=None if base is None else base.fp_source(index, context, horizon))
    u = model_inputs(model, sub, n_time=context + horizon, known_until=context)
    if generator is None:
        for part in iter_forecast(model, sub.counts[:, :context], horizon, n_samples=n_samples or config.eval.samples,
                                  batch_size=config.train.batch_size, u=u):
            scores.add(part["rates_mean"])
        return scores.result()
    import torch

    from xfads_cli.runs import as_tensor

    size = config.train.batch_size
    for i in range(0, sub.n_trials, size):
        y = as_tensor(sub.counts[i : i + size, :context], model)
        extra = {} if u is None else {"u": as_tensor(u[i : i + size], model)}
        with torch.no_grad():
            fc = model.forecast(y, horizon, n_samples=n_samples or config.eval.samples, generator=generator, **extra)
        scores.add(fc.rates.mean(0).cpu().numpy())
    return scores.result()


def score_smoothed(rates: np.ndarray, data: SpikeData, baselines: bool = False) -> dict:
    """co-bps on held-out neurons, and test-retest bps when the data hold a second draw; with
    `baselines`, co_baseline_bps of the smoothing baseline fitted on `data`'s train split."""
    scores = SmoothedScores(data, co_baseline=baselines_for(data).co_source(np.arange(data.n_trials)) if baselines else None)
    for start in range(0, len(rates), M.BLOCK_TRIALS):
        scores.add(rates[start : start + M.BLOCK_TRIALS])
    return scores.result()


def score_forecast(rates: np.ndarray, data: SpikeData, context: int, baselines: bool = False) -> dict:
    """fp-bps of forecast rates [trial, horizon, neuron] against the observed bins after the context;
    with `baselines`, fp_baseline_bps of the fp baseline of `data` (all its trials)."""
    horizon = rates.shape[1]
    source = baselines_for(data).fp_source(np.arange(data.n_trials), context, horizon) if baselines else None
    scores = ForecastScores(data, context, horizon, fp_baseline=source)
    for start in range(0, len(rates), M.BLOCK_TRIALS):
        scores.add(rates[start : start + M.BLOCK_TRIALS])
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
            self.scores["co_bps"] = M.BitsPerSpike(data.counts, neurons=data.heldout, trials=trials)
        if self.baseline is not None:
            self.scores["co_baseline_bps"] = M.BitsPerSpike(data.counts, neurons=data.heldout, trials=trials)
        if "retest_counts" in data.truth:
            self.scores["retest_bps"] = M.BitsPerSpike(data.truth["retest_counts"], trials=trials)

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
            out["retest_oracle_bps"] = M.bits_per_spike_blocked(self.data.truth["rates"], self.data.truth["retest_counts"],
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
        self.fp = M.BitsPerSpike(self.observed) if self.scored else None
        self.baseline = fp_baseline if self.scored else None
        self.fp_baseline = M.BitsPerSpike(self.observed) if self.baseline is not None else None
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
            out["fp_oracle_bps"] = M.bits_per_spike_blocked(self.truth, self.observed)
        return out


def _baseline_block(source, start: int, stop: int, trials: np.ndarray | None, shape) -> np.ndarray:
    """Baseline rates for trials start..stop-1 shaped like the model's block; only the trials of the
    `trials` mask are computed (the others are passed over by the scores: ones)."""
    keep = np.arange(start, stop) if trials is None else start + np.flatnonzero(trials[start:stop])
    if len(keep) == stop - start:
        return source(keep)
    block = np.ones(shape)
    block[keep - start] = source(keep) if len(keep) else 0.0
    return block


class Baselines:
    """The trivial baselines of one recording `data` (all its trials; outputs/baselines.py), each
    fitted on first use and kept (baselines_for keeps one per SpikeData):

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
        import weakref

        self._data = weakref.ref(data)  # no cycle: baselines_for's cache must not keep a recording alive
        self.aligned = B.trial_aligned(data.provenance)
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
            sigma, _ = B.choose_psth_sigma(data.counts, train, conditions=conditions) if train.sum() >= 2 else (0.0, {})
            return "psth", sigma, B.psth_pool(data.counts, conditions=conditions)
        if not train.any():
            return None
        return "mean", B.mean_rate(data.counts, train)

    @functools.cached_property
    def co(self):
        data = self.data
        return B.fit_smoothing_glm(data.counts, data.heldout, data.split == "train", data.bin_ms)

    def fp_source(self, index: np.ndarray, context: int, horizon: int):
        """callable(positions) -> fp baseline rates [len(positions), horizon, neuron] of the trials
        index[positions] at bins context .. context + horizon - 1; None without a baseline."""
        if self.fp is None:
            return None
        counts = self.data.counts

        def rates(positions: np.ndarray) -> np.ndarray:
            if self.fp[0] == "mean":
                return np.broadcast_to(self.fp[1], (len(positions), horizon, counts.shape[2]))
            return B.loo_psth(counts, index[positions], self.fp[1], self.fp[2])[:, context : context + horizon]

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
            out[..., model.heldout] = B.smoothing_glm_rates(model, counts[rows])
            return out

        return rates

    def describe(self) -> dict:
        """{"fp": ..., "co": ...}: which baseline each score used (only those computed so far)."""
        out = {}
        if self.__dict__.get("fp") is not None:
            if self.fp[0] == "psth" and self.fp[2].conditioned:
                out["fp"] = (f"{B.FP_PSTH_CONDITION} (each trial predicted by the other trials of the same condition, "
                             f"{self._condition_source()}, {len(self.fp[2].labels)} conditions, at the same bins, "
                             "plus one pseudo-trial at the neuron's mean rate; a trial alone in its condition by all "
                             f"other trials; Gaussian smoothing sigma {self.fp[1]:g} bins chosen on the train split; "
                             f"trial-aligned windows from '{self.source}')")
            elif self.fp[0] == "psth":
                out["fp"] = (f"{B.FP_PSTH} (each trial predicted by all other trials of the recording at the same bins, "
                             f"plus one pseudo-trial at the neuron's mean rate; Gaussian smoothing sigma {self.fp[1]:g} "
                             f"bins chosen on the train split; trial-aligned windows from '{self.source}')")
            else:
                out["fp"] = f"{B.FP_MEAN} (each neuron's mean over the training trials; windows chopped from the recording)"
        if self.__dict__.get("co") is not None:
            out["co"] = self.co.describe()
        return out

    def _condition_source(self) -> str:
        """"data.condition 'stimulus'" when the loader recorded the column, else "data.condition"."""
        column = self.data.provenance.get("condition")
        return f"data.condition '{column}'" if isinstance(column, str) and column else "data.condition"


_BASELINES: dict[int, Baselines] = {}


def baselines_for(data: SpikeData) -> Baselines:
    """The Baselines of `data`, one per SpikeData object while it lives (so the per-epoch, final and
    summary calls share one fit)."""
    import weakref

    key = id(data)
    entry = _BASELINES.get(key)
    if entry is None or entry._data() is not data:
        entry = _BASELINES[key] = Baselines(data)
        weakref.finalize(data, _BASELINES.pop, key, None)
    return entry


def trial_labels(data: SpikeData, scored: str = "all") -> dict[str, str]:
    """How verdicts name the judged trials: {"valid": "12 valid trials", ..., "": <the scored trials>}."""
    labels = {s: f"{int(np.sum(data.split == s))} {s} trials" for s in ("train", "valid", "test")}
    labels[""] = f"all {data.n_trials} trials" if scored == "all" else labels.get(scored, f"the {scored} trials")
    return labels


def baseline_summary(sessions, metrics: dict, meta: bool = False) -> dict:
    """{"baselines": which baseline each score used, "verdicts": one line per score saying whether the
    model beats it} for a summary (fit: the test split when it has trials, else valid). sessions: the
    SpikeData of a single-session run (or a list of one), or every session of a meta run with
    meta=True (metrics keyed "session/metric"); metrics from evaluate (with baselines)."""
    sessions = sessions if isinstance(sessions, (list, tuple)) else [sessions]
    if meta:
        described = {d.session: baselines_for(d).describe() for d in sessions}
        labels = {d.session: trial_labels(d) for d in sessions}
    else:
        described, labels = baselines_for(sessions[0]).describe(), trial_labels(sessions[0])
    verdicts = B.verdicts(metrics, described, labels)
    if not meta:  # the forecast grid of the most honest split that has one
        for split in ("test", "valid"):
            line = grid_verdict_line(metrics, described.get("fp"), split)
            if line is not None:
                verdicts.append(f"{line} ({labels[split]})")
                break
    return {"baselines": described, "verdicts": verdicts}


def judge(base: Baselines, metrics: dict, labels: dict) -> dict:
    """{"baselines": ..., "verdicts": [...]} for a command's summary and output attributes (with the
    forecast grid's line when metrics hold grid scores)."""
    described = base.describe()
    verdicts = B.verdicts(metrics, described, labels)
    line = grid_verdict_line(metrics, described.get("fp"))
    if line is not None:
        verdicts.append(f"{line} ({labels['']})")
    return {"baselines": described, "verdicts": verdicts}
