"""Diagnostic figures (PNG) for `--plot`: training curves, PSTHs, forecasts, latent trajectories.

matplotlib is an optional extra (`pip install 'xfads[plot]'`) and is imported only when a figure is
drawn. Figures are built on matplotlib's object API with the Agg canvas instead of pyplot: no global
backend switch (that would hijack the backend of a notebook importing xfads) and no figure registry
to leak. Each function writes one PNG (temporary name, then os.replace) and returns its path.

Array conventions: [trial, time, neuron] counts or rates in spikes PER BIN; `bin_ms` converts them
to Hz for PSTHs and puts time axes in seconds (bin centres). NaN marks missing bins and is skipped in
averages. `trials` pick rows of the arrays; a panel names its trial by the recording's id when
`trial_ids` (each row's id, as `smooth` and `forecast` write them) is given, else "trial in row k":
never a bare "trial k", which reads as either.
Epochs are numbered from 0, as in metrics.csv and summary.json.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import numpy as np

from xfads_cli.atomic import atomic_path
from xfads_cli.errors import UsageError

DPI = 120
MAX_PANELS = 6  # neurons in a PSTH figure
OBSERVED, PREDICTED = "0.25", "tab:blue"  # colours when there is one condition
BAND_LABEL = "5–95% band"


# --------------------------------------------------------------------------------------------------
# Public API


def plot_training(history: list[dict], out: Path) -> Path:
    """Loss per epoch (train_loss, valid_loss) and, in a second panel, every column whose name
    contains 'bps' (e.g. valid_co_bps, valid_fp_bps). history: one dict per epoch with 'epoch';
    missing, None or NaN values are skipped."""
    new_figure = _figure_factory()
    bps_keys = sorted({k for rec in history for k in rec if "bps" in k})
    fig = new_figure(figsize=(7, 6.5 if bps_keys else 3.8), layout="constrained")
    axes = fig.subplots(2 if bps_keys else 1, 1, sharex=True, squeeze=False)[:, 0]
    epochs = [rec.get("epoch", i) for i, rec in enumerate(history)]
    for key, style in (("train_loss", "-"), ("valid_loss", "--")):
        _plot_column(axes[0], epochs, history, key, style)
    axes[0].set_ylabel("loss (-ELBO per bin)")
    axes[0].set_title(f"Training ({len(history)} epochs)")
    for key in bps_keys:
        _plot_column(axes[-1], epochs, history, key, "-")
    if bps_keys:
        axes[-1].axhline(0.0, color="0.6", lw=0.8)
        axes[-1].set_ylabel("bits per spike")
        axes[-1].set_title("Bits per spike")
    axes[-1].set_xlabel("epoch")
    from matplotlib.ticker import MaxNLocator

    axes[-1].xaxis.set_major_locator(MaxNLocator(integer=True))
    for ax in axes:
        if ax.lines:
            ax.legend(fontsize=8)
        else:
            ax.text(0.5, 0.5, "no values recorded", ha="center", va="center", transform=ax.transAxes)
    return _save(fig, out)


def plot_psth(
    counts: np.ndarray,
    rates_mean: np.ndarray,
    rates_lo: np.ndarray,
    rates_hi: np.ndarray,
    bin_ms: float,
    out: Path,
    neurons: list[int] | None = None,
    conditions=None,
) -> Path:
    """Observed vs predicted PSTH (Hz) of a few neurons, one panel each.

    counts, rates_mean, rates_lo, rates_hi: [trial, time, neuron] per bin (lo/hi: the 5% and 95%
    quantiles of the predicted rate). neurons: indices (default: the MAX_PANELS highest observed
    rates). conditions: [trial] labels, one trial-averaged curve per condition (the 6 largest);
    None averages all trials. The band is the trial average of the per-trial quantiles.
    """
    counts, mean, lo, hi = _same_shape(counts=counts, rates_mean=rates_mean, rates_lo=rates_lo, rates_hi=rates_hi)
    new_figure = _figure_factory()
    hz = 1000.0 / bin_ms
    neurons = _pick_neurons(counts, neurons, MAX_PANELS)
    groups = _condition_groups(conditions, counts.shape[0])
    t = _seconds(counts.shape[1], bin_ms)
    ncols = min(3, len(neurons))
    nrows = math.ceil(len(neurons) / ncols)
    fig = new_figure(figsize=(4 * ncols, 3 * nrows + 0.6), layout="constrained")
    axes = np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False).ravel())
    for ax, j in zip(axes, neurons):
        for g, (label, rows) in enumerate(groups):
            colour = PREDICTED if len(groups) == 1 else f"C{g % 10}"
            observed = OBSERVED if len(groups) == 1 else colour
            ax.plot(t, _nanmean(counts[rows, :, j]) * hz, color=observed, lw=1, ls="--" if len(groups) > 1 else "-")
            ax.plot(t, _nanmean(mean[rows, :, j]) * hz, color=colour, lw=1.8)
            band = _nanmean(lo[rows, :, j]) * hz, _nanmean(hi[rows, :, j]) * hz
            ax.fill_between(t, *band, color=colour, alpha=0.2, lw=0)
        ax.set_title(f"neuron {j}")
        ax.set_xlabel(TIME_LABEL)
        ax.set_ylabel(f"rate (Hz; {bin_ms:g} ms bins)")
    for ax in axes[len(neurons):]:
        ax.set_visible(False)
    axes[0].legend(handles=_psth_legend(groups), fontsize=8)
    n_trials = sum(len(rows) for _, rows in groups)
    split = f"{len(groups)} conditions" if conditions is not None else "all trials averaged"
    fig.suptitle(f"PSTH: observed vs predicted ({n_trials} trials, {split})")
    return _save(fig, out)


def plot_forecast(
    context_counts: np.ndarray,
    horizon_counts: np.ndarray | None,
    rates_mean: np.ndarray,
    rates_lo: np.ndarray,
    rates_hi: np.ndarray,
    bin_ms: float,
    out: Path,
    trials: list[int] | None = None,
    neurons=None,
    trial_ids=None,
) -> Path:
    """Forecast of a few trials x neurons plus the trial-averaged population rate.

    context_counts: [trial, context, neuron] observed counts before the forecast;
    horizon_counts: [trial, horizon, neuron] observed counts over the forecast horizon, or None
    (a forecast past the end of the data); rates_mean/lo/hi: [trial, horizon, neuron] forecast
    expected counts per bin and their 5%/95% quantiles. trials: rows, default the first 3; neurons:
    default the 3 highest observed rates; trial_ids: [trial] the recording's trial id of each row.
    The population panel shows the mean rate per neuron (Hz) over all trials; its band is the
    average of the per-neuron, per-trial quantiles.
    """
    mean, lo, hi = _same_shape(rates_mean=rates_mean, rates_lo=rates_lo, rates_hi=rates_hi)
    context = np.asarray(context_counts, dtype=np.float64)
    if context.ndim != 3 or context.shape[0] != mean.shape[0] or context.shape[2] != mean.shape[2]:
        raise ValueError(f"context_counts {context.shape} does not match forecast {mean.shape} in trials/neurons")
    if horizon_counts is not None:
        (horizon,) = _same_shape(horizon_counts=horizon_counts, reference=mean)
    else:
        horizon = np.full(mean.shape, np.nan)
    new_figure = _figure_factory()
    observed = np.concatenate([context, horizon], axis=1)
    trials = _pick_indices(trials, mean.shape[0], 3, "trial")
    neurons = _pick_neurons(observed, neurons, 3)
    n_ctx, n_hor = context.shape[1], mean.shape[1]
    t_obs = _seconds(n_ctx + n_hor, bin_ms)
    t_hor = t_obs[n_ctx:]
    t_end = n_ctx * bin_ms / 1000.0

    fig = new_figure(figsize=(4 * len(neurons), 2.4 * len(trials) + 3.2), layout="constrained")
    grid = fig.add_gridspec(len(trials) + 1, len(neurons), height_ratios=[1] * len(trials) + [1.4])
    for r, k in enumerate(trials):
        for c, j in enumerate(neurons):
            ax = fig.add_subplot(grid[r, c])
            ax.step(t_obs, observed[k, :, j], where="mid", color=OBSERVED, lw=1, label="observed")
            _band(ax, t_hor, mean[k, :, j], lo[k, :, j], hi[k, :, j], "forecast")
            ax.axvline(t_end, color="tab:red", ls=":", lw=1.2, label="context end")
            ax.set_title(f"{_trial_name(k, trial_ids)}, neuron {j}", fontsize=9)
            ax.set_ylabel(f"spikes / {bin_ms:g} ms bin", fontsize=8)
            if r == 0 and c == 0:
                ax.legend(fontsize=7)
    ax = fig.add_subplot(grid[-1, :])
    hz = 1000.0 / bin_ms
    ax.plot(t_obs, _population(observed) * hz, color=OBSERVED, lw=1.2, label="observed")
    # The average of per-trial quantiles, not a quantile of the average: wider than the spread of the mean.
    _band(ax, t_hor, *(_population(a) * hz for a in (mean, lo, hi)), "forecast", f"average {BAND_LABEL}")
    ax.axvline(t_end, color="tab:red", ls=":", lw=1.2, label="context end")
    ax.set_title(f"Population: mean rate per neuron, averaged over {mean.shape[0]} trials")
    ax.set_xlabel(TIME_LABEL)
    ax.set_ylabel("rate per neuron (Hz)")
    ax.legend(fontsize=8)
    fig.suptitle(f"Forecast: {n_ctx} context bins, {n_hor} forecast bins of {bin_ms:g} ms")
    return _save(fig, out)


def plot_latents(means: np.ndarray, out: Path, variances=None, trials=None, truth=None, bin_ms: float | None = None,
                 trial_ids=None) -> Path:
    """Latent trajectories of a few trials (rows; default the first 5).

    means, variances: [trial, time, latent] posterior means and (marginal) variances. bin_ms: the bin
    width, for time in seconds (None: time in bins); trial_ids: [trial] the recording's trial ids.
    Panels: the trajectories in the first 3 dims (3-D when latent >= 3, else 2-D, or against time
    for a 1-D latent); the first dims of the first trial against time (+-2 sd when variances are
    given); with truth [trial, time, latent_true], the true latents of that trial next to the best
    affine map of the inferred means onto them (least squares over all trials and bins), with its
    R^2 (fitted on the same data, so in-sample).
    """
    (means,) = _same_shape(means=means)
    if variances is not None:
        (variances,) = _same_shape(variances=variances, reference=means)
    if truth is not None:
        truth = np.asarray(truth, dtype=np.float64)
        if truth.ndim != 3 or truth.shape[:2] != means.shape[:2]:
            raise ValueError(f"truth has shape {truth.shape}, expected [{means.shape[0]}, {means.shape[1]}, latent]")
    new_figure = _figure_factory()
    trials = _pick_indices(trials, means.shape[0], 5, "trial")
    n_dim = means.shape[2]
    n_panels = 3 if truth is not None else 2
    fig = new_figure(figsize=(5 * n_panels, 4.6), layout="constrained")
    grid = fig.add_gridspec(1, n_panels)
    time = _time_axis(means.shape[1], bin_ms)
    names = [_trial_name(k, trial_ids) for k in trials]
    _trajectories(fig.add_subplot(grid[0], projection="3d" if n_dim >= 3 else None), means, trials, names, time)
    _latents_vs_time(fig.add_subplot(grid[1]), time, means[trials[0]], variances, trials[0], names[0])
    if truth is not None:
        _truth_panel(fig.add_subplot(grid[2]), time, means, truth, trials[0], names[0])
    fig.suptitle(f"Inferred latents ({n_dim} dims, {means.shape[0]} trials)")
    return _save(fig, out)


def plot_embedding(means: np.ndarray, variances: np.ndarray, names: list[str], trial_means: np.ndarray,
                   trial_session: np.ndarray, out: Path, param: tuple[str, np.ndarray] | None = None) -> Path:
    """Session embeddings: means [session, embed] with +-2 sd bars, per-trial means [trial, embed] as
    faint points; 1-D embeddings against the session index (or the regime parameter), 2-D as a plane
    (first two dims otherwise). Coloured by session, or by the known regime parameter."""
    make = _figure_factory()
    fig = make(figsize=(6.5, 5))
    ax = fig.add_subplot(1, 1, 1)
    colour_values = param[1] if param is not None else np.arange(len(names))
    cmap = "viridis"
    if means.shape[1] == 1:
        x = param[1] if param is not None else np.arange(len(names))
        ax.errorbar(x, means[:, 0], yerr=2 * np.sqrt(variances[:, 0]), fmt="none", ecolor="0.6")
        sc = ax.scatter(x, means[:, 0], c=colour_values, cmap=cmap, zorder=3)
        ax.scatter(x[trial_session], trial_means[:, 0], c=colour_values[trial_session], cmap=cmap, s=6, alpha=0.3)
        ax.set_xlabel(param[0] if param is not None else "session")
        ax.set_ylabel("embedding")
    else:
        ax.scatter(trial_means[:, 0], trial_means[:, 1], c=colour_values[trial_session], cmap=cmap, s=6, alpha=0.3)
        ax.errorbar(means[:, 0], means[:, 1], xerr=2 * np.sqrt(variances[:, 0]), yerr=2 * np.sqrt(variances[:, 1]),
                    fmt="none", ecolor="0.6")
        sc = ax.scatter(means[:, 0], means[:, 1], c=colour_values, cmap=cmap, s=60, edgecolors="k", zorder=3)
        for (x, y), name in zip(means[:, :2], names):
            ax.annotate(name, (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7)
        ax.set_xlabel("embedding dim 1")
        ax.set_ylabel("embedding dim 2")
    fig.colorbar(sc, ax=ax, label=param[0] if param is not None else "session index")
    ax.set_title(f"Session embeddings ({len(names)} sessions; bars: +-2 sd; dots: single trials)")
    return _save(fig, out)


def plot_flow(grid: np.ndarray, flows: list[np.ndarray], labels: list[str], states: np.ndarray, out: Path) -> Path:
    """The dynamics' flow f(z; e) - z in the latents' principal plane, one panel per embedding value:
    grid [2, n, n], flows [2, n, n] each, states [start, 2] (the sessions' smoothed states, grey)."""
    make = _figure_factory()
    k = len(flows)
    fig = make(figsize=(3.6 * k, 3.6))
    for i, (flow, label) in enumerate(zip(flows, labels)):
        ax = fig.add_subplot(1, k, i + 1)
        ax.scatter(states[:, 0], states[:, 1], s=2, c="0.8")
        ax.quiver(grid[0], grid[1], flow[0], flow[1], np.hypot(flow[0], flow[1]), cmap="viridis")
        ax.set_title(label, fontsize=9)
        ax.set_xlabel("latent PC 1")
        if i == 0:
            ax.set_ylabel("latent PC 2")
    fig.suptitle("f(z; e) - z at embedding values along the sessions' first axis")
    return _save(fig, out)


# --------------------------------------------------------------------------------------------------
# matplotlib plumbing


def require_matplotlib() -> None:
    """Fail early (before a long fit) when --plot cannot be honoured."""
    _figure_factory()


def _figure_factory():
    """A factory of matplotlib Figures on an Agg canvas, or UsageError when matplotlib is missing."""
    try:
        # `import matplotlib` first: it fails when the package is missing (or blocked) even if some
        # submodule is still cached in sys.modules.
        import matplotlib  # noqa: F401
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise UsageError("--plot needs matplotlib: pip install 'xfads[plot]'") from None

    def make(**kwargs):
        fig = Figure(**kwargs)
        FigureCanvasAgg(fig)  # attaches itself as the figure's canvas
        return fig

    return make


def _save(fig, out: Path) -> Path:
    """Write `fig` as PNG to `out` via a temporary file, then free it."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        with atomic_path(out) as tmp:
            fig.savefig(tmp, format="png", dpi=DPI)
    finally:
        fig.clear()  # drop the artists now rather than when the garbage collector gets to them
    return out


# --------------------------------------------------------------------------------------------------
# Panels


def _plot_column(ax, epochs, history, key: str, style: str) -> None:
    """One history column against epoch, skipping records where it is missing or not finite."""
    points = [(e, float(rec[key])) for e, rec in zip(epochs, history) if _finite(rec.get(key))]
    if points:
        x, y = zip(*points)
        ax.plot(x, y, style, marker="." if len(points) < 30 else None, label=metric_label(key))


SPLIT_NAMES = {"train": "train", "valid": "validation", "test": "test"}
METRIC_NAMES = {
    "loss": "loss", "co_bps": "co-bps (held-out neurons)", "fp_bps": "fp-bps (forecast)",
    "retest_bps": "test-retest bps (smoothed rates)", "retest_oracle_bps": "test-retest bps of the true rates",
    "fp_oracle_bps": "fp-bps of the true rates", "co_oracle_bps": "co-bps of the true rates",
    "fp_baseline_bps": "fp-bps of the baseline", "co_baseline_bps": "co-bps of the baseline",
    "behavior_r2": "R² of the behaviour decoded from rates", "psth_r2": "PSTH R²",
}


def metric_label(key: str) -> str:
    """'valid_retest_oracle_bps' -> 'validation test-retest bps of the true rates' (legends, not raw keys)."""
    split, _, metric = key.partition("_")
    if split not in SPLIT_NAMES or not metric:
        return key.replace("_", " ")
    return f"{SPLIT_NAMES[split]} {METRIC_NAMES.get(metric, metric.replace('_', ' '))}"


def _band(ax, t, mean, lo, hi, label: str, band_label: str = BAND_LABEL) -> None:
    ax.plot(t, mean, color=PREDICTED, lw=1.6, label=f"{label} mean")
    ax.fill_between(t, lo, hi, color=PREDICTED, alpha=0.25, lw=0, label=f"{label} {band_label}")


def _psth_legend(groups) -> list:
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    if len(groups) == 1:
        return [
            Line2D([], [], color=OBSERVED, lw=1, label="observed"),
            Line2D([], [], color=PREDICTED, lw=1.8, label="predicted mean"),
            Patch(color=PREDICTED, alpha=0.2, label=f"predicted {BAND_LABEL}"),
        ]
    handles = [Line2D([], [], color=f"C{g % 10}", lw=1.8, label=f"condition {label}") for g, (label, _) in enumerate(groups)]
    return handles + [
        Line2D([], [], color="0.3", lw=1, ls="--", label="observed"),
        Line2D([], [], color="0.3", lw=1.8, label="predicted (band 5–95%)"),
    ]


def _trajectories(ax, means: np.ndarray, trials: list[int], names: list[str], time) -> None:
    """Trials as curves in the first 3 (or 2) latent dims; a 1-D latent is drawn against time
    (time: `_time_axis`). A dot marks each trial's start."""
    n_dim = means.shape[2]
    for i, (k, name) in enumerate(zip(trials, names)):
        z = means[k]
        colour = f"C{i % 10}"
        if n_dim >= 3:
            ax.plot(z[:, 0], z[:, 1], z[:, 2], color=colour, lw=1.2, label=name)
            ax.scatter(z[:1, 0], z[:1, 1], z[:1, 2], color=colour, s=15)
        elif n_dim == 2:
            ax.plot(z[:, 0], z[:, 1], color=colour, lw=1.2, label=name)
            ax.scatter(z[:1, 0], z[:1, 1], color=colour, s=15)
        else:
            ax.plot(time[0], z[:, 0], color=colour, lw=1.2, label=name)
    if n_dim >= 3:
        ax.set(xlabel="z1", ylabel="z2", zlabel="z3")
        ax.locator_params(nbins=4)  # the 3-D axes' default ticks collide
        ax.tick_params(labelsize=7)
    elif n_dim == 2:
        ax.set(xlabel="z1", ylabel="z2")
    else:
        ax.set(xlabel=time[1], ylabel="z1")
    ax.set_title("Trajectories (posterior means)")
    ax.legend(fontsize=7)


def _latents_vs_time(ax, time, z: np.ndarray, variances, k: int, name: str) -> None:
    """z [time, latent] of row k, first 3 dims, with +-2 sd bands from variances [trial, time, latent]."""
    t = time[0]
    for d in range(min(3, z.shape[1])):
        ax.plot(t, z[:, d], color=f"C{d}", lw=1.4, label=f"z{d + 1}")
        if variances is not None:
            sd = np.sqrt(np.clip(variances[k, :, d], 0.0, None))
            ax.fill_between(t, z[:, d] - 2 * sd, z[:, d] + 2 * sd, color=f"C{d}", alpha=0.2, lw=0)
    band = " with ±2 sd" if variances is not None else ""
    ax.set_title(f"{name}: latents over time{band}")
    ax.set_xlabel(time[1])
    ax.set_ylabel("latent value")
    ax.legend(fontsize=8)


def _truth_panel(ax, time, means: np.ndarray, truth: np.ndarray, k: int, name: str) -> None:
    """True latents of row k (solid) and the affine least-squares map of the means (dashed)."""
    t = time[0]
    mapped, r2 = affine_fit(means, truth)
    for d in range(min(3, truth.shape[2])):
        ax.plot(t, truth[k, :, d], color=f"C{d}", lw=1.4, label=f"true {d + 1}")
        ax.plot(t, mapped[k, :, d], color=f"C{d}", lw=1.4, ls="--", label=f"mapped {d + 1}")
    ax.set_title(f"{name}: affine map onto truth\nR² = {r2:.3f} (in-sample)")
    ax.set_xlabel(time[1])
    ax.set_ylabel("true latent")
    ax.legend(fontsize=7, ncol=2)


def affine_fit(means: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, float]:
    """Least-squares affine map of means [..., latent] onto truth [..., latent_true].

    Returns (mapped [..., latent_true], R^2 = 1 - SS_res / SS_tot summed over all true dims).
    Bins with NaN in either array are left out of the fit and the score; NaN R^2 if none remains.
    """
    x = means.reshape(-1, means.shape[-1])
    y = truth.reshape(-1, truth.shape[-1])
    keep = np.isfinite(x).all(axis=1) & np.isfinite(y).all(axis=1)
    design = np.column_stack([x, np.ones(len(x))])  # the column of ones fits the offset
    if keep.sum() == 0:
        return np.full(truth.shape, np.nan), float("nan")
    coef, *_ = np.linalg.lstsq(design[keep], y[keep], rcond=None)
    mapped = design @ coef
    ss_res = np.sum((y[keep] - mapped[keep]) ** 2)
    ss_tot = np.sum((y[keep] - y[keep].mean(axis=0)) ** 2)
    r2 = 1.0 - ss_res / ss_tot if ss_tot > 0 else float("nan")
    return mapped.reshape(truth.shape), float(r2)


# --------------------------------------------------------------------------------------------------
# Array helpers


def _same_shape(reference=None, **arrays) -> list[np.ndarray]:
    """The arrays as float64 [trial, time, dim], all of one shape (that of `reference` if given);
    ValueError otherwise (a caller bug, not a user error)."""
    out = [np.asarray(a, dtype=np.float64) for a in arrays.values()]
    shape = np.shape(reference) if reference is not None else out[0].shape
    for name, a in zip(arrays, out):
        if a.ndim != 3 or a.shape != shape:
            raise ValueError(f"{name} has shape {a.shape}, expected a [trial, time, dim] array of shape {shape}")
    if 0 in shape:
        raise ValueError(f"nothing to plot: arrays of shape {shape}")
    return out


TIME_LABEL = "time in trial (s)"


def _seconds(n_time: int, bin_ms: float) -> np.ndarray:
    """The centres of n_time bins of bin_ms, in seconds from the trial's start."""
    return (np.arange(n_time) + 0.5) * bin_ms / 1000.0


def _time_axis(n_time: int, bin_ms: float | None) -> tuple[np.ndarray, str]:
    """(x values, axis label) of a time axis: seconds when the bin width is known, else bins."""
    if bin_ms is None:
        return np.arange(n_time), "bin"
    return _seconds(n_time, bin_ms), TIME_LABEL


def _trial_name(row: int, trial_ids) -> str:
    """How a panel names the trial in `row`: the recording's id when known (the row of a split, or of
    a subset, is not how the recording numbers its trials)."""
    return f"trial in row {row}" if trial_ids is None else f"trial id {trial_ids[row]}"


def _pick_neurons(counts: np.ndarray, neurons, n: int) -> list[int]:
    """Given neuron indices (checked), else the n with the highest mean observed count."""
    if neurons is not None:
        return _pick_indices(neurons, counts.shape[2], n, "neuron")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # an all-NaN neuron is simply ranked last
        rate = np.nanmean(counts.reshape(-1, counts.shape[2]), axis=0)
    rate = np.where(np.isfinite(rate), rate, -np.inf)
    return [int(j) for j in np.argsort(-rate, kind="stable")[:n]]


def _pick_indices(chosen, size: int, n: int, what: str) -> list[int]:
    """Given indices (UsageError when out of range: they may come from the command line), else the first n."""
    if chosen is None:
        return list(range(min(n, size)))
    chosen = [int(i) for i in chosen]
    bad = [i for i in chosen if not 0 <= i < size]
    if bad or not chosen:
        raise UsageError(f"cannot plot {what}(s) {bad or chosen}: valid {what} indices are 0..{size - 1}")
    return chosen


def _condition_groups(conditions, n_trial: int, limit: int = 6) -> list[tuple[str, np.ndarray]]:
    """[(label, trial indices)]: the `limit` conditions with most trials, or one group of all trials."""
    if conditions is None:
        return [("all", np.arange(n_trial))]
    labels = np.asarray(conditions)
    if labels.shape != (n_trial,):
        raise ValueError(f"conditions has shape {labels.shape}, expected ({n_trial},)")
    values, sizes = np.unique(labels.astype(str), return_counts=True)
    order = np.argsort(-sizes, kind="stable")[:limit]
    return [(str(values[i]), np.flatnonzero(labels.astype(str) == values[i])) for i in order]


def _nanmean(a: np.ndarray) -> np.ndarray:
    """Mean over axis 0 ignoring NaN; NaN (a gap in the line) where a bin has no observation."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(a, axis=0)


def _population(a: np.ndarray) -> np.ndarray:
    """[trial, time, neuron] -> [time]: mean over neurons, then over trials, ignoring NaN."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(np.nanmean(a, axis=2), axis=0)


def _finite(value) -> bool:
    try:
        return value is not None and math.isfinite(float(value))
    except (TypeError, ValueError):
        return False
