"""Does a meta run's session embedding mean anything? (docs/model.md section 6, "Reading an embedding")

Two numbers a user can act on, from the sessions' q(e_i) and the model's own dynamics:

    separation = sd over sessions of their means along the first principal axis
                 / the median posterior sd of q(e_i) along it
        below ~2 the sessions' embeddings overlap within their own uncertainty: their order says nothing.

    dynamics_effect = between / within at `horizon` bins:
        from the same latent states z_0 (the sessions' own smoothed states), roll f(.; e_i) forward with the
        same noise for every session i; between = the variance over sessions of the mean rollout, within =
        the variance of the rollouts of one session (the process noise), both averaged over latents,
        starts and sessions.
        below ~0.1 the sessions' embeddings move a forecast by less than a third of its own spread: the
        sessions differ in their read-ins and readouts, not in their dynamics, however spread their
        embeddings look.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

SEPARATION_MIN = 2.0
EFFECT_MIN = 0.1


class EmbeddingCheck(NamedTuple):
    separation: float
    dynamics_effect: float
    horizon: int
    warnings: list[str]

    def to_dict(self) -> dict:
        return {"separation": self.separation, "dynamics_effect": self.dynamics_effect,
                "dynamics_effect_horizon_bins": self.horizon, "warnings": self.warnings}


def first_axis(means: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The sessions' first principal axis [embed] and their scores on it [session] (means [session, embed])."""
    centered = means - means.mean(0)
    axis = torch.linalg.svd(centered, full_matrices=False).Vh[0]
    return axis, centered @ axis


def axis_separation(means: torch.Tensor, variances: torch.Tensor) -> float:
    """means, variances [session, embed] of q(e_i) -> the separation above (nan for < 2 sessions)."""
    if means.shape[0] < 2:
        return float("nan")
    axis, score = first_axis(means)
    sd = (variances * axis**2).sum(-1).sqrt().median()
    return float(score.std() / sd.clamp(min=1e-12))


@torch.no_grad()
def dynamics_effect(model, means: torch.Tensor, z0: torch.Tensor, horizon: int, samples: int = 16,
                    seed: int = 0) -> float:
    """between / within (module docstring) for embeddings means [session, embed] from latent states
    z0 [start, latent], `samples` rollouts per start and session with common random numbers."""
    starts = z0.shape[0]
    ends = []
    for e in means:
        gen = torch.Generator(device=z0.device).manual_seed(seed)
        z = z0[None].expand(samples, starts, -1)
        path = model.rollout(z, horizon, e=e.to(z0)[None].expand(starts, -1), generator=gen)  # [sample, start, H, L]
        ends.append(path[:, :, -1])
    ends = torch.stack(ends)  # [session, sample, start, latent]
    within = ends.var(1).mean()
    between = ends.mean(1).var(0).mean()
    return float(between / within.clamp(min=1e-12))


def default_horizon(n_time: int, horizon_bins: int | None) -> int:
    """The forecast horizon the scores use (eval.horizon_bins, default a quarter of the trial)."""
    return max(1, n_time // 4) if horizon_bins is None else int(horizon_bins)


def check_embedding(model, means: torch.Tensor, variances: torch.Tensor, z0: torch.Tensor, horizon: int,
                    seed: int = 0) -> EmbeddingCheck:
    """Both numbers and the warnings they call for (means, variances [session, embed]; z0 [start, latent])."""
    sep = axis_separation(means, variances)
    effect = dynamics_effect(model, means, z0, horizon, seed=seed) if means.shape[0] >= 2 else float("nan")
    warnings = []
    if sep == sep and sep < SEPARATION_MIN:
        warnings.append(f"the sessions' embeddings overlap within their uncertainty (separation {sep:.2g} < "
                        f"{SEPARATION_MIN:g}): their order and distances say nothing about the sessions")
    if effect == effect and effect < EFFECT_MIN:
        warnings.append(f"the embedding hardly changes the dynamics (effect {effect:.2g} < {EFFECT_MIN:g} over "
                        f"{horizon} bins): the sessions differ in their read-ins and readouts, not in f; do not "
                        "read the embedding as a map of the sessions' dynamics (train longer, or see docs/model.md)")
    return EmbeddingCheck(sep, effect, horizon, warnings)


@torch.no_grad()
def smoothed_states(model, ys: list[torch.Tensor], means: torch.Tensor, per_session: int = 64, seed: int = 0) -> torch.Tensor:
    """Latent states to start rollouts from: posterior means of up to 8 trials of each session ys[i]
    [trial, time, neuron_i] under its embedding means[i], `per_session` bins drawn from them -> [start, latent]."""
    gen = torch.Generator().manual_seed(seed)
    out = []
    for i, (y, e) in enumerate(zip(ys, means)):
        if y is None or not y.shape[0]:
            continue
        post = model.posterior(y[:8], i, e.to(y.dtype), mode="smoother", noise=torch.Generator(device=y.device).manual_seed(seed))
        z = post.mean.reshape(-1, post.mean.shape[-1])
        pick = torch.randperm(z.shape[0], generator=gen)[:per_session].to(z.device)
        out.append(z[pick])
    return torch.cat(out)


class FlowField(NamedTuple):
    """f(z; e) - z on a grid of the plane of the latent states' first two principal axes: grid [2, n, n]
    (coordinates along the axes, centred on the states' mean), flow [2, n, n] (the step projected on the
    axes), one per embedding value in `embeddings` [k, embed]; `states` [start, 2] the states projected."""

    grid: torch.Tensor
    flows: list[torch.Tensor]
    embeddings: torch.Tensor
    states: torch.Tensor


@torch.no_grad()
def flow_fields(model, embeddings: torch.Tensor, z0: torch.Tensor, n: int = 15) -> FlowField:
    """The dynamics' one-step flow in the principal plane of z0 [start, latent] (the other latent
    coordinates at their mean) under each embedding value embeddings [k, embed]."""
    center = z0.mean(0)
    _, s, vh = torch.linalg.svd(z0 - center, full_matrices=False)
    axes = vh[:2]  # [2, latent]
    states = (z0 - center) @ axes.T
    reach = 2.5 * states.std(0).clamp(min=1e-6)
    a, b = (torch.linspace(-1, 1, n, dtype=z0.dtype, device=z0.device)[:, None] * reach).unbind(-1)
    ga, gb = torch.meshgrid(a, b, indexing="xy")
    z = center + ga.reshape(-1, 1) * axes[0] + gb.reshape(-1, 1) * axes[1]  # [n * n, latent]
    flows = []
    for e in embeddings:
        f = model.transition(z.shape[0], e.to(z))
        step = f(z[None])[0] - z
        flows.append((step @ axes.T).T.reshape(2, n, n))
    return FlowField(torch.stack([ga, gb]), flows, embeddings, states)
