"""The readout of a session before training (docs/model.md section 1, "Readout before training", and
section 11): principal-axes weights (`pca_readout`) and the task inputs' readout fitted to the
training counts (`fit_input_readout`). Called by `Session.init_from_data` (model/session.py).
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F


def pca_readout(counts: torch.Tensor, mean: torch.Tensor, inverse_link, k: int, fallback: torch.Tensor,
                sigma_bins: float = 2.0) -> torch.Tensor:
    """Readout weights [neuron, k] from the training counts [trial, time, neuron]: the top k principal
    axes of the counts smoothed in time (Gaussian, sigma_bins) and mapped through the inverse link
    (log rate for Poisson), each scaled by its component's standard deviation, so that unit-variance
    latents reproduce the smoothed counts' main modes. Columns beyond the data's rank keep `fallback`'s.
    Why: the encoder and dynamics then start from a readout that already spans the population's
    main co-fluctuations instead of a random one."""
    y = torch.where(torch.isfinite(counts), counts, mean)
    half = int(3 * sigma_bins)
    t = torch.arange(-half, half + 1, dtype=y.dtype, device=y.device)
    kernel = torch.exp(-0.5 * (t / sigma_bins) ** 2)
    n, T, N = y.shape
    flat = y.permute(0, 2, 1).reshape(n * N, 1, T)
    ones = torch.ones(1, 1, T, dtype=y.dtype, device=y.device)
    w = kernel.view(1, 1, -1)
    smooth = F.conv1d(flat, w, padding=half) / F.conv1d(ones, w, padding=half)  # edge-corrected
    smooth = smooth.reshape(n, N, T).permute(0, 2, 1).reshape(-1, N)
    # a floor of a tenth of the mean: log(0) of a silent stretch would otherwise dominate the variance
    x = inverse_link(torch.maximum(smooth, 0.1 * mean.clamp(min=1e-6)))
    x = x - x.mean(0)
    _, S, Vh = torch.linalg.svd(x, full_matrices=False)
    out = fallback.detach().clone()
    r = min(k, int((S > 1e-6 * S[0]).sum()) if S.numel() else 0)
    out[:, :r] = Vh[:r].T * (S[:r] / (x.shape[0] - 1) ** 0.5)
    return out


INIT_TRIALS = 256  # at most this many training trials fit the input readout before training
INIT_STEPS = 100
# Candidate precisions of the prior N(0, 1 / precision) on the input readout's entries (in log-rate),
# chosen on held-out training trials: a recording with few trials per condition needs a stronger pull
# of the condition terms towards the shared time course than one with many.
INPUT_PRECISIONS = (0.1, 1.0, 10.0, 100.0, 1000.0)
HOLDOUT_EVERY = 5  # every 5th training trial scores the candidates


def fit_input_readout(session: nn.Module, counts: torch.Tensor, u: torch.Tensor) -> None:
    """The input readout D and the bias d of `session` (a model/session.py Session) fitted to counts
    [trial, time, neuron] with the latents at 0: eta_t = d + D u_t (u [trial, time, input]), maximum a posteriori under the model's
    likelihood and a prior N(0, 1 / precision) on D's entries, the precision chosen among
    INPUT_PRECISIONS by the likelihood of held-out training trials (and kept in session.input_precision,
    the prior training uses). For Poisson counts with a clock and condition inputs this is a smooth
    per-condition trial average in log-rate: the model starts from what the trial average knows, and
    its latents learn how single trials depart from it. NaN bins are ignored."""
    step = max(1, counts.shape[0] // INIT_TRIALS)
    y, x = counts[::step], u[::step].to(counts.dtype)
    weight = counts.shape[0] / y.shape[0]  # the subsample stands for all training trials
    held = torch.arange(y.shape[0], device=y.device) % HOLDOUT_EVERY == HOLDOUT_EVERY - 1
    precision = INPUT_PRECISIONS[1]
    if held.sum() >= 2:
        scores = []
        for candidate in INPUT_PRECISIONS:
            D, d = _map_readout(session, y[~held], x[~held], candidate, weight)
            scores.append(float(_loglik(session, y[held], x[held], D, d)))
        finite = [(s, p) for s, p in zip(scores, INPUT_PRECISIONS) if math.isfinite(s)]
        precision = max(finite)[1] if finite else precision
    D, d = _map_readout(session, y, x, precision, weight)
    with torch.no_grad():
        if torch.isfinite(D).all() and torch.isfinite(d).all():
            session.input_readout.weight.copy_(D)
            session.readout.bias.copy_(d)
            session.input_precision.fill_(precision)


def _loglik(session: nn.Module, y: torch.Tensor, x: torch.Tensor, D: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
    """sum of log p(y | eta = d + D u) over the observed entries of y [trial, time, neuron]."""
    observed = torch.isfinite(y)
    lp = session.likelihood.log_prob((x @ D.T + d)[None], torch.where(observed, y, torch.zeros_like(y)))[0]
    return (lp * observed).sum()


def _map_readout(session: nn.Module, y: torch.Tensor, x: torch.Tensor, precision: float, weight: float
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """(D, d) maximising weight * loglik(y | d + D u) - precision / 2 |D|^2 (L-BFGS from the model's own)."""
    D = session.input_readout.weight.detach().clone().requires_grad_(True)
    d = session.readout.bias.detach().clone().requires_grad_(True)
    opt = torch.optim.LBFGS([D, d], lr=1.0, max_iter=INIT_STEPS, line_search_fn="strong_wolfe")
    scale = float(torch.isfinite(y).sum()) * weight  # a loss of order 1: L-BFGS's tolerances are absolute

    def closure():
        opt.zero_grad()
        loss = (-weight * _loglik(session, y, x, D, d) + 0.5 * precision * D.square().sum()) / scale
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    return D.detach(), d.detach()
