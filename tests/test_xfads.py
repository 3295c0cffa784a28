"""Properties of the composed XFADS model: causality, held-out neurons, missing data, forecasting."""

import torch

from xfads_cli.config import ModelConfig
from xfads_cli.model.xfads import XFADS


def make_model(mode="smoother", n=7, heldin=None, **kw):
    torch.manual_seed(0)
    cfg = ModelConfig(latent_dim=3, dynamics_hidden=16, rank_local=2, rank_backward=2, encoder_hidden=16, samples=6,
                      mode=mode, **kw)
    mask = torch.ones(n, dtype=torch.bool) if heldin is None else heldin
    return XFADS.one_session(cfg, n_neurons=n, heldin=mask, dt=0.02)


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


def test_forecast_rates_are_capped_by_the_training_counts():
    """An expansive rollout (here: a readout 50x too large) cannot forecast more than twice the most
    spikes a neuron showed in one training bin, plus one; a checkpoint without the cap loads uncapped."""
    from xfads_cli.runs.checkpoint import FORMAT, migrate

    model = make_model()
    s = model.sessions[0]
    y = counts()
    with torch.no_grad():
        model.init_from_data(y)
        assert torch.equal(s.rate_ceiling, 2 * y.reshape(-1, 7).amax(0) + 1)
        s.readout.weight.mul_(50.0)
        gen = torch.Generator().manual_seed(3)
        capped = model.forecast(y, horizon=6, n_samples=8, generator=gen).rates
        assert (capped <= s.rate_ceiling).all() and torch.isfinite(capped).all()
        # a checkpoint from before the cap (and the per-session layout): no cap
        old = {k.removeprefix("sessions.0."): v for k, v in model.state_dict().items() if k != "sessions.0.rate_ceiling"}
        model.load_state_dict(migrate({"format": FORMAT, "config": {}, "spec": {}, "model": old})["model"])
        assert torch.isinf(s.rate_ceiling).all()
        gen = torch.Generator().manual_seed(3)
        uncapped = model.forecast(y, horizon=6, n_samples=8, generator=gen).rates
    assert (uncapped > 2 * y.reshape(-1, 7).amax(0) + 1).any()  # the test would pass without a cap otherwise


def test_pca_readout_spans_the_planted_loadings():
    """Counts from log rates d + C z_t with a planted 2-D C: the 'pca' init's first two readout columns
    span C's column space (small principal angles); the 'mean' init's random columns do not."""
    from xfads_cli.model.readout_init import pca_readout

    g = torch.Generator().manual_seed(0)
    n, T, N = 60, 80, 40
    C = torch.randn(N, 2, generator=g) * 0.5
    phase = torch.rand(n, 1, generator=g) * 6.28
    t = torch.arange(T) * 0.15
    z = torch.stack([torch.sin(t + phase), torch.cos(0.7 * t + 2 * phase)], -1)  # [n, T, 2], slow
    rates = torch.exp(torch.log(torch.tensor(0.3)) + z @ C.T)
    y = torch.poisson(rates, generator=g)
    cfg = ModelConfig(latent_dim=4, init="pca")
    m = XFADS.one_session(cfg, N, torch.ones(N, dtype=torch.bool), dt=0.02)
    random = m.sessions[0].readout.weight.detach().clone()
    m.init_from_data(y)
    W = m.sessions[0].readout.weight.detach()

    def cos_largest_angle(A, B):
        qa, qb = torch.linalg.qr(A)[0], torch.linalg.qr(B)[0]
        return torch.linalg.svdvals(qa.T @ qb).min()

    assert cos_largest_angle(W[:, :2], C) > 0.95
    assert cos_largest_angle(random[:, :2], C) < 0.8
    # scaled for unit-variance latents: the readout's top component has the smoothed data's spread
    assert 0.2 < W[:, 0].norm() / C.norm() < 2.0
    # the bias is the mean init's either way
    m2 = XFADS.one_session(ModelConfig(latent_dim=4), N, torch.ones(N, dtype=torch.bool), dt=0.02)
    m2.init_from_data(y)
    assert torch.equal(m.sessions[0].readout.bias, m2.sessions[0].readout.bias)
    # missing bins are filled, not propagated
    y_nan = y.clone()
    y_nan[0, :5] = float("nan")
    assert torch.isfinite(pca_readout(y_nan, y.mean((0, 1)), m.sessions[0].likelihood.init_bias, 4, random)).all()
