"""The figure of `xfads generate --compare DATA --plot`: a generated recording's statistics against a real
recording's (scoring/predictive.py computes them; this module draws plain arrays).

matplotlib is optional (`pip install 'xfads[plot]'`; outputs/plots.py require_matplotlib says so in one
line) and is imported only here, on matplotlib's object API with the Agg canvas, as in outputs/plots.py.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from xfads_cli.atomic import atomic_path

DPI = 120
MAX_PAIRS = 5000  # pairwise correlations drawn (a random subset beyond)
REAL, GENERATED = "0.25", "tab:blue"


def plot_predictive(arrays: dict, bin_ms: float, out: Path, title: str = "") -> Path:
    """Four panels, real on x and generated on y where paired: mean rate per neuron (Hz, log axes, the
    +-10% band), Fano factor per neuron, pairwise correlations of trial-summed counts, and the population
    PSTH (Hz, the mean over neurons) of both. arrays: predictive.figure_arrays' (rates per bin)."""
    from xfads_cli.outputs.plots import require_matplotlib

    require_matplotlib()
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9, 7.5), layout="constrained")
    FigureCanvasAgg(fig)
    (rate_ax, fano_ax), (pair_ax, psth_ax) = fig.subplots(2, 2)
    hz = 1000.0 / bin_ms
    _rates(rate_ax, arrays["rate_real"] * hz, arrays["rate_generated"] * hz)
    _scatter(fano_ax, arrays["fano_real"], arrays["fano_generated"], "Fano factor (trial-summed counts)")
    real_pairs, generated_pairs = _some_pairs(arrays["pairs_real"], arrays["pairs_generated"])
    _scatter(pair_ax, real_pairs, generated_pairs, "pairwise correlation (trial-summed counts)", size=4)
    _psth(psth_ax, arrays["psth_real"] * hz, arrays["psth_generated"] * hz, bin_ms)
    if title:
        fig.suptitle(title)
    return _save(fig, out)


def _rates(ax, real: np.ndarray, generated: np.ndarray) -> None:
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    keep = (real > 0) & (generated > 0) & np.isfinite(real) & np.isfinite(generated)
    ax.scatter(real[keep], generated[keep], s=12, color=GENERATED)
    if keep.any():
        lo, hi = min(real[keep].min(), generated[keep].min()), max(real[keep].max(), generated[keep].max())
        line = np.geomspace(lo, hi, 50)
        ax.plot(line, line, color="0.4", lw=0.8)
        ax.fill_between(line, line * 0.9, line * 1.1, color="0.85", label="within 10%")
        ax.set_xscale("log")
        ax.set_yscale("log")
        for axis in (ax.xaxis, ax.yaxis):  # plain numbers (1, 2, 5, 10), no crowded minor labels
            axis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
            axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
            axis.set_minor_formatter(NullFormatter())
        ax.legend(fontsize=8)
    ax.set_xlabel("real (Hz)")
    ax.set_ylabel("generated (Hz)")
    ax.set_title(f"mean rate per neuron ({int(keep.sum())} neurons)")


def _scatter(ax, real: np.ndarray, generated: np.ndarray, title: str, size: float = 12) -> None:
    keep = np.isfinite(real) & np.isfinite(generated)
    ax.scatter(real[keep], generated[keep], s=size, color=GENERATED)
    if keep.any():
        lo, hi = min(real[keep].min(), generated[keep].min()), max(real[keep].max(), generated[keep].max())
        ax.plot([lo, hi], [lo, hi], color="0.4", lw=0.8)
    else:
        ax.text(0.5, 0.5, "no values", ha="center", va="center", transform=ax.transAxes)
    ax.set_xlabel("real")
    ax.set_ylabel("generated")
    ax.set_title(title)


def _some_pairs(real: np.ndarray, generated: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    if len(real) <= MAX_PAIRS:
        return real, generated
    keep = np.sort(np.random.default_rng(0).choice(len(real), MAX_PAIRS, replace=False))
    return real[keep], generated[keep]


def _psth(ax, real: np.ndarray, generated: np.ndarray, bin_ms: float) -> None:
    import warnings

    t = (np.arange(real.shape[0]) + 0.5) * bin_ms / 1000.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a bin no real trial observed: a gap in the line
        ax.plot(t, np.nanmean(real, axis=1), color=REAL, label="real")
        ax.plot(t, np.nanmean(generated, axis=1), color=GENERATED, label="generated")
    ax.set_xlabel("time in trial (s)")
    ax.set_ylabel("mean rate over neurons (Hz)")
    ax.set_title("population PSTH (trial-aligned data only)")
    ax.legend(fontsize=8)


def _save(fig, out: Path) -> Path:
    out = Path(out)
    try:
        with atomic_path(out) as tmp:
            fig.savefig(tmp, format="png", dpi=DPI)
    finally:
        fig.clear()
    return out
