"""The trajectory diffusion model behind `generate --sampler ldidp` (model/ldidp.py): the DDIM sampler
against the closed-form denoiser of Gaussian data, and a short training run on a rotation."""

import math

import torch

from xfads_cli.model.ldidp import TrajectoryDiffusion, cosine_abar
from xfads_cli.train.diffusion import fit_trajectory_diffusion


def test_cosine_schedule_runs_from_clean_to_noise():
    abar = cosine_abar(100)
    assert abar[0] == 1.0 and abar[-1] < 1e-3 and bool((abar[1:] < abar[:-1]).all())


class GaussianDenoiser(torch.nn.Module):
    """The exact eps-prediction for standardised data x0 ~ N(m, v) per coordinate:
    E[eps | x_s] = sqrt(1 - a) (x_s - sqrt(a) m) / (a v + 1 - a)."""

    def __init__(self, abar, m, v):
        super().__init__()
        self.abar, self.m, self.v = abar, m, v

    def forward(self, x, s):
        a = self.abar[s.long()][:, None, None]
        return (1 - a).sqrt() * (x - a.sqrt() * self.m) / (a * self.v + 1 - a)


def test_ddim_with_the_exact_denoiser_samples_the_data_distribution():
    model = TrajectoryDiffusion(2, levels=200).double()
    m, v = torch.tensor([0.5, -1.0], dtype=torch.float64), torch.tensor([0.25, 2.0], dtype=torch.float64)
    model.net = GaussianDenoiser(model.abar.double(), m, v)
    model.clip = 1e9
    x = model.sample(4000, 3, steps=50, generator=torch.Generator().manual_seed(0))
    # Monte Carlo: the mean of 12000 draws per coordinate is within ~0.03 sd, the variance within ~3%
    torch.testing.assert_close(x.reshape(-1, 2).mean(0), m, atol=0.05, rtol=0)
    torch.testing.assert_close(x.reshape(-1, 2).var(0), v, rtol=0.08, atol=0)


def test_a_short_fit_learns_a_rotations_speed():
    g = torch.Generator().manual_seed(0)
    T, n = 30, 128
    phase = torch.rand(n, 1, generator=g) * 2 * math.pi
    t = torch.arange(T) * 0.3
    z = 1.5 * torch.stack([torch.sin(t + phase), torch.cos(t + phase)], -1)
    fit = fit_trajectory_diffusion(z, steps=300, seed=0)
    assert sum(fit.losses[-30:]) < 0.5 * sum(fit.losses[:30])
    x = fit.model.sample(200, T, steps=10, generator=torch.Generator().manual_seed(1))
    angle = torch.atan2(x[..., 0], x[..., 1])
    step = torch.remainder(angle[:, 1:] - angle[:, :-1] + math.pi, 2 * math.pi) - math.pi
    assert abs(float(step.median()) - 0.3) < 0.05
    # 300 steps leave the amplitude loose (1.5 -> ~2.5; benchmarks/generate.py trains 1500), not unbounded
    assert 0.75 < float(x.norm(dim=-1).median()) < 3.0
