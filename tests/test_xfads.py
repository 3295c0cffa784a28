"""Properties of the composed XFADS model: causality, held-out neurons, missing data, forecasting."""

import torch

from xfads_cli.config import ModelConfig
from xfads_cli.model.xfads import XFADS


def make_model(mode="smoother", n=7, heldin=None, **kw):
    torch.manual_seed(0)
    cfg = ModelConfig(latent_dim=3, dynamics_hidden=16, rank_local=2, rank_backward=2, encoder_hidden=16, samples=6,
                      mode=mode, **kw)
    mask = torch.ones(n, dtype=torch.bool) if heldin is None else heldin
    return XFADS(cfg, n_neurons=n, heldin=mask, dt=0.02)


def counts(seed=0, shape=(4, 12, 7)):
    return torch.poisson(torch.full(shape, 1.5), generator=torch.Generator().manual_seed(seed))


def posterior_mean(model, y, **kw):
    torch.manual_seed(123)  # same Monte Carlo noise for both calls
    with torch.no_grad():
        return model.posterior(y, **kw).mean


def test_filter_mode_is_causal_and_smoother_is_not():
    y = counts()
    y2 = y.clone()
    y2[:, 8:] += 5
    filt = make_model("filter")
    a, b = posterior_mean(filt, y), posterior_mean(filt, y2)
    torch.testing.assert_close(a[:, :8], b[:, :8])
    assert not torch.allclose(a[:, 8:], b[:, 8:])
    smooth = make_model("smoother")
    a, b = posterior_mean(smooth, y), posterior_mean(smooth, y2)
    assert not torch.allclose(a[:, :8], b[:, :8])


def test_encoder_never_reads_heldout_neurons():
    heldin = torch.tensor([True] * 5 + [False] * 2)
    model = make_model(heldin=heldin)
    y = counts()
    y2 = y.clone()
    y2[..., 5:] = 9.0
    torch.testing.assert_close(posterior_mean(model, y), posterior_mean(model, y2))


def test_missing_bins_give_a_finite_elbo_and_gradients():
    model = make_model()
    y = counts()
    y[0, 3] = float("nan")
    y[1, :, 2] = float("nan")
    terms = model.elbo(y, drop_local=0.3)
    assert torch.isfinite(terms.elbo).all()
    (-terms.elbo.mean()).backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_forecast_shapes_and_rates():
    model = make_model()
    fc = model.forecast(counts(), horizon=5, n_samples=11)
    assert fc.latents.shape == (11, 4, 5, 3)
    assert fc.rates.shape == (11, 4, 5, 7)
    assert (fc.rates >= 0).all()
