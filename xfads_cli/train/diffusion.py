"""Training the trajectory diffusion model of `generate --sampler ldidp` (model/ldidp.py) on a fitted
run's latent trajectories: a plain denoising loop, separate from the state-space models' training."""

from __future__ import annotations

from typing import NamedTuple

import torch

from xfads_cli.model.ldidp import TrajectoryDiffusion


class DiffusionFit(NamedTuple):
    """The trained model, its loss per step and the seconds it took."""

    model: TrajectoryDiffusion
    losses: list[float]
    seconds: float


def fit_trajectory_diffusion(z: torch.Tensor, *, steps: int = 1500, batch_size: int = 64, lr: float = 5e-3,
                             levels: int = 200, hidden: int = 32, seed: int = 0) -> DiffusionFit:
    """Train a TrajectoryDiffusion on trajectories z [trajectory, time, latent] (e.g. posterior draws of
    the training trials): Adam, a cosine learning-rate decay to 0 over `steps`, gradients clipped at 1."""
    import time

    t0 = time.monotonic()
    gen = torch.Generator(device=z.device).manual_seed(seed)
    torch.manual_seed(seed)
    model = TrajectoryDiffusion(z.shape[-1], levels, hidden).to(device=z.device, dtype=z.dtype)
    with torch.no_grad():
        flat = z.reshape(-1, z.shape[-1])
        model.loc.copy_(flat.mean(0))
        model.scale.copy_(flat.std(0).clamp(min=1e-6))
    opt = torch.optim.Adam(model.net.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    losses = []
    for _ in range(steps):
        idx = torch.randint(0, z.shape[0], (min(batch_size, z.shape[0]),), generator=gen, device=z.device)
        loss = model.loss(z[idx], gen)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.net.parameters(), 1.0)
        opt.step()
        sched.step()
        losses.append(float(loss.detach()))
    model.eval()
    return DiffusionFit(model, losses, time.monotonic() - t0)
