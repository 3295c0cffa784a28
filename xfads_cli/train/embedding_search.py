"""Few-shot adaptation: choose the new session's embedding by how well it FORECASTS the shots.

    e* = argmin_e  NLL_forecast(e),
    NLL_forecast(e) = - sum_{j, t >= c, n} log p(y_jtn | mean over samples of the rate forecast from
                      filtering y_j[:c] and rolling f(.; e) forward), per observed (bin, neuron)

The smoothing ELBO that fits the read-in and readout barely depends on e: a smoother that sees the
whole trial needs little from the dynamics, and on the benchmark its optimum sat near the prior mean
for held-out sessions on both sides of the family (benchmarks/README.md, meta section). The forecast
likelihood of the second half of each shot, given its first half, depends on e only through the
dynamics, which is what the embedding is for.

The candidates are points on the segments joining each training session's embedding to its two
nearest others (`training_manifold`): the new session is placed among the training sessions, on their
scale and along the curve they trace, not anywhere the forecast is flat. Runs that do not record where
their sessions sit get a coarse grid over the prior's bulk (a line for a 1-D embedding, Sobol points
for more dimensions) plus the current estimate, then a finer grid around the best. Either way a
candidate replaces the current estimate only if it forecasts the shots better beyond chance. Every candidate is scored
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


def training_manifold(means: torch.Tensor, neighbours: int = 2, points: int = 11) -> torch.Tensor:
    """Where a new session's embedding may go: `points` evenly spaced points on each segment joining a
    training session's embedding mean (means [session, embed]) to each of its `neighbours` nearest
    others -> [candidate, embed], duplicates removed. A one-parameter family's sessions lie along a
    curve; these segments trace it, so a new session is placed among the training sessions (between
    two of them, or on one), never beyond the family's ends nor off the curve, where the shots cannot
    tell embeddings apart."""
    n = means.shape[0]
    if n == 1:
        return means.clone()
    dist = torch.cdist(means, means)
    dist.fill_diagonal_(float("inf"))
    near = dist.topk(min(neighbours, n - 1), largest=False).indices  # [session, neighbours]
    t = torch.linspace(0.0, 1.0, points, dtype=means.dtype, device=means.device)[:, None]
    pairs = {tuple(sorted((i, int(j)))) for i in range(n) for j in near[i]}
    segments = [means[i] + t * (means[j] - means[i]) for i, j in sorted(pairs)]
    return torch.unique(torch.cat(segments).round(decimals=6), dim=0)


def search_embedding(model, session: int, y: torch.Tensor, current: torch.Tensor, *, context: int | None = None,
                     among: torch.Tensor | None = None, radius: float = 2.5, points: int | None = None,
                     samples: int = 32, seed: int = 0, confidence: float = 2.0) -> EmbeddingSearch:
    """Best forecasting embedding for `session` on its shots y [trial, time, neuron_i]: among the
    candidates `among` [candidate, embed] (`training_manifold`: where the training sessions sit), the
    estimate `current` [embed] moved to the nearest of them; or, for runs that do not record where their
    sessions sit (among None), over [-radius, radius]^embed (the prior N(0, I)'s bulk) and at `current`,
    then a finer grid around the best. context: filtered bins per shot (default half the trial; the rest
    is forecast); points: per grid, default 21 on a line and 32 per dimension otherwise. confidence: how
    many standard errors (over shots) the best candidate must beat the (moved) estimate by; 0 takes the
    argmin whatever the margin."""
    T = y.shape[1]
    context = T // 2 if context is None else int(context)
    if not 1 <= context < T:
        raise ValueError(f"context must be in [1, {T - 1}] bins for {T}-bin trials, got {context}")
    dim = current.numel()
    score = lambda c: trial_nll(model, session, y, c, context, samples=samples, seed=seed)
    if among is not None:
        candidates = among.to(current)
        start = int(((candidates - current.reshape(1, -1)) ** 2).sum(-1).argmin())
        per_trial = [score(c) for c in candidates]
    else:
        points = (21 if dim == 1 else 32 * dim) if points is None else points
        half = torch.full_like(current.reshape(-1), radius)
        coarse = torch.cat([_grid(dim, torch.zeros_like(half), half, points, seed), current.reshape(1, -1)])
        per_trial = [score(c) for c in coarse]
        best = coarse[int(torch.tensor([float(n.sum()) for n, _ in per_trial]).argmin())]
        # the finer grid spans one coarse spacing on either side of the best point
        spacing = 2 * half / max(points - 1, 1) if dim == 1 else 2 * half / points ** (1 / dim)
        fine = _grid(dim, best, spacing, points, seed + 1)
        per_trial += [score(c) for c in fine]
        candidates, start = torch.cat([coarse, fine]), points  # `current` is the last coarse row
    observed = per_trial[0][1].sum().clamp(min=1)
    scores_t = torch.tensor([float(n.sum() / observed) for n, _ in per_trial])
    k = int(scores_t.argmin())
    # keep the estimate the search started from unless the best candidate forecasts the shots better
    # beyond chance: paired over shots (the same draws for every candidate), its mean gain more than
    # `confidence` standard errors. With few short shots the NLL is often flat in e, and the argmin is
    # then noise.
    diff = per_trial[k][0] - per_trial[start][0]
    n = diff.numel()
    if n > 1 and torch.isfinite(diff).all():
        se = float(diff.std() / n**0.5)
        if float(diff.mean()) >= -confidence * se:
            k = start
    return EmbeddingSearch(candidates[k].clone(), float(scores_t[k]), candidates, scores_t)
