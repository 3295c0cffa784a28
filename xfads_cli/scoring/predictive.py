"""Posterior-predictive checks (numpy only): statistics of a recording generated from a fitted model
(`xfads generate`) next to the same statistics of a real recording.

Arrays are [trial, time, neuron] counts per bin (NaN = missing bin). Both recordings are compared over
the same bins: the first `window` bins of every trial. `CountStats` keeps what the statistics need and
is fed whole or block by block (a generated recording is never held whole for them):

    rate ratio       per neuron, mean count per bin generated / real; the median over neurons and the
                     fraction of neurons within RATE_TOLERANCE (10%) of 1 (neurons silent in the real
                     recording are left out: no ratio)
    PSTH r           per neuron, Pearson r across bins of the two PSTHs (the mean over trials at each
                     bin); the median over neurons. Only meaningful for trial-aligned data: windows
                     chopped out of a continuous recording have no common time axis
    Fano factor      per neuron, variance / mean over trials of the counts summed over the window
    pairwise r       the Pearson correlation matrix between neurons of the trial-summed counts, in each
                     recording; the Pearson r between the two matrices' upper triangles
    MMD              the maximum mean discrepancy between the two sets of trial-summed count vectors,
                     with a Gaussian kernel on their square roots (variance-stabilising for Poisson
                     counts, so that each neuron weighs about the same whatever its rate) and the
                     median pairwise distance of the pooled vectors as the kernel's width (the median
                     heuristic). The value is sqrt of the biased (V-statistic) MMD^2, 0 for identical
                     samples; its p-value is a permutation test of the pooled vectors (each side
                     subsampled to at most MMD_MAX_TRIALS trials). A small p-value says the model's
                     trials are told apart from the real ones, whatever the other numbers say.

Trial-summed statistics (Fano, pairwise, MMD) use the trials observed in every bin of the window.
"""

from __future__ import annotations

import math

import numpy as np

RATE_TOLERANCE = 0.1
MMD_PERMUTATIONS = 200
MMD_MAX_TRIALS = 1000
PERMUTATION_CHUNK = 50  # permutations evaluated at once: memory ~ chunk x pooled trials


class CountStats:
    """Sufficient statistics of counts [trial, time, neuron] over the first `window` bins, accumulated
    block of trials by block (`add`): per-bin sums and observed counts, and the trial sums of the
    trials observed in every bin of the window."""

    def __init__(self, window: int):
        self.window = int(window)
        self.bin_sum: np.ndarray | None = None  # [time, neuron]
        self.bin_seen: np.ndarray | None = None  # [time, neuron] observed trials per bin
        self.sums: list[np.ndarray] = []
        self.n_trials = 0

    @classmethod
    def of(cls, counts: np.ndarray, window: int | None = None) -> "CountStats":
        stats = cls(counts.shape[1] if window is None else window)
        stats.add(counts)
        return stats

    def add(self, counts: np.ndarray) -> None:
        y = np.asarray(counts, dtype=np.float64)[:, : self.window]
        if y.shape[1] < self.window:
            raise ValueError(f"counts have {y.shape[1]} bins, fewer than the window's {self.window}")
        seen = np.isfinite(y)
        if self.bin_sum is None:
            self.bin_sum = np.zeros(y.shape[1:])
            self.bin_seen = np.zeros(y.shape[1:])
        self.bin_sum += np.where(seen, y, 0.0).sum(0)
        self.bin_seen += seen.sum(0)
        complete = seen.all(axis=(1, 2))
        self.sums.append(y[complete].sum(1))
        self.n_trials += len(y)

    @property
    def mean_rate(self) -> np.ndarray:
        """[neuron] mean count per bin over every observed bin."""
        with np.errstate(invalid="ignore", divide="ignore"):
            return self.bin_sum.sum(0) / self.bin_seen.sum(0)

    @property
    def psth(self) -> np.ndarray:
        """[time, neuron] mean count over the trials at each bin (NaN: no trial observed)."""
        with np.errstate(invalid="ignore", divide="ignore"):
            return self.bin_sum / self.bin_seen

    @property
    def trial_sums(self) -> np.ndarray:
        """[trial, neuron] counts summed over the window, of the trials observed in all of it."""
        return np.concatenate(self.sums) if self.sums else np.zeros((0, 0))


