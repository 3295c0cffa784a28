"""Scoring: every number xfads reports about a model's quality (docs/metrics.md), in one place.

    bits.py           Poisson NLL and bits/spike, whole or accumulated (BitsPerSpike, HeldoutBits); co/fp/oracle bps
    regression.py     R^2, the ridge decoder of vel R2, psth R2
    smoothing.py      the one Gaussian smoother along time (psth R2 and the baselines)
    psth.py           the fp baselines: leave-one-out PSTH (condition-aware), its width, train mean rate
    glm.py            the co baseline: smoothed held-in counts -> Poisson GLM -> held-out neurons
    baselines.py      Baselines: a recording's baselines fitted once (baselines_for)
    streamed.py       model score + baseline score sets, fed whole or block by block
    grid.py           the forecast grid: the windows scored per trial and the grid's one-line verdict
    summary.py        verdicts: one plain line per score, does the model beat its baseline
    evaluate.py       evaluate / score_window: runs the model and scores it (imports torch)
    selection.py      fit's per-epoch fp-bps that picks best.pt, and the note beside the final table

Everything but evaluate.py and selection.py is numpy only and is the package's API below; import
those two from their modules (they run models).
"""

from xfads_cli.scoring.baselines import Baselines, baselines_for, trial_aligned
from xfads_cli.scoring.bits import (
    BLOCK_TRIALS,
    BitsPerSpike,
    HeldoutBits,
    bits_from_nll,
    bits_per_spike,
    bits_per_spike_blocked,
    co_bps,
    fp_bps,
    oracle_bps,
    poisson_nll,
)
from xfads_cli.scoring.grid import GRID_MARK, Window, forecast_grid, grid_verdict, worst_window
from xfads_cli.scoring.glm import (
    CO_SIGMAS_MS,
    GLM_ALPHAS,
    SmoothingGLM,
    fit_poisson_glm,
    fit_smoothing_glm,
    glm_bounds,
    predict_poisson_glm,
    smoothing_glm_rates,
)
from xfads_cli.scoring.psth import (
    PSTH_SIGMAS_BINS,
    PsthPool,
    choose_psth_sigma,
    condition_codes,
    loo_psth,
    mean_rate,
    psth_gain_bps,
    psth_pool,
)
from xfads_cli.scoring.regression import psth_r2, r2_score, ridge_cv, vel_r2
from xfads_cli.scoring.smoothing import convolve_time, gaussian_smooth, gaussian_window
from xfads_cli.scoring.streamed import ForecastScores, SmoothedScores, score_forecast, score_smoothed
from xfads_cli.scoring.summary import baseline_summary, grid_verdict_line, judge, trial_labels, verdicts

__all__ = [
    "BLOCK_TRIALS", "CO_SIGMAS_MS", "GLM_ALPHAS", "GRID_MARK", "PSTH_SIGMAS_BINS",
    "Baselines", "BitsPerSpike", "ForecastScores", "HeldoutBits", "PsthPool", "SmoothedScores", "SmoothingGLM",
    "Window",
    "baseline_summary", "baselines_for", "bits_from_nll", "bits_per_spike", "bits_per_spike_blocked",
    "choose_psth_sigma", "co_bps", "condition_codes", "convolve_time", "fit_poisson_glm", "fit_smoothing_glm",
    "forecast_grid", "fp_bps", "gaussian_smooth", "gaussian_window", "glm_bounds", "grid_verdict",
    "grid_verdict_line", "judge", "loo_psth", "mean_rate", "oracle_bps", "poisson_nll", "predict_poisson_glm",
    "psth_gain_bps", "psth_pool", "psth_r2", "r2_score", "ridge_cv", "score_forecast", "score_smoothed",
    "smoothing_glm_rates", "trial_aligned", "trial_labels", "verdicts", "vel_r2", "worst_window",
]
