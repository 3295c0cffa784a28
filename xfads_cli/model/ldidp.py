"""An implicit diffusion model over whole latent trajectories (LDIDP-style generation, docs/model.md
section 13): the `generate --sampler ldidp` alternative to rolling the dynamics forward bin by bin.

Trajectories x_0 = (z_1, ..., z_T) [time, latent] (the fitted run's posterior draws of its training
trials, standardised per latent dimension) are noised by the variance-preserving forward process

    x_s = sqrt(abar_s) x_0 + sqrt(1 - abar_s) eps,   eps ~ N(0, I),   s = 1..K,
    abar_s = cos^2(pi/2 (s/K + 0.008) / 1.008) / cos^2(pi/2 0.008 / 1.008)          (cosine schedule)

and a denoiser eps_theta(x_s, s) (a residual temporal convolution network: every bin sees its
neighbours, so the trajectory's dynamics are learned as a whole) is trained on |eps - eps_theta|^2.
Sampling is DDIM's deterministic (eta = 0) update on a short schedule s_J > ... > s_1 > 0:

    x0_hat = (x_s - sqrt(1 - abar_s) eps_theta(x_s, s)) / sqrt(abar_s)
    x_s'   = sqrt(abar_s') x0_hat + sqrt(1 - abar_s') eps_theta(x_s, s)

J network calls generate all T bins at once, where ancestral sampling makes T sequential calls of f.
"""

from __future__ import annotations

import math
import torch
from torch import nn


def cosine_abar(levels: int) -> torch.Tensor:
    """abar_s for s = 0..K (float64, abar_0 = 1), the cosine schedule of the module docstring."""
    s = torch.arange(levels + 1, dtype=torch.float64) / levels
    f = torch.cos((s + 0.008) / 1.008 * math.pi / 2) ** 2
    return (f / f[0]).clamp(min=1e-5)


def level_embedding(s: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal features [batch, dim] of noise levels s [batch] (float)."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=s.dtype, device=s.device) / max(half - 1, 1))
    arg = s[:, None] * freqs[None]
    return torch.cat([arg.sin(), arg.cos()], -1)


class Denoiser(nn.Module):
    """eps_theta(x_s, s): x [batch, time, latent], s [batch] -> [batch, time, latent]."""

    def __init__(self, latent_dim: int, hidden: int = 64, blocks: int = 3, kernel: int = 5):
        super().__init__()
        self.hidden = hidden
        self.inp = nn.Conv1d(latent_dim, hidden, kernel, padding=kernel // 2)
        self.level = nn.Sequential(nn.Linear(hidden, hidden), nn.SiLU(), nn.Linear(hidden, hidden))
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.SiLU(), nn.Conv1d(hidden, hidden, kernel, padding=kernel // 2), nn.SiLU(),
                          nn.Conv1d(hidden, hidden, kernel, padding=kernel // 2)) for _ in range(blocks))
        self.out = nn.Conv1d(hidden, latent_dim, kernel, padding=kernel // 2)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        h = self.inp(x.transpose(1, 2)) + self.level(level_embedding(s.to(x.dtype), self.hidden))[..., None]
        for block in self.blocks:
            h = h + block(h)
        return self.out(h).transpose(1, 2)


class TrajectoryDiffusion(nn.Module):
    """The denoiser with its noise schedule and the standardisation of the trajectories it was trained
    on (loc, scale [latent]), so that `sample` returns latents on the run's own scale."""

    def __init__(self, latent_dim: int, levels: int = 200, hidden: int = 32, blocks: int = 3):
        super().__init__()
        self.levels = levels
        self.net = Denoiser(latent_dim, hidden, blocks)
        self.register_buffer("abar", cosine_abar(levels).float())
        self.register_buffer("loc", torch.zeros(latent_dim))
        self.register_buffer("scale", torch.ones(latent_dim))
        self.clip = 4.0

    def loss(self, z: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Denoising loss of trajectories z [batch, time, latent] (unstandardised), one random level each."""
        x0 = (z - self.loc) / self.scale
        s = torch.randint(1, self.levels + 1, (z.shape[0],), generator=generator, device=z.device)
        eps = torch.randn(x0.shape, generator=generator, dtype=x0.dtype, device=x0.device)
        a = self.abar.to(x0)[s][:, None, None]
        pred = self.net(a.sqrt() * x0 + (1 - a).sqrt() * eps, s)
        return ((pred - eps) ** 2).mean()

    @torch.no_grad()
    def sample(self, n: int, time: int, steps: int = 10, generator: torch.Generator | None = None) -> torch.Tensor:
        """n trajectories [n, time, latent] by DDIM (eta = 0) over `steps` levels from K down to 0."""
        ref = self.loc
        x = torch.randn((n, time, ref.shape[0]), generator=generator, dtype=ref.dtype, device=ref.device)
        grid = torch.linspace(self.levels, 0, steps + 1).round().long().tolist()
        abar = self.abar.to(ref)
        for s, s_next in zip(grid[:-1], grid[1:]):
            a, a_next = abar[s], abar[s_next]
            eps = self.net(x, torch.full((n,), float(s), dtype=ref.dtype, device=ref.device))
            # clipped to the standardised data's range: at the noisiest levels abar is ~1e-5 and an
            # unclipped estimate overshoots, which a short schedule never corrects
            x0 = ((x - (1 - a).sqrt() * eps) / a.sqrt()).clamp(-self.clip, self.clip)
            x = a_next.sqrt() * x0 + (1 - a_next).sqrt() * eps
        return x * self.scale + self.loc
