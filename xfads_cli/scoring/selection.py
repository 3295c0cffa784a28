"""The score that picks best.pt when it is fp-bps (train.select), and the note that tells it apart from
the final table's score of the same name: fit's per-epoch forecast score is drawn differently
(fixed draws, possibly other windows) from the one evaluate reports for best.pt.
"""

from __future__ import annotations

import math

import numpy as np

from xfads_cli.config import Config
from xfads_cli.scoring.evaluate import default_forecast_window, grid_windows, score_window

SELECT_SAMPLES = 20  # forecast samples per trial for the per-epoch fp-bps


def selection_fp_bps(model, valid, config: Config) -> float:
    """fp-bps of the validation trials' forecasts, averaged over the forecast-grid windows of
    trial-aligned data (grid_windows: contexts across the trial and just before each event,
    so the score looks where the task drives the population) or, without a grid, of the last third of
    each trial from the first two (eval.context_bins / horizon_bins). SELECT_SAMPLES draws from a fixed
    generator: the same draws every epoch, so that epochs differ by their parameters, not by Monte
    Carlo noise."""
    import torch

    windows, _ = _selection_windows(valid, config)
    if not windows:
        return math.nan
    was_training = model.training
    model.eval()
    gen = torch.Generator(device=next(model.parameters()).device).manual_seed(config.seed)
    values = [score_window(model, valid, context, horizon, config, n_samples=SELECT_SAMPLES, generator=gen)
              .get("fp_bps", math.nan) for context, horizon in windows]
    model.train(was_training)
    return float(np.mean(values))


def _selection_windows(valid, config: Config) -> tuple[list[tuple[int, int]], bool]:
    """The (context, horizon) windows selection_fp_bps scores, and whether they are the forecast grid's."""
    windows = [(w.context, w.horizon) for w in grid_windows(valid, config)]
    if windows:
        return windows, True
    window = default_forecast_window(valid.n_time, config)
    return ([] if window is None else [window]), False


def selection_note(select: str, score: float, epoch: int, config: Config, valid) -> str | None:
    """What the selection score (the progress line's best, summary.json's best_score) is beside the
    table's score of the same name, which evaluates best.pt again: without it they read as two values
    of one number. None when the table has no score of that name."""
    if select not in ("valid_co_bps", "valid_fp_bps") or not math.isfinite(score):
        return None
    head = f"best.pt was selected on {select} {score:.4g} at epoch {epoch} (the progress line's 'best')"
    if select == "valid_co_bps":
        return f"{head}; the table's valid_co_bps is best.pt scored again with new posterior draws"
    windows, grid = _selection_windows(valid, config)
    where = f"mean over the forecast grid's {len(windows)} windows" if grid else _bins(*windows[0])
    note = f"{head}: {SELECT_SAMPLES} fixed draws per trial, {where}"
    final = default_forecast_window(valid.n_time, config)
    if final is None:  # evaluate scores no such window: the table has no valid_fp_bps
        return note
    again = f"the table's valid_fp_bps is best.pt scored again with eval.samples={config.eval.samples} draws"
    return f"{note}; {again}, {_bins(*final)}" if grid else f"{note}; {again}"


def _bins(context: int, horizon: int) -> str:
    return f"bins {context}-{context + horizon - 1} forecast from the first {context}"
