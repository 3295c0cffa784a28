"""Few-shot adaptation: choose the new session's embedding by how well it FORECASTS the shots.

    e* = argmin_e  NLL_forecast(e),
    NLL_forecast(e) = - sum_{j, t >= c, n} log p(y_jtn | mean over samples of the rate forecast from
                      filtering y_j[:c] and rolling f(.; e) forward), per observed (bin, neuron)

The smoothing ELBO that fits the read-in and readout barely depends on e: a smoother that sees the
whole trial needs little from the dynamics, and on the benchmark its optimum sat near the prior mean
for held-out sessions on both sides of the family (benchmarks/README.md, meta section). The forecast
likelihood of the second half of each shot, given its first half, depends on e only through the
dynamics, which is what the embedding is for.

The search is a coarse grid over the box the training sessions' embeddings occupy, widened (a line
for a 1-D embedding, Sobol points for more dimensions; the prior's bulk for runs that do not record
where their sessions sit), plus the current estimate, then a finer grid around the best: the new
session is placed among the training sessions, on their scale, not anywhere the forecast is flat. Every candidate is scored
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
def trial_nll(model, session: int, y: torch.Tensor, e: torch.Tensor, context: int, *,
              samples: int = 32, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Per shot: the NLL summed over observed (bin, neuron) of y[:, context:] under the sample-mean
    forecast given y[:, :context], and how many were observed; y [trial, time, neuron_i] (NaN =
    missing), e [embed] -> ([trial], [trial]). An embedding whose forecast blows up gives inf."""
    s = model.sessions[session]
    gen = torch.Generator(device=y.device).manual_seed(seed)
    fc = model.forecast(y[:, :context], y.shape[1] - context, session=session, e=e, n_samples=samples, generator=gen)
    # the likelihood's inverse link of the mean forecast (init_bias maps a mean observation to eta)
    eta = s.likelihood.init_bias(fc.rates.mean(0))
    target = y[:, context:]
    nll = -s.likelihood.log_prob(eta, target).sum((1, 2)).double()
    return torch.nan_to_num(nll, nan=float("inf")), torch.isfinite(target).sum((1, 2))


def forecast_nll(model, session: int, y: torch.Tensor, e: torch.Tensor, context: int, *,
                 samples: int = 32, seed: int = 0) -> float:
    """NLL per observed (bin, neuron) of y[:, context:] under the sample-mean forecast given y[:, :context].
    y [trial, time, neuron_i] (NaN = missing), e [embed]."""
    nll, observed = trial_nll(model, session, y, e, context, samples=samples, seed=seed)
    return float(nll.sum() / observed.sum().clamp(min=1))


def _grid(dim: int, center: torch.Tensor, half_width: torch.Tensor, points: int, seed: int) -> torch.Tensor:
    """[points, dim]: evenly spaced on a line (dim 1) or scrambled Sobol points in the box
    center +- half_width (half_width [dim] or a number)."""
    if dim == 1:
        offsets = torch.linspace(-1.0, 1.0, points)[:, None]
    else:
        sobol = torch.quasirandom.SobolEngine(dim, scramble=True, seed=seed)
        offsets = 2 * sobol.draw(points) - 1
    return center[None] + offsets.to(center) * torch.as_tensor(half_width).to(center)


def training_region(means: torch.Tensor, variances: torch.Tensor, widen: float = 0.15) -> tuple[torch.Tensor, torch.Tensor]:
    """The box a new session's embedding is searched in: the training sessions' embedding means
    [session, embed] (variances: their q(e_i)'s), widened on each side by `widen` of its extent and by
    two posterior sds, so that a session a little beyond the family's ends can still be placed past
    them (further out the dynamics are an extrapolation the shots cannot check).
    Returns (center, half_width), each [embed]."""
    lo, hi = means.min(0).values, means.max(0).values
    half = (hi - lo) / 2 * (1 + 2 * widen) + 2 * variances.median(0).values.sqrt()
    return (lo + hi) / 2, half


def search_embedding(model, session: int, y: torch.Tensor, current: torch.Tensor, *, context: int | None = None,
                     region: tuple[torch.Tensor, torch.Tensor] | None = None, radius: float = 2.5,
                     points: int | None = None, samples: int = 32, seed: int = 0,
                     confidence: float = 2.0) -> EmbeddingSearch:
    """Best forecasting embedding for `session` on its shots y [trial, time, neuron_i], searched over
    the box region = (center, half_width) [embed] (`training_region`: where the training sessions sit),
    by default [-radius, radius]^embed (the prior N(0, I)'s bulk), and at `current` [embed] (moved into
    the box). context: filtered bins per shot (default half the trial; the rest is forecast);
    points: per grid (coarse, then fine), default 21 on a line and 32 per dimension otherwise.
    confidence: how many standard errors (over shots) the best candidate must beat `current` by;
    0 takes the grid's argmin whatever the margin."""
    T = y.shape[1]
    context = T // 2 if context is None else int(context)
    if not 1 <= context < T:
        raise ValueError(f"context must be in [1, {T - 1}] bins for {T}-bin trials, got {context}")
    dim = current.numel()
    points = (21 if dim == 1 else 32 * dim) if points is None else points
    if region is None:
        region = (torch.zeros_like(current), torch.full_like(current, radius))
    center, half = (r.to(current).reshape(-1) for r in region)
    inside = torch.minimum(torch.maximum(current.reshape(-1), center - half), center + half)
    coarse = torch.cat([_grid(dim, center, half, points, seed), inside.reshape(1, -1)])
    score = lambda c: trial_nll(model, session, y, c, context, samples=samples, seed=seed)
    per_trial = [score(c) for c in coarse]
    best = coarse[int(torch.tensor([float(n.sum()) for n, _ in per_trial]).argmin())]
    # the finer grid spans one coarse spacing on either side of the best point
    spacing = 2 * half / max(points - 1, 1) if dim == 1 else 2 * half / points ** (1 / dim)
    fine = _grid(dim, best, spacing, points, seed + 1)
    per_trial += [score(c) for c in fine]
    candidates = torch.cat([coarse, fine])
    observed = per_trial[0][1].sum().clamp(min=1)
    scores_t = torch.tensor([float(n.sum() / observed) for n, _ in per_trial])
    k = int(scores_t.argmin())
    # keep the estimate the search started from unless the best candidate forecasts the shots better
    # beyond chance: paired over shots (the same draws for every candidate), its mean gain more than
    # `confidence` standard errors. With few short shots the NLL is often flat in e, and the grid's
    # argmin is then noise that can sit anywhere in the box.
    start = points  # the index of `inside` in candidates
    diff = per_trial[k][0] - per_trial[start][0]
    n = diff.numel()
    if n > 1 and torch.isfinite(diff).all():
        se = float(diff.std() / n**0.5)
        if float(diff.mean()) >= -confidence * se:
            k = start
    return EmbeddingSearch(candidates[k].clone(), float(scores_t[k]), candidates, scores_t)
