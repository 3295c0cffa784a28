"""Few-shot adaptation: choose the new session's embedding by how well it FORECASTS the shots.

    e* = argmin_e  NLL_forecast(e),
    NLL_forecast(e) = - sum_{j, t >= c, n} log p(y_jtn | mean over samples of the rate forecast from
                      filtering y_j[:c] and rolling f(.; e) forward), per observed (bin, neuron)

The smoothing ELBO that fits the read-in and readout barely depends on e: a smoother that sees the
whole trial needs little from the dynamics, and on the benchmark its optimum sat near the prior mean
for held-out sessions on both sides of the family (benchmarks/README.md, meta section). The forecast
likelihood of the second half of each shot, given its first half, depends on e only through the
dynamics, which is what the embedding is for.

The search is a coarse grid over the prior's bulk (a line for a 1-D embedding, Sobol points for more
dimensions) plus the current estimate, then a finer grid around the best. Every candidate is scored
with the same random draws (common random numbers), so the comparison is not swamped by Monte Carlo
noise. Pure function of the model's parameters; nothing is trained here.
"""

from __future__ import annotations

from typing import NamedTuple

import torch


class EmbeddingSearch(NamedTuple):
    """e: the chosen embedding [embed]; nll: its forecast NLL per observed (bin, neuron);
    candidates [candidate, embed] and their scores [candidate], in the order evaluated."""

    e: torch.Tensor
    nll: float
    candidates: torch.Tensor
    scores: torch.Tensor


@torch.no_grad()
def forecast_nll(model, session: int, y: torch.Tensor, e: torch.Tensor, context: int, *,
                 samples: int = 32, seed: int = 0) -> float:
    """NLL per observed (bin, neuron) of y[:, context:] under the sample-mean forecast given y[:, :context].
    y [trial, time, neuron_i] (NaN = missing), e [embed]."""
    s = model.sessions[session]
    gen = torch.Generator(device=y.device).manual_seed(seed)
    fc = model.forecast(y[:, :context], y.shape[1] - context, session=session, e=e, n_samples=samples, generator=gen)
    # the likelihood's inverse link of the mean forecast (init_bias maps a mean observation to eta)
    eta = s.likelihood.init_bias(fc.rates.mean(0))
    target = y[:, context:]
    observed = torch.isfinite(target).sum()
    nll = float(-s.likelihood.log_prob(eta, target).sum() / observed.clamp(min=1))
    # an embedding whose dynamics blow up within the horizon is simply a bad candidate
    return nll if nll == nll else float("inf")


def _grid(dim: int, center: torch.Tensor, half_width: float, points: int, seed: int) -> torch.Tensor:
    """[points, dim]: evenly spaced on a line (dim 1) or scrambled Sobol points in the cube (dim > 1)."""
    if dim == 1:
        offsets = torch.linspace(-half_width, half_width, points)[:, None]
    else:
        sobol = torch.quasirandom.SobolEngine(dim, scramble=True, seed=seed)
        offsets = (2 * sobol.draw(points) - 1) * half_width
    return center[None] + offsets.to(center)


def search_embedding(model, session: int, y: torch.Tensor, current: torch.Tensor, *, context: int | None = None,
                     radius: float = 2.5, points: int | None = None, samples: int = 32,
                     seed: int = 0) -> EmbeddingSearch:
    """Best forecasting embedding for `session` on its shots y [trial, time, neuron_i], searched over
    [-radius, radius]^embed (the prior N(0, I)'s bulk) and around `current` [embed].
    context: filtered bins per shot (default half the trial; the rest is forecast);
    points: per grid (coarse, then fine), default 21 on a line and 32 per dimension otherwise."""
    T = y.shape[1]
    context = T // 2 if context is None else int(context)
    if not 1 <= context < T:
        raise ValueError(f"context must be in [1, {T - 1}] bins for {T}-bin trials, got {context}")
    dim = current.numel()
    points = (21 if dim == 1 else 32 * dim) if points is None else points
    zero = torch.zeros_like(current)
    coarse = torch.cat([_grid(dim, zero, radius, points, seed), current.reshape(1, -1)])
    scores = [forecast_nll(model, session, y, c, context, samples=samples, seed=seed) for c in coarse]
    best = coarse[int(torch.tensor(scores).argmin())]
    # the finer grid spans one coarse spacing on either side of the best point
    spacing = 2 * radius / max(points - 1, 1) if dim == 1 else 2 * radius / points ** (1 / dim)
    fine = _grid(dim, best, spacing, points, seed + 1)
    scores += [forecast_nll(model, session, y, c, context, samples=samples, seed=seed) for c in fine]
    candidates = torch.cat([coarse, fine])
    scores_t = torch.tensor(scores)
    k = int(scores_t.argmin())
    return EmbeddingSearch(candidates[k].clone(), float(scores_t[k]), candidates, scores_t)
