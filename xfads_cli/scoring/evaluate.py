"""Honest metrics of a model (docs/metrics.md): `evaluate` for fit's per-epoch and final scores and
adapt's, and `score_window` for one forecast window, each score next to its trivial baseline. This is
the part of scoring that runs the model (inference.py); the scores themselves are the other modules'.
"""

from __future__ import annotations

import numpy as np

from xfads_cli.config import Config
from xfads_cli.data.spikedata import SpikeData, blank_padding
from xfads_cli.runs.inference import iter_forecast, iter_smooth
from xfads_cli.runs import model_inputs
from xfads_cli.scoring.baselines import baselines_for, trial_aligned
from xfads_cli.scoring.bits import BLOCK_TRIALS
from xfads_cli.scoring.grid import GRID_MARK, forecast_grid
from xfads_cli.scoring.regression import psth_r2, vel_r2
from xfads_cli.scoring.streamed import ForecastScores, SmoothedScores


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
    # in a fixed order: smoothing draws from the global RNG, and a set's order of strings changes with
    # PYTHONHASHSEED (the same fit scored differently from one process to the next)
    need = list(dict.fromkeys([*splits, *(["train"] if decode_behavior else [])]))
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
        for start in range(0, sub.n_trials, BLOCK_TRIALS):  # baseline rates are made one block at a time
            smoothed_scores.add(rates[split][start : start + BLOCK_TRIALS])
        out.update({f"{split}_{k}": v for k, v in smoothed_scores.result().items()})
        lag = int(round(config.eval.behavior_lag_ms / data.bin_ms))
        # A lag as long as the trial leaves no (rate, behaviour) pair inside any trial: no score.
        if decode_behavior and "train" in rates and split != "train" and 0 <= lag < data.n_time:
            out[f"{split}_behavior_r2"] = vel_r2(rates["train"], data.subset("train").behavior, rates[split], sub.behavior, lag_bins=lag)
        if decode and data.conditions is not None:
            out[f"{split}_psth_r2"] = psth_r2(rates[split], sub.counts, sub.conditions, data.bin_ms, config.eval.psth_sigma_ms)
        window = default_forecast_window(data.n_time, config)
        if forecast and window is not None:  # else no fp-bps
            out.update({f"{split}_{k}": v for k, v in
                        score_window(model, sub, *window, config, base, index).items()})
        # the grid of the split verdicts judge (test, else valid): 5+ forecast passes per split
        if forecast and split == ("test" if "test" in splits and (data.split == "test").any() else "valid"):
            out.update({f"{split}_{k}": v for k, v in grid_scores(model, sub, config, base, index).items()})
    return {k: float(v) for k, v in out.items()}


def grid_windows(data: SpikeData, config: Config) -> list:
    """The forecast-grid windows (scoring/grid.py) of trial-aligned `data`: contexts across the trial
    and just before each event (data.events), horizon eval.horizon_bins (default a quarter of the
    trial); none for windows chopped from a continuous recording (no trial clock to align them by)."""
    if not trial_aligned(data.provenance):
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
