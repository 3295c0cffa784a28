"""The meta model's embedding: where sessions start (model/embedding_init.py), where a new session is
searched (train/embedding_search.py training_region), and the check that says whether an embedding
means anything (scoring/embedding.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from xfads_cli.config import ModelConfig
from xfads_cli.data.simulate import simulate_arrays
from xfads_cli.model.embedding_init import (LADDER, SIGNATURE_SIZE, dynamics_signature, ladder_row, place_by_signature,
                                            signature_ladder, starting_embeddings)
from xfads_cli.model.meta import MetaXFADS
from xfads_cli.scoring.embedding import axis_separation, check_embedding, dynamics_effect
from xfads_cli.train.embedding_search import search_embedding, training_manifold

CFG = ModelConfig(kind="meta", latent_dim=3, rank_local=2, rank_backward=1, samples=4, dynamics_hidden=16,
                  encoder_hidden=8, embed_dim=2, read_in_dim=4)


def spearman(x, y) -> float:
    rx, ry = np.argsort(np.argsort(x)), np.argsort(np.argsort(y))
    return float(np.corrcoef(rx, ry)[0, 1])


def test_signature_orders_a_family_by_its_time_scale_whatever_the_neurons():
    # ring attractors rotating at different speeds, each session with its own neurons
    freqs = np.linspace(0.25, 1.5, 6)
    sigs = [dynamics_signature(simulate_arrays("ring", neurons=20 + 4 * i, trials=16, bins=60, bin_ms=20.0, seed=i,
                                               base_rate_hz=10.0, param=float(f))["counts"])
            for i, f in enumerate(freqs)]
    start = starting_embeddings(sigs, 2)
    assert start.shape == (6, 2)
    assert abs(spearman(start[:, 0], freqs)) >= 0.9
    assert start[:, 0].std() == pytest.approx(1.0)
    # the same data start in the same place (the sign is fixed), the signature ignores neuron order
    again = starting_embeddings([s.copy() for s in sigs], 2)
    assert np.allclose(start, again)
    counts = simulate_arrays("ring", neurons=20, trials=16, bins=60, bin_ms=20.0, seed=0, base_rate_hz=10.0)["counts"]
    assert np.allclose(dynamics_signature(counts), dynamics_signature(counts[..., ::-1]))


def test_starting_embeddings_of_one_session_or_identical_ones_are_the_prior_mean():
    sig = np.arange(10.0)
    assert not starting_embeddings([sig], 2).any()
    assert not starting_embeddings([sig, sig.copy(), sig.copy()], 2).any()


def test_a_new_session_is_placed_between_the_training_sessions_its_signature_falls_between():
    # signatures on one line (the first axis); embeddings of the 3 sessions along another
    sigs = np.array([[0.0, 0.0], [1.0, 2.0], [3.0, 6.0]])
    means = np.array([[-1.0, 0.0], [0.0, 1.0], [2.0, 1.0]])
    # halfway between sessions 1 and 2 in signature -> halfway between their embeddings
    assert np.allclose(place_by_signature(np.array([2.0, 4.0]), sigs, means), [1.0, 1.0])
    assert np.allclose(place_by_signature(np.array([1.0, 2.0]), sigs, means), means[1])
    # beyond either end: that end's session, never extrapolated
    assert np.allclose(place_by_signature(np.array([9.0, 18.0]), sigs, means), means[2])
    assert np.allclose(place_by_signature(np.array([-5.0, -10.0]), sigs, means), means[0])


def test_signature_ladder_compares_like_with_like():
    counts = simulate_arrays("ring", neurons=12, trials=20, bins=40, bin_ms=20.0, seed=0, base_rate_hz=10.0)["counts"]
    ladder = signature_ladder(counts)
    assert ladder.shape == (len(LADDER), SIGNATURE_SIZE) == (len(LADDER), dynamics_signature(counts).size)
    # the trial average of few trials holds more noise: its share of the variance falls with n
    assert ladder[0, -1] > ladder[3, -1] > ladder[-1, -1]
    assert np.allclose(ladder[-1], dynamics_signature(counts))  # n >= the trials: all of them
    assert [ladder_row(n) for n in (0, 1, 3, 8, 9, 1000)] == [0, 0, 1, 3, 3, len(LADDER) - 1]


def test_axis_separation_is_the_spread_along_the_first_axis_over_the_posterior_sd():
    means = torch.tensor([[-1.0, 0.0], [0.0, 0.0], [1.0, 0.0]])
    variances = torch.full((3, 2), 0.25)
    # sd of (-1, 0, 1) (unbiased) = 1, posterior sd along the axis = 0.5
    assert axis_separation(means, variances) == pytest.approx(2.0)


def _model(seed: int = 0) -> MetaXFADS:
    torch.manual_seed(seed)
    specs = [{"name": f"s{i}", "n_neurons": 6, "dt": 0.02} for i in range(3)]
    return MetaXFADS(CFG, specs).eval()


def test_dynamics_effect_is_zero_for_one_embedding_and_grows_with_the_hypernetwork():
    model = _model()
    z0 = torch.randn(20, 3)
    same = torch.zeros(3, 2)
    assert dynamics_effect(model, same, z0, horizon=5) == pytest.approx(0.0, abs=1e-12)
    apart = torch.tensor([[-2.0, 0.0], [0.0, 0.0], [2.0, 0.0]])
    weak = dynamics_effect(model, apart, z0, horizon=5)
    with torch.no_grad():
        model.dynamics.hyper[-1].weight.mul_(20.0)
    strong = dynamics_effect(model, apart, z0, horizon=5)
    assert 0 < weak < strong
    check = check_embedding(model, same, torch.full((3, 2), 0.1), z0, horizon=5)
    assert len(check.warnings) == 2 and "overlap" in check.warnings[0] and "hardly changes" in check.warnings[1]


def test_a_new_session_is_searched_where_the_training_sessions_sit():
    # four sessions along a bent line; each joined to its two nearest others
    means = torch.tensor([[0.0, 0.0], [1.0, 0.0], [2.0, 0.5], [3.0, 1.5]])
    among = training_manifold(means, neighbours=2, points=5)
    # every candidate lies on a segment between two sessions: inside the sessions' bounding box
    assert bool((among >= means.min(0).values - 1e-6).all() and (among <= means.max(0).values + 1e-6).all())
    assert all(bool((among - m).abs().sum(-1).min() < 1e-5) for m in means)  # the sessions themselves
    assert bool((among - torch.tensor([0.5, 0.0])).abs().sum(-1).min() < 1e-5)  # the midpoint of 0-1
    assert len(among) == len(torch.unique(among, dim=0))
    model = _model()
    idx = model.add_session({"name": "new", "n_neurons": 6, "dt": 0.02, "refine_embedding": True})
    y = torch.poisson(torch.full((4, 12, 6), 0.5))
    # an estimate far outside is moved to the nearest candidate; the result is one of the candidates
    found = search_embedding(model, idx, y, torch.tensor([30.0, 30.0]), among=among, samples=4, confidence=0.0)
    assert torch.equal(found.candidates, among) and bool((among == found.e).all(-1).any())
    kept = search_embedding(model, idx, y, torch.tensor([30.0, 30.0]), among=among, samples=4, confidence=1e9)
    assert torch.equal(kept.e, torch.tensor([3.0, 1.5]))


def test_a_search_whose_forecasts_do_not_depend_on_e_keeps_the_estimate_it_started_from():
    model = _model()
    with torch.no_grad():
        model.dynamics.hyper[-1].weight.zero_()  # f(.; e) = f(.; 0) for every e
    idx = model.add_session({"name": "new", "n_neurons": 6, "dt": 0.02, "refine_embedding": True})
    y = torch.poisson(torch.full((6, 12, 6), 0.5))
    start = torch.tensor([0.2, -0.1])
    found = search_embedding(model, idx, y, start, points=5, samples=4)
    assert torch.equal(found.e, start)
    # every candidate scored the same: the grid's argmin is the first one, the statistics are what keep `start`
    assert float(found.scores.max() - found.scores.min()) < 1e-9