# ------------------------------------------------------------------------------------------------
# The statistics


def rate_ratio(generated: np.ndarray, real: np.ndarray) -> np.ndarray:
    """[neuron] generated / real mean rate; NaN where the real neuron is silent (or not observed)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(real > 0, generated / np.where(real > 0, real, 1.0), np.nan)


def pearson_columns(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """[column] Pearson r between the columns of a and b [row, column] over their rows where both are
    finite; NaN where fewer than 3 such rows or either column is constant there."""
    out = np.full(a.shape[1], np.nan)
    for j in range(a.shape[1]):
        out[j] = pearson(a[:, j], b[:, j])
    return out


def pearson(x: np.ndarray, y: np.ndarray) -> float:
    """Pearson r over the entries where both are finite; NaN for fewer than 3 or a constant side."""
    keep = np.isfinite(x) & np.isfinite(y)
    x, y = np.asarray(x, dtype=np.float64)[keep], np.asarray(y, dtype=np.float64)[keep]
    if len(x) < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return float("nan")
    x, y = x - x.mean(), y - y.mean()
    return float(np.clip(x @ y / math.sqrt(float(x @ x) * float(y @ y)), -1.0, 1.0))


def fano_factors(sums: np.ndarray) -> np.ndarray:
    """[neuron] variance / mean over trials of trial-summed counts [trial, neuron]; NaN for fewer than
    2 trials or a silent neuron."""
    if len(sums) < 2:
        return np.full(sums.shape[1] if sums.ndim == 2 else 0, np.nan)
    mean = sums.mean(0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(mean > 0, sums.var(0, ddof=1) / np.where(mean > 0, mean, 1.0), np.nan)


def pairwise_correlations(sums: np.ndarray) -> np.ndarray:
    """[pair] the upper triangle (i < j, row-major) of the neurons' correlation matrix over trials of
    trial-summed counts [trial, neuron]; NaN for a pair with a constant neuron (or fewer than 2 trials)."""
    n = sums.shape[1]
    rows, cols = np.triu_indices(n, k=1)
    if len(sums) < 2:
        return np.full(len(rows), np.nan)
    centred = sums - sums.mean(0)
    scale = np.sqrt((centred**2).sum(0))
    with np.errstate(invalid="ignore", divide="ignore"):
        corr = (centred.T @ centred) / np.outer(scale, scale)
    corr[~np.isfinite(corr)] = np.nan
    return corr[rows, cols]


def mmd_test(x: np.ndarray, y: np.ndarray, *, permutations: int = MMD_PERMUTATIONS, seed: int = 0,
             max_trials: int = MMD_MAX_TRIALS) -> dict:
    """MMD between samples x [n, dim] and y [m, dim] (rows: trials) with a Gaussian kernel on their
    signed square roots, the width by the median heuristic; permutation p-value (module docstring).
    Returns {mmd, p_value, bandwidth, permutations, trials_used}; NaNs for fewer than 2 trials a side."""
    rng = np.random.default_rng(seed)
    x, y = _subsample(x, max_trials, rng), _subsample(y, max_trials, rng)
    result = {"mmd": float("nan"), "p_value": float("nan"), "bandwidth": float("nan"), "permutations": 0,
              "trials_used": [len(x), len(y)]}
    if len(x) < 2 or len(y) < 2:
        return result
    z = np.concatenate([x, y]).astype(np.float64)
    z = np.sign(z) * np.sqrt(np.abs(z))
    sq = (z**2).sum(1)
    d2 = np.maximum(sq[:, None] + sq[None, :] - 2.0 * z @ z.T, 0.0)
    upper = np.sqrt(d2[np.triu_indices(len(z), k=1)])
    positive = upper[upper > 0]
    width = float(np.median(positive)) if len(positive) else 1.0
    kernel = np.exp(-d2 / (2.0 * width**2))
    w = np.concatenate([np.full(len(x), 1.0 / len(x)), np.full(len(y), -1.0 / len(y))])
    observed = max(float(w @ kernel @ w), 0.0)
    exceed = 0
    for start in range(0, permutations, PERMUTATION_CHUNK):
        count = min(PERMUTATION_CHUNK, permutations - start)
        weights = np.stack([w[rng.permutation(len(w))] for _ in range(count)])  # [perm, pooled]
        stats = ((weights @ kernel) * weights).sum(1)
        exceed += int((stats >= observed - 1e-12).sum())
    return result | {"mmd": math.sqrt(observed), "p_value": (1 + exceed) / (1 + permutations), "bandwidth": width,
                     "permutations": int(permutations)}


def _subsample(a: np.ndarray, limit: int, rng) -> np.ndarray:
    return a if len(a) <= limit else a[np.sort(rng.choice(len(a), limit, replace=False))]


# ------------------------------------------------------------------------------------------------
# The report


def psth_noise_ceiling(counts: np.ndarray, window: int, *, repeats: int = 20, seed: int = 0) -> float:
    """The PSTH r a perfect generator could reach against these real trials, counts [trial, time, neuron]
    over the first `window` bins: the real PSTH is itself an estimate from finitely many trials. Per
    neuron, r_half = Pearson r across bins between the PSTHs of two random halves of the trials (mean over
    `repeats` splits); the reliability of the whole-sample PSTH is 2 r_half / (1 + r_half) (Spearman-Brown),
    and its correlation with the population's PSTH, which a generator with many trials estimates, is the
    square root of that. Median over neurons; NaN with fewer than 4 trials."""
    y = np.asarray(counts, dtype=np.float64)[:, :window]
    if len(y) < 4:
        return math.nan
    rng = np.random.default_rng(seed)
    halves = []
    with np.errstate(invalid="ignore", divide="ignore"):
        for _ in range(repeats):
            order = rng.permutation(len(y))
            halves.append(pearson_columns(np.nanmean(y[order[::2]], 0), np.nanmean(y[order[1::2]], 0)))
        r_half = np.nanmean(np.stack(halves), axis=0) if halves else np.full(y.shape[-1], np.nan)
        reliability = np.clip(2 * r_half / (1 + r_half), 0.0, None)
    return _median(np.sqrt(reliability))


def compare(generated: CountStats, real: CountStats, *, bin_ms: float, trial_aligned: bool = True,
            permutations: int = MMD_PERMUTATIONS, seed: int = 0, psth_ceiling: float = math.nan) -> dict:
    """The posterior-predictive report of `generated` against `real` (same window and neurons): plain
    JSON-able data, headline numbers at the top level and the per-neuron values under "per_neuron".
    psth_ceiling: `psth_noise_ceiling` of the real trials (NaN: not computed)."""
    if generated.window != real.window:
        raise ValueError(f"windows differ: {generated.window} and {real.window} bins")
    g_rate, r_rate = generated.mean_rate, real.mean_rate
    ratio = rate_ratio(g_rate, r_rate)
    known = np.isfinite(ratio)
    psth_r = pearson_columns(generated.psth, real.psth)
    g_sums, r_sums = generated.trial_sums, real.trial_sums
    g_fano, r_fano = fano_factors(g_sums), fano_factors(r_sums)
    g_pairs, r_pairs = pairwise_correlations(g_sums), pairwise_correlations(r_sums)
    both = np.isfinite(g_pairs) & np.isfinite(r_pairs)
    mmd = mmd_test(g_sums, r_sums, permutations=permutations, seed=seed)
    notes = []
    if not trial_aligned:
        notes.append("the real recording is chopped into windows of a continuous recording: its PSTH has no common "
                     "time axis, so PSTH r says nothing here")
    if len(r_sums) < 2:
        notes.append(f"the real recording has {len(r_sums)} trial(s) observed in every bin of the window: no Fano "
                     "factor, pairwise correlation or MMD")
    return {
        "window_bins": generated.window, "bin_ms": float(bin_ms),
        "trials_generated": generated.n_trials, "trials_real": real.n_trials,
        "rate_ratio_median": _median(ratio),
        "rates_within_10pct": float(np.mean(np.abs(ratio[known] - 1.0) <= RATE_TOLERANCE)) if known.any() else math.nan,
        "neurons_compared": int(known.sum()),
        "psth_r_median": _median(psth_r), "psth_r_ceiling": float(psth_ceiling),
        "psth_trial_aligned": bool(trial_aligned),
        "fano_generated_median": _median(g_fano), "fano_real_median": _median(r_fano),
        "fano_ratio_median": _median(rate_ratio(g_fano, r_fano)),
        "pairwise_r": pearson(g_pairs, r_pairs), "pairs_compared": int(both.sum()),
        "pairwise_generated_mean": _mean(g_pairs), "pairwise_real_mean": _mean(r_pairs),
        "mmd": mmd["mmd"], "mmd_p_value": mmd["p_value"], "mmd_bandwidth": mmd["bandwidth"],
        "mmd_permutations": mmd["permutations"], "mmd_trials": mmd["trials_used"],
        "per_neuron": {"rate_generated_hz": _hz(g_rate, bin_ms), "rate_real_hz": _hz(r_rate, bin_ms),
                       "rate_ratio": ratio.tolist(), "psth_r": psth_r.tolist(),
                       "fano_generated": g_fano.tolist(), "fano_real": r_fano.tolist()},
        "notes": notes,
    }


def figure_arrays(generated: CountStats, real: CountStats) -> dict:
    """What the report's figure draws (outputs/predictive_plots.py): per-neuron rates (per bin) and Fano
    factors, the pairwise correlations, and both PSTHs [time, neuron]."""
    return {"rate_generated": generated.mean_rate, "rate_real": real.mean_rate,
            "fano_generated": fano_factors(generated.trial_sums), "fano_real": fano_factors(real.trial_sums),
            "pairs_generated": pairwise_correlations(generated.trial_sums),
            "pairs_real": pairwise_correlations(real.trial_sums),
            "psth_generated": generated.psth, "psth_real": real.psth}


def report_lines(report: dict) -> list[str]:
    """The report as a small table for stderr."""
    f = _fmt
    within = report["rates_within_10pct"]
    lines = [
        f"posterior-predictive check: {report['trials_generated']} generated vs {report['trials_real']} real trials, "
        f"first {report['window_bins']} bins",
        f"  mean rate      ratio generated/real median {f(report['rate_ratio_median'])}, "
        f"{'nan' if within is None or math.isnan(within) else f'{100 * within:.0f}%'} of {report['neurons_compared']} "
        "neurons within 10%",
        f"  PSTH           Pearson r across bins, median over neurons {f(report['psth_r_median'])}"
        + ("" if report["psth_trial_aligned"] else " (windows of a continuous recording: not meaningful)")
        + ("" if not math.isfinite(report.get("psth_r_ceiling", math.nan)) else
           f" (noise ceiling of the real PSTH, split-half: {f(report['psth_r_ceiling'])})"),
        f"  Fano factor    median {f(report['fano_generated_median'])} generated, {f(report['fano_real_median'])} real "
        f"(ratio {f(report['fano_ratio_median'])})",
        f"  pairwise corr  r(generated, real) {f(report['pairwise_r'])} over {report['pairs_compared']} pairs "
        f"(mean {f(report['pairwise_generated_mean'])} vs {f(report['pairwise_real_mean'])})",
        f"  MMD            {f(report['mmd'])} (p = {f(report['mmd_p_value'])}, {report['mmd_permutations']} "
        f"permutations; Gaussian kernel on sqrt trial counts, width {f(report['mmd_bandwidth'])})",
    ]
    return lines + [f"  note: {note}" for note in report.get("notes", [])]


def _fmt(value) -> str:
    return "nan" if value is None or not math.isfinite(value) else f"{value:.3g}"


def _median(values: np.ndarray) -> float:
    values = np.asarray(values, dtype=np.float64)
    values = values[np.isfinite(values)]
    return float(np.median(values)) if len(values) else math.nan


def _mean(values: np.ndarray) -> float:
    values = values[np.isfinite(values)]
    return float(values.mean()) if len(values) else math.nan


def _hz(rate: np.ndarray, bin_ms: float) -> list:
    return (np.asarray(rate) * 1000.0 / bin_ms).tolist()
