"""Every dynamics x likelihood x filter mode runs a short fit on tiny data with a finite, decreasing loss."""

import itertools
import math

import pytest
import torch

from xfads_cli.config import ModelConfig, TrainConfig
from xfads_cli.model.xfads import XFADS
from xfads_cli.train.loop import train_model

DYNAMICS = ("mlp", "gru", "linear")
LIKELIHOODS = ("poisson", "gaussian", "bernoulli")
MODES = ("smoother", "two_filter", "filter")


def tiny_data(likelihood: str, seed: int = 0) -> torch.Tensor:
    """[trial, time, neuron] observations driven by a slow 2-D rotation."""
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(15) * 0.4
    phase = torch.rand(12, 1, generator=g) * 6.28
    z = torch.stack([torch.sin(t + phase), torch.cos(t + phase)], -1)  # [trial, time, 2]
    C = torch.randn(2, 6, generator=g)
    eta = z @ C
    if likelihood == "poisson":
        return torch.poisson(torch.exp(eta), generator=g)
    if likelihood == "gaussian":
        return eta + 0.3 * torch.randn(eta.shape, generator=g)
    return torch.bernoulli(torch.sigmoid(2 * eta), generator=g)


@pytest.mark.parametrize("dynamics, likelihood, mode", list(itertools.product(DYNAMICS, LIKELIHOODS, MODES)))
def test_short_fit_decreases_loss(dynamics, likelihood, mode):
    torch.manual_seed(0)
    y = tiny_data(likelihood)
    cfg = ModelConfig(latent_dim=3, dynamics=dynamics, dynamics_hidden=16, likelihood=likelihood, mode=mode,
                      rank_local=2, rank_backward=1, encoder_hidden=16, samples=4)
    model = XFADS.one_session(cfg, n_neurons=6, heldin=torch.ones(6, dtype=torch.bool), dt=1.0)
    model.init_from_data(y)
    result = train_model(model, y[:10], y[10:], TrainConfig(max_epochs=12, batch_size=5, lr=1e-2, drop_local=0.1, forecast_fraction=0.3), seed=0).run()
    losses = [r["train_loss"] for r in result.history]
    assert all(math.isfinite(v) for v in losses)
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3, losses
    assert math.isfinite(result.best_score)
