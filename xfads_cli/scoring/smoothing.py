"""Gaussian smoothing along time: the one smoother behind psth R^2 and the trivial baselines, numpy only.

Arrays are [..., time, neuron]; time is axis -2. Two windows are kept on purpose, because each
reproduces numbers that are compared elsewhere and the two differ in their taps:
- NLB's (default): scipy.signal.gaussian(int(6 sigma), sigma) as NLB smooth_spk uses it, an EVEN
  number of taps for some widths (the window is then off the bin by half a bin); psth R^2 uses it so
  it stays comparable with NLB's;
- centred=True: 2 ceil(3 sigma) + 1 taps centred on the bin; the baselines (PSTH widths, the GLM's
  smoothed held-in counts) use it, and their widths are chosen, and their scores pinned, with it.
"""

from __future__ import annotations

import math

import numpy as np


def gaussian_window(sigma_bins: float, centred: bool = False) -> np.ndarray:
    """Normalised Gaussian taps of width sigma_bins; sigma <= 0 (or too small for a second tap) is the
    identity [1].

    centred=False: NLB smooth_spk's kernel, scipy.signal.gaussian(int(6 sigma), sigma, sym=True) / its
    sum: about +-3 sigma (NLB's choice, kept for comparability), at least 1 tap.
    centred=True: taps at the whole-bin offsets -ceil(3 sigma) .. ceil(3 sigma).
    """
    if centred:
        if sigma_bins <= 0:
            return np.ones(1)
        half = int(math.ceil(3 * sigma_bins))
        k = np.arange(-half, half + 1, dtype=np.float64)
    else:
        m = max(int(6 * sigma_bins), 1)
        k = np.arange(m) - (m - 1) / 2.0
    w = np.exp(-0.5 * (k / sigma_bins) ** 2) if sigma_bins > 0 else np.ones(1)
    return w / w.sum()


def convolve_time(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """np.convolve(column, w, 'same') (= scipy.signal.convolve 'same', zero outside) along axis -2,
    float64.

    Written as a sum over the few kernel taps so it is vectorised over trials and neurons.
    """
    m, t = len(w), x.shape[-2]
    if m == 1:  # the identity window (sigma 0 is a common PSTH width): no padded copy; 0.0 + as the loop
        return 0.0 + w[0] * np.asarray(x, dtype=np.float64)
    start = (m - 1) // 2  # 'same' keeps full-convolution outputs start .. start + t - 1
    pad = [(0, 0)] * x.ndim
    pad[-2] = (m - 1, m - 1)
    xp = np.pad(x, pad)
    out = np.zeros_like(x, dtype=np.float64)
    for k in range(m):
        lo = start - k + m - 1
        out += w[k] * xp[..., lo : lo + t, :]
    return out


def gaussian_smooth(counts: np.ndarray, sigma_bins: float, renormalise_edges: bool = False, *,
                    centred: bool = False, fill_missing: bool = False) -> np.ndarray:
    """Gaussian smoothing along time, per trial and neuron. counts: [trial, time, neuron] (or [time, neuron]).

    renormalise_edges=False replicates NLB smooth_spk on one trial exactly: convolution 'same' with
    the normalised window of gaussian_window, zeros beyond the trial, so the first and last ~3 sigma
    are attenuated and NaNs propagate. renormalise_edges=True divides by the kernel mass that fell on
    observed bins instead: a constant stays constant up to the edges and NaN bins count as missing.
    NLB smooths whole continuous sessions, where trial edges see real neighbouring data, so per trial
    the renormalised form is the closer analogue of its PSTHs.

    Missing (NaN) bins stay NaN in the renormalised output, or with fill_missing=True get the
    kernel-weighted mean of the observed bins in reach (NaN only where none is in reach: the
    baselines' features need a value in every bin). centred: gaussian_window's.
    """
    x = np.asarray(counts, dtype=np.float64)
    w = gaussian_window(sigma_bins, centred)
    if not renormalise_edges:
        if fill_missing:
            raise ValueError("fill_missing needs renormalise_edges=True")
        return convolve_time(x, w)
    observed = ~np.isnan(x)
    mass = convolve_time(observed.astype(np.float64), w)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = convolve_time(np.where(observed, x, 0.0), w) / mass
    return np.where(mass > 1e-12 if fill_missing else observed, out, np.nan)
