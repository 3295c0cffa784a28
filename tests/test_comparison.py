"""The comparison model kinds (model/comparison.py): closed-form KL, a true bound on the exact log
marginal likelihood of a linear-Gaussian model, masked bins hidden from inference, short fits of every
kind x likelihood, and the CLI's refusals."""

import itertools
import math

import pytest
import torch
from typer.testing import CliRunner

from reference import kalman_filter
from test_models_table import LIKELIHOODS, tiny_data
from xfads_cli.cli import app
from xfads_cli.config import ModelConfig, TrainConfig
from xfads_cli.model.comparison import KINDS, ComparisonModel, gaussian_kl
from xfads_cli.train.loop import train_model

f64 = torch.float64


def make(kind: str, likelihood: str = "gaussian", dynamics: str = "linear", n: int = 4, L: int = 2,
         dtype=f64) -> ComparisonModel:
    cfg = ModelConfig(kind=kind, latent_dim=L, dynamics=dynamics, dynamics_hidden=16, likelihood=likelihood,
                      encoder_hidden=16, samples=4)
    spec = {"n_neurons": n, "heldin": torch.ones(n, dtype=torch.bool), "dt": 1.0, "inputs": None}
    return ComparisonModel(cfg, [spec]).to(dtype)


def test_gaussian_kl_equals_torch_distributions():
    g = torch.Generator().manual_seed(0)
    mu, mu_p = torch.randn(5, 3, generator=g, dtype=f64), torch.randn(5, 3, generator=g, dtype=f64)
    var, var_p = torch.rand(5, 3, generator=g, dtype=f64) + 0.1, torch.rand(5, 3, generator=g, dtype=f64) + 0.1
    ref = torch.distributions.kl_divergence(torch.distributions.Normal(mu, var.sqrt()),
                                            torch.distributions.Normal(mu_p, var_p.sqrt())).sum(-1)
    torch.testing.assert_close(gaussian_kl(mu, var, mu_p, var_p), ref)


@pytest.mark.parametrize("kind", KINDS)
def test_elbo_bounds_exact_log_marginal_likelihood(kind):
    """Linear dynamics, Gaussian observations: every kind's q is a Markov chain whose KL terms add up to
    KL(q(z_{1:T}) || p(z_{1:T})) in expectation, so the ELBO lies below the Kalman filter's log p(y);
    with the inference network trained (generative model fixed) it comes within a fraction of a nat.
    A KL term off by a factor or a sign breaks one side or the other."""
    torch.manual_seed(0)
    model = make(kind)
    with torch.no_grad():
        model.dynamics.A.copy_(torch.tensor([[0.9, 0.2], [-0.2, 0.9]], dtype=f64))
        model.sessions[0].likelihood.raw_R.fill_(0.5)
    y = torch.randn(1, 6, 4, dtype=f64, generator=torch.Generator().manual_seed(1))
    s = model.sessions[0]
    kf = kalman_filter(model.dynamics.A.detach(), torch.diag(model.q()).detach(), s.readout.weight.detach(),
                       s.readout.bias.detach(), s.likelihood.variance().detach(), model.m0.detach(),
                       torch.diag(model.q0()).detach(), y[0])
    generative = {"dynamics", "sessions", "m0", "raw_q0", "raw_q"}
    inference = [p for n, p in model.named_parameters() if n.split(".")[0] not in generative]
    opt = torch.optim.Adam(inference, lr=1e-2)
    for _ in range(300):
        opt.zero_grad()
        (-model.elbo(y, n_samples=64).elbo.sum()).backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        elbo = float(model.elbo(y, n_samples=4000, noise=torch.Generator().manual_seed(2)).elbo[0])
    # Monte Carlo error of the 4000-sample mean: ~0.02 nat
    assert float(kf.loglik) - 0.3 < elbo < float(kf.loglik) + 0.1


@pytest.mark.parametrize("kind", KINDS)
def test_masked_bins_are_hidden_from_inference(kind):
    """local_mask False after a cut: the posterior samples up to the cut do not depend on what the
    hidden bins hold (a forecast's context decides the state at its cut)."""
    torch.manual_seed(0)
    model = make(kind, "poisson", "mlp").eval()
    g = torch.Generator().manual_seed(3)
    y = torch.poisson(torch.full((2, 8, 4), 2.0, dtype=f64), generator=g)
    y2 = y.clone()
    y2[:, 5:] = torch.poisson(torch.full((2, 3, 4), 9.0, dtype=f64), generator=g)
    mask = torch.ones(2, 8, dtype=torch.bool)
    mask[:, 5:] = False
    noise = torch.randn(model.noise_shape(2, 8), dtype=f64, generator=g)
    a = model.posterior(y, local_mask=mask, noise=noise)
    b = model.posterior(y2, local_mask=mask, noise=noise)
    torch.testing.assert_close(a.samples, b.samples)
    c = model.posterior(y2, noise=noise)  # unmasked, the later bins do reach the posterior
    assert not torch.allclose(a.samples[:, :, :5], c.samples[:, :, :5])


@pytest.mark.parametrize("kind, likelihood", list(itertools.product(KINDS, LIKELIHOODS)))
def test_short_fit_decreases_loss(kind, likelihood):
    torch.manual_seed(0)
    y = tiny_data(likelihood)
    model = make(kind, likelihood, "mlp", n=6, L=3, dtype=torch.float32)
    model.init_from_data(y)
    result = train_model(model, y[:10], y[10:], TrainConfig(max_epochs=12, batch_size=5, lr=1e-2, drop_local=0.1),
                         seed=0).run()
    losses = [r["train_loss"] for r in result.history]
    assert all(math.isfinite(v) for v in losses)
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3, losses


def test_cli_fits_a_comparison_kind_and_refuses_what_it_cannot_do(tmp_path):
    runner = CliRunner()

    def invoke(*args):
        return runner.invoke(app, [str(a) for a in args])

    data = tmp_path / "vdp.h5"
    assert invoke("simulate", "vdp", "--out", data, "--neurons", 6, "--trials", 12, "--bins", 12).exit_code == 0
    run = tmp_path / "run"
    fit = invoke("fit", data, "--out", run, "--set", "model.kind=dvbf", "--set", "model.latent_dim=2",
                 "--max-epochs", 1, "--json")
    assert fit.exit_code == 0, fit.output
    assert '"kind": "dvbf"' in fit.stdout
    other = tmp_path / "other.h5"
    other.write_bytes(data.read_bytes())
    two = invoke("fit", data, other, "--out", tmp_path / "two", "--set", "model.kind=dkf", "--max-epochs", 1)
    assert two.exit_code == 2 and "model.kind=meta" in two.output
    assert not (tmp_path / "two").exists()
    (tmp_path / "bins.ndjson").write_text("")
    stream = invoke("stream", run, "--input", tmp_path / "bins.ndjson")
    assert stream.exit_code == 2 and "model.kind=dvbf" in stream.output
