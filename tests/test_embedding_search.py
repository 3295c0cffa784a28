"""The forecast search that picks a new session's embedding in few-shot adaptation."""

import pytest
import torch

from xfads_cli.model.likelihoods import Poisson
from xfads_cli.model.xfads import Forecast
from xfads_cli.train.embedding_search import forecast_nll, search_embedding


class PlantedModel:
    """A stand-in whose forecast rate of neuron k is base * exp(e_k - target_k) (k < embed), so the
    forecast NLL of counts drawn at e = target is smallest there; e[0] > blow_up gives infinite rates."""

    def __init__(self, target, blow_up=None, neurons=3, base=4.0):
        self.target = torch.tensor(target, dtype=torch.float64)
        self.blow_up, self.base, self.calls = blow_up, base, []
        self.sessions = [type("S", (), {"likelihood": Poisson(neurons, dt=1.0)})()]

    def forecast(self, y_context, horizon, *, session, e, n_samples, generator):
        self.calls.append(e.clone())
        B, N, E = y_context.shape[0], y_context.shape[2], len(self.target)
        log_scale = torch.zeros(N, dtype=torch.float64)
        log_scale[:E] = e - self.target
        rates = (self.base * log_scale.exp()).expand(n_samples, B, horizon, N).clone()
        if self.blow_up is not None and e[0] > self.blow_up:
            rates = torch.full_like(rates, float("inf"))
        return Forecast(torch.zeros(n_samples, B, horizon, 1), rates)


def planted_counts(trials=20, time=40, neurons=3, base=4.0):
    torch.manual_seed(0)
    return torch.poisson(torch.full((trials, time, neurons), base, dtype=torch.float64))


def test_search_recovers_a_planted_one_dimensional_embedding():
    model = PlantedModel([0.73])
    found = search_embedding(model, 0, planted_counts(), torch.zeros(1, dtype=torch.float64))
    assert abs(float(found.e) - 0.73) < 0.05
    assert found.nll == pytest.approx(float(found.scores.min()))
    assert len(found.candidates) == len(found.scores) == 2 * 21 + 1  # coarse grid + current + fine grid
    # every candidate was scored on the context half, and the chosen one is among them
    assert any(torch.equal(c, found.e) for c in found.candidates)


def test_search_recovers_a_planted_two_dimensional_embedding():
    model = PlantedModel([-1.0, 0.8])
    found = search_embedding(model, 0, planted_counts(), torch.zeros(2, dtype=torch.float64), points=64)
    assert torch.allclose(found.e, model.target, atol=0.3)


def test_candidates_whose_forecast_blows_up_are_never_chosen():
    # the best finite candidate sits right below the blow-up; NaN/inf scores must not win the argmin
    model = PlantedModel([2.0], blow_up=1.0)
    found = search_embedding(model, 0, planted_counts(), torch.zeros(1, dtype=torch.float64))
    assert float(found.e) <= 1.0 and torch.isinf(found.scores).any()
    assert found.nll < float("inf")


def test_forecast_nll_matches_the_poisson_formula_and_uses_the_second_half():
    model = PlantedModel([0.5])
    y = planted_counts(trials=3, time=10)
    y[0, 7, 1] = float("nan")  # a missing bin is not counted
    e = torch.tensor([0.2], dtype=torch.float64)
    rate = 4.0 * torch.exp(torch.tensor([0.2 - 0.5, 0.0, 0.0], dtype=torch.float64))
    target = y[:, 5:]
    ok = torch.isfinite(target)
    lp = torch.distributions.Poisson(rate.expand_as(target)).log_prob(torch.where(ok, target, 0.0))
    expected = -lp[ok].sum() / ok.sum()
    assert forecast_nll(model, 0, y, e, 5) == pytest.approx(float(expected), rel=1e-9)


def test_real_model_scores_are_reproducible_and_the_context_is_checked():
    from xfads_cli.config import ModelConfig
    from xfads_cli.model.meta import MetaXFADS

    torch.manual_seed(0)
    cfg = ModelConfig(kind="meta", latent_dim=3, dynamics_hidden=8, encoder_hidden=8, rank_local=2, rank_backward=1,
                      samples=4, embed_dim=1, read_in_dim=4)
    model = MetaXFADS(cfg, [{"name": "a", "n_neurons": 5, "dt": 0.02}]).eval()
    y = torch.poisson(torch.full((2, 12, 5), 0.5))
    e = torch.tensor([0.3])
    first = forecast_nll(model, 0, y, e, 6, samples=8, seed=3)
    assert first == forecast_nll(model, 0, y, e, 6, samples=8, seed=3)  # common random numbers
    assert first != forecast_nll(model, 0, y, torch.tensor([-1.5]), 6, samples=8, seed=3)
    with pytest.raises(ValueError, match="context"):
        search_embedding(model, 0, y, e, context=12)
