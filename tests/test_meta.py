"""The meta-dynamical model (docs/model.md section 6) and its multi-session training loop."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch

from xfads_cli.config import ModelConfig, TrainConfig
from xfads_cli.data.simulate import simulate_arrays
from xfads_cli.model.meta import HyperMLPDynamics, MetaXFADS, kl_std_normal, pool_gaussians
from xfads_cli.train.loop import train_model

NEURONS = (5, 8, 11)
CFG = ModelConfig(kind="meta", latent_dim=4, dynamics_hidden=16, rank_local=3, rank_backward=2,
                  encoder_hidden=16, samples=5, embed_dim=2, read_in_dim=8, hyper_rank=2)
TRAIN = TrainConfig(max_epochs=6, batch_size=8, lr=1e-2, schedule="exponential", lr_decay=0.99, patience=100, drop_local=0.1)


def specs(neurons=NEURONS, heldout_last=False):
    return [{"name": f"s{i}", "n_neurons": n, "heldin": [not (heldout_last and k == n - 1) for k in range(n)],
             "dt": 0.02} for i, n in enumerate(neurons)]


def make_model(seed=0, **kw):
    torch.manual_seed(seed)
    return MetaXFADS(CFG, specs(**kw))


def counts(batch, time, n, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.poisson(torch.full((batch, time, n), 0.5), generator=g)


def test_shapes_of_every_method_for_three_sessions():
    model = make_model(heldout_last=True)
    B, T, S, H, E, L = 3, 12, 4, 5, CFG.embed_dim, CFG.latent_dim
    for i, n in enumerate(NEURONS):
        y = counts(B, T, n, seed=i)
        y[0, 3] = float("nan")  # a missing bin must not break anything
        mu_t, var_t, mu, var = model.embed(y, i)
        assert mu_t.shape == var_t.shape == (B, E) and mu.shape == var.shape == (E,)
        assert bool((var_t > 0).all()) and bool((var > 0).all())
        post = model.posterior(y, i, n_samples=S)
        assert post.mean.shape == (B, T, L) and post.samples.shape == (S, B, T, L) and post.kl.shape == (B, T)
        post = model.posterior(y, f"s{i}", torch.zeros(E), mode="filter", n_samples=S)  # name, shared e
        assert post.mean.shape == (B, T, L)
        terms = model.elbo(y, i, n_samples=S, drop_local=0.2)
        for t in (terms.elbo, terms.loglik, terms.kl):
            assert t.shape == (B,) and bool(torch.isfinite(t).all())
        assert terms.kl_embed.shape == terms.frobenius.shape == ()
        loss = model.batch_loss(y, i)
        assert loss.shape == () and math.isfinite(float(loss.detach()))
        assert model.rates(post.samples, i).shape == (S, B, T, n)
        fc = model.forecast(y[:, :8], H, session=i, n_samples=S)
        assert fc.latents.shape == (S, B, H, L) and fc.rates.shape == (S, B, H, n)
        assert bool((fc.rates > 0).all())
    # Per-session parameters are disjoint from the shared ones and together cover the model.
    shared = {id(p) for p in model.shared_parameters()}
    per = [{id(p) for p in model.session_parameters(i)} for i in range(3)]
    assert all(not (shared & s) for s in per) and not (per[0] & per[1])
    assert shared | set().union(*per) == {id(p) for p in model.parameters()}
    y_new = counts(4, T, 6, seed=9)
    j = model.add_session({"name": "new", "n_neurons": 6, "heldin": [True] * 6, "dt": 0.02}, y_new)
    assert j == 3 and model.forecast(y_new, H, session=j, n_samples=S).rates.shape == (S, 4, H, 6)
    # The readout bias starts at the log of each neuron's mean rate.
    expected = torch.log(y_new.mean((0, 1)).clamp(min=1e-3) / 0.02)
    assert torch.allclose(model.sessions[j].readout.bias, expected)


def test_loss_combines_the_terms_with_the_documented_scaling():
    model = make_model()
    y = counts(5, 10, 8)
    torch.manual_seed(3)
    t = model.elbo(y, 1)
    torch.manual_seed(3)
    loss = model.batch_loss(y, 1)
    expected = -t.elbo.sum() + t.kl_embed + CFG.frobenius_weight * t.frobenius
    assert torch.allclose(loss, expected)
    # a data-parallel rank holding a share of the batch adds that share of the per-session terms
    torch.manual_seed(3)
    half = model.batch_loss(y, 1, share=0.5)
    assert torch.allclose(half, -t.elbo.sum() + 0.5 * (t.kl_embed + CFG.frobenius_weight * t.frobenius))


def test_adapted_dynamics_reduce_to_the_base_mlp_and_match_dense_weights():
    torch.manual_seed(0)
    f = HyperMLPDynamics(4, 16, 2, embed_dim=3, rank=2, hyper_hidden=8).double()
    z = torch.randn(5, 6, 4, dtype=torch.float64)  # [sample, batch, latent]
    base = f.base(z)
    # e = 0: the bias-free hypernetwork outputs exactly zero.
    assert torch.equal(f(z, f.adapters(torch.zeros(6, 3, dtype=torch.float64))), base)
    e = torch.randn(6, 3, dtype=torch.float64)
    adapters = f.adapters(e)
    assert not torch.allclose(f(z, adapters), base)
    # The low-rank path equals running each trial with its dense weight W_l + U_l V_l^T.
    for b in range(6):
        h = z[:, b]
        for k, lin in enumerate(f.linears):
            U, V = adapters[k]
            h = h @ (lin.weight + U[b] @ V[b].T).T + lin.bias
            h = torch.nn.functional.silu(h) if k < len(f.linears) - 1 else h
        assert torch.allclose(z[:, b] + h, f(z, adapters)[:, b])
    # Zero hypernetwork output: any e gives the base MLP.
    with torch.no_grad():
        f.hyper[-1].weight.zero_()
    assert torch.equal(f(z, f.adapters(e)), base)


def test_linear_hypernetwork_vanishes_at_zero_and_is_first_order_in_e():
    """hyper_hidden = 0 (the default): U(e) = A e exactly, V(e) = V0 + B e."""
    torch.manual_seed(3)
    f = HyperMLPDynamics(4, 16, 1, embed_dim=2, rank=2).double()
    assert len(f.hyper) == 1
    z = torch.randn(3, 5, 4, dtype=torch.float64)
    assert torch.equal(f(z, f.adapters(torch.zeros(5, 2, dtype=torch.float64))), f.base(z))
    e = torch.randn(5, 2, dtype=torch.float64)
    for (U1, V1), (U2, V2), (U0, V0) in zip(f.adapters(e), f.adapters(2 * e), f.adapters(0 * e)):
        assert torch.allclose(U2, 2 * U1) and torch.allclose(V2 - V0, 2 * (V1 - V0))
    e0 = torch.zeros(5, 2, dtype=torch.float64, requires_grad=True)
    (grad,) = torch.autograd.grad(f(z, f.adapters(e0)).square().sum(), e0)
    assert grad.abs().max() > 1e-6


def test_frobenius_penalty_equals_dense_norm():
    torch.manual_seed(1)
    f = HyperMLPDynamics(4, 16, 1, embed_dim=2, rank=3, hyper_hidden=8).double()
    adapters = f.adapters(torch.randn(5, 2, dtype=torch.float64))
    dense = sum(torch.linalg.matrix_norm(U @ V.transpose(-1, -2), "fro") for U, V in adapters)
    assert torch.allclose(f.frobenius(adapters), dense)
    pen = f.frobenius(f.adapters(torch.zeros(2, 2, dtype=torch.float64, requires_grad=True)))
    pen.sum().backward()  # finite gradients at e = 0, where the norm is zero
    assert all(bool(torch.isfinite(p.grad).all()) for p in f.hyper.parameters())


def test_embedding_kl_matches_dense_formula():
    torch.manual_seed(2)
    mu, var = torch.randn(4, 3, dtype=torch.float64), torch.rand(4, 3, dtype=torch.float64) + 0.1
    q = torch.distributions.MultivariateNormal(mu, torch.diag_embed(var))
    p = torch.distributions.MultivariateNormal(torch.zeros(3, dtype=torch.float64), torch.eye(3, dtype=torch.float64))
    assert torch.allclose(kl_std_normal(mu, var), torch.distributions.kl_divergence(q, p))


def test_pooling_identical_trials_is_consistent():
    model = make_model().double()
    y1 = counts(1, 15, 8, seed=4).double()
    mu_t, var_t, mu1, var1 = model.embed(y1, 1)
    # One trial: the pooled q(e) is that trial's own.
    assert torch.allclose(mu1, mu_t[0]) and torch.allclose(var1, var_t[0])
    n = 5
    mu_tn, var_tn, mu, var = model.embed(y1.expand(n, -1, -1), 1)
    assert torch.allclose(mu_tn, mu_t.expand(n, -1)) and torch.allclose(var_tn, var_t.expand(n, -1))
    # Product of experts, prior once: precision 1 + n (1/var_1 - 1), natural mean n mu_1 / var_1.
    prec = 1 + n * (1 / var1 - 1)
    assert torch.allclose(var, 1 / prec) and torch.allclose(mu, n * mu1 / var1 / prec)
    assert bool((var < var1).all())  # more trials, sharper embedding
    m, v = pool_gaussians(torch.randn(3, 2), torch.ones(3, 2))
    assert torch.allclose(v, torch.full((2,), 0.25))


def hopf_sessions(params=(-0.5, 1.0, 2.0), trials=10, bins=20):
    return [torch.as_tensor(simulate_arrays("hopf", neurons=n, trials=trials, bins=bins, param=p, seed=i)["counts"],
                            dtype=torch.float32)
            for i, (n, p) in enumerate(zip(NEURONS, params))]


def test_fit_of_the_meta_model_decreases_the_loss_and_freezing_keeps_shared_parameters():
    data = hopf_sessions()
    model = make_model()
    for i, y in enumerate(data):
        model.init_from_data(y, i)
    train, valid = [y[:8] for y in data], [y[8:] for y in data]
    training = train_model(model, train, valid, TRAIN, seed=0)
    seen = [event.record for event in training]
    result = training.result
    losses = [r["train_loss"] for r in result.history]
    assert len(losses) == TRAIN.max_epochs == len(seen)
    assert all(math.isfinite(v) for v in losses) and all(math.isfinite(r["valid_loss"]) for r in result.history)
    assert losses[-1] < losses[0]
    assert result.best_epoch >= 0 and math.isfinite(result.best_score)
    # A session's embedding is its own, not noise: from two disjoint halves of its trials it comes out
    # closer than any two sessions' (other mu, neurons and read-in) do; here 0.017 against 0.11.
    model.eval()
    with torch.no_grad():
        halves = [(model.embed(y[:5], i)[2], model.embed(y[5:], i)[2]) for i, y in enumerate(data)]
    within = max(float((a - b).norm()) for a, b in halves)
    across = min(float((a - b).norm()) for s in range(3) for t in range(s) for a in halves[s] for b in halves[t])
    assert across > within, (across, within)

    # Few-shot adaptation: a new session, shared parameters frozen, only its own parameters trained.
    y_new = torch.as_tensor(simulate_arrays("hopf", neurons=7, trials=4, bins=20, param=1.0, seed=7)["counts"],
                            dtype=torch.float32)
    j = model.add_session({"name": "new", "n_neurons": 7, "heldin": [True] * 7, "dt": 0.02}, y_new)
    prefix = f"sessions.{j}."
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.freeze_shared()
    assert not any(p.requires_grad for p in model.shared_parameters())
    cfg = TrainConfig(max_epochs=2, batch_size=2, lr=1e-2, patience=100)
    train_model(model, [None] * j + [y_new], [None] * (j + 1), cfg, parameters=model.session_parameters(j)).run()
    after = model.state_dict()
    for k, v in before.items():
        if not k.startswith(prefix):
            assert torch.equal(after[k], v), k
    assert any(not torch.equal(after[k], v) for k, v in before.items() if k.startswith(prefix))


def test_fit_of_the_meta_model_rejects_no_training_data():
    model = make_model()
    with pytest.raises(ValueError):
        train_model(model, [None, None, None], [None] * 3, TRAIN).run()


def test_rebuilds_from_session_specs_and_gaussian_likelihood_reads_raw_values():
    model = make_model(heldout_last=True)
    model.add_session({"name": "x", "n_neurons": 4, "heldin": [True, False, True, True], "dt": 0.01})
    again = MetaXFADS(CFG, model.session_specs)
    again.load_state_dict(model.state_dict())  # a checkpoint needs only the config and the specs
    assert [s.name for s in again.sessions] == ["s0", "s1", "s2", "x"]
    assert torch.equal(again.sessions[3].heldin, torch.tensor([True, False, True, True]))
    import dataclasses
    torch.manual_seed(0)
    gauss = MetaXFADS(dataclasses.replace(CFG, likelihood="gaussian"), specs())
    y = torch.randn(3, 10, 8)
    terms = gauss.elbo(y, 1)
    assert bool(torch.isfinite(terms.elbo).all()) and len(list(gauss.session_parameters(1))) == 6  # read-in (2), readout (2), R, embedding offset


@pytest.mark.parametrize("adaptation", ["input", "none"])
def test_baseline_adaptations_run_with_the_same_shapes(adaptation):
    """The paper's baselines (benchmarks/meta_fewshot.py): embedding as a dynamics input, or no embedding."""
    torch.manual_seed(0)
    model = MetaXFADS(CFG, specs(), adaptation=adaptation)
    B, T, H, E, L = 3, 10, 4, CFG.embed_dim, CFG.latent_dim
    y = counts(B, T, NEURONS[1], seed=1)
    t = model.elbo(y, 1)
    assert t.elbo.shape == (B,) and t.posterior.mean.shape == (B, T, L)
    assert float(t.frobenius) == 0.0
    loss = model.batch_loss(y, 1, drop_local=0.1)
    loss.backward()
    assert math.isfinite(loss.item())
    fc = model.forecast(y, H, session=1, n_samples=6)
    assert fc.latents.shape == (6, B, H, L) and fc.rates.shape == (6, B, H, NEURONS[1])
    z = torch.randn(5, B, L)
    e0, e1 = torch.zeros(B, E), torch.ones(B, E)
    f0, f1 = model.dynamics(z, model.dynamics.adapters(e0)), model.dynamics(z, model.dynamics.adapters(e1))
    assert f0.shape == z.shape
    # only "input" lets e change f
    assert torch.allclose(model.dynamics(z, None), f0)
    assert torch.allclose(f0, f1) == (adaptation == "none")


def test_unknown_adaptation_is_rejected():
    with pytest.raises(ValueError, match="adaptation"):
        MetaXFADS(CFG, specs(), adaptation="linear")


def test_dynamics_are_first_order_sensitive_to_the_embedding_at_the_prior_mean():
    """U(0) = 0 but V(0) = V0 != 0, so d f / d e != 0 at e = 0: the embedding can leave the prior mean.
    (With both factors vanishing at 0, U V^T is quadratic in e and this gradient is exactly zero.)"""
    torch.manual_seed(0)
    f = HyperMLPDynamics(4, 16, 1, embed_dim=2, rank=2, hyper_hidden=8).double()
    z = torch.randn(3, 5, 4, dtype=torch.float64)
    e = torch.zeros(5, 2, dtype=torch.float64, requires_grad=True)
    (grad,) = torch.autograd.grad(f(z, f.adapters(e)).square().sum(), e)
    assert grad.abs().max() > 1e-6
    with torch.no_grad():
        f.v_offset.zero_()
    e = torch.zeros(5, 2, dtype=torch.float64, requires_grad=True)
    (grad,) = torch.autograd.grad(f(z, f.adapters(e)).square().sum(), e)
    assert grad.abs().max() < 1e-12


def test_refined_session_embedding_replaces_the_pooled_mean_and_is_trained():
    from xfads_cli.model.session import BoundSession

    model = make_model()
    y = counts(4, 12, 6, seed=3)
    i = model.add_session({"name": "new", "n_neurons": 6, "dt": 0.02, "refine_embedding": True}, y)
    assert model.session_specs[i]["refine_embedding"] is True
    assert torch.equal(model.session_embedding(y, i)[2], torch.zeros(CFG.embed_dim))  # starts at the prior mean
    before = {k: v.clone() for k, v in model.state_dict().items() if not k.startswith(f"sessions.{i}.")}
    model.freeze_shared()
    train_model(model, [None] * i + [y], [None] * (i + 1), TRAIN, parameters=list(model.session_parameters(i))).run()
    refined = model.sessions[i].embedding.detach()
    assert refined.abs().sum() > 0
    assert torch.equal(model.session_embedding(y, i)[2], refined)
    assert torch.equal(BoundSession.pooled(model, i, y).e, refined)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    # the rebuilt model (from the stored specs) has the parameter and loads the state
    rebuilt = MetaXFADS(CFG, model.session_specs)
    rebuilt.load_state_dict(model.state_dict())
    assert torch.equal(rebuilt.sessions[i].embedding, refined)


@pytest.mark.parametrize("mode", ["smoother", "filter"])
def test_one_session_at_the_prior_mean_is_xfads(mode):
    """docs/model.md section 6 on top of the same filter: one session, an identity read-in and e = 0 (where the
    hypernetwork's update vanishes) give exactly the single-session XFADS with the same weights."""
    from dataclasses import replace

    from xfads_cli.model.xfads import XFADS

    n = 5
    cfg = replace(CFG, embed_dim=1, read_in_dim=n)
    torch.manual_seed(3)
    meta = MetaXFADS(cfg, [{"name": "a", "n_neurons": n, "dt": 0.02}]).double()
    single = XFADS.one_session(replace(cfg, kind="xfads"), n, torch.ones(n, dtype=torch.bool), 0.02).double()
    s = meta.sessions[0]
    with torch.no_grad():
        s.read_in.weight.copy_(torch.eye(n))
        s.read_in.bias.zero_()
        s.readout.bias.normal_()  # something other than an initial value on both sides
    for name in ("local", "backward"):
        getattr(single, name).load_state_dict(meta.get_submodule(name).state_dict())
    single.sessions[0].readout.load_state_dict(s.readout.state_dict())
    single.dynamics.load_state_dict(meta.dynamics.base.state_dict())
    for name in ("m0", "raw_q0", "raw_q"):
        getattr(single, name).data.copy_(getattr(meta, name).data)
    y = counts(3, 10, n, seed=4).double()
    y[1, 4] = float("nan")
    e = torch.zeros(1, dtype=torch.float64)
    post_meta = meta.filter_session(y, 0, e, mode=mode, n_samples=4, noise=torch.Generator().manual_seed(7))[0]
    post_single = single.posterior(y, mode=mode, n_samples=4, noise=torch.Generator().manual_seed(7))
    for a, b in [(post_meta.mean, post_single.mean), (post_meta.samples, post_single.samples),
                 (post_meta.kl, post_single.kl)]:
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(meta.rates(post_meta.samples, 0), single.rates(post_single.samples))
    z = post_meta.samples[:, :, -1]
    torch.manual_seed(11)
    roll_meta = meta.rollout(z, 6, e=e)
    torch.manual_seed(11)
    torch.testing.assert_close(roll_meta, single.rollout(z, 6))
    # and away from e = 0 the dynamics do change
    assert not torch.allclose(meta.rollout(z, 1, e=e + 1.0, generator=torch.Generator().manual_seed(1)),
                              single.rollout(z, 1, generator=torch.Generator().manual_seed(1)))


def test_both_model_kinds_serve_a_session_through_one_interface():
    """Both kinds are one class; session(i) of either is a BoundSession (without an embedding for the
    one-session model), a SessionModel with the same noise shapes, and a session's training draws come
    from the same function."""
    from xfads_cli.model.base import SessionModel
    from xfads_cli.model.session import BoundSession
    from xfads_cli.model.xfads import XFADS
    from xfads_cli.train.draws import trial_draws

    torch.manual_seed(0)
    meta = make_model()
    y = counts(4, 10, NEURONS[1], seed=2)
    single = XFADS.one_session(replace(CFG, kind="xfads"), NEURONS[1], torch.ones(NEURONS[1], dtype=torch.bool),
                               0.02)
    view, own = meta.session(1, lambda: y), single.session(0)
    assert type(meta) is type(single) is XFADS
    assert type(view) is type(own) is BoundSession and own.e is None and view.e.shape == (CFG.embed_dim,)
    assert isinstance(own, SessionModel) and isinstance(view, SessionModel)
    assert not isinstance(view, torch.nn.Module)
    assert view.noise_shape(4, 10) == single.noise_shape(4, 10)
    assert bool((view.heldin == meta.sessions[1].heldin).all())
    draws = trial_draws(meta, y, [1, 2, 3, 4], drop=0.2, input_drop=0.3, session=1)
    assert draws.embed_noise.shape == (4, CFG.embed_dim)
    assert draws.input_dropout.dropped.shape == (4, 10, meta.n_inputs(1))
    assert trial_draws(single, y, [1, 2, 3, 4]).embed_noise is None
    loss = meta.batch_loss(y, 1, **draws._asdict())  # coordinated dropout and forecast draws work for both
    assert math.isfinite(float(loss))


def test_the_per_session_parts_are_one_code_for_both_kinds():
    """Readout init (bias, 'pca' weights) is the same code for a meta session as for the one-session
    model; only a session without a read-in caps its forecasts; each kind refuses what it cannot hold."""
    from xfads_cli.model.readout_init import pca_readout
    from xfads_cli.model.session import Session
    from xfads_cli.model.task_inputs import InputSpec
    from xfads_cli.model.xfads import XFADS

    y = counts(6, 20, 8, seed=5)
    meta = MetaXFADS(replace(CFG, init="pca"), specs())
    single = XFADS.one_session(replace(CFG, kind="xfads", init="pca"), 8, torch.ones(8, dtype=torch.bool), 0.02)
    for model, i in ((meta, 1), (single, 0)):
        part = model.sessions[i]
        assert type(part) is Session
        random = part.readout.weight.detach().clone()
        model.init_from_data(y, i)
        mean = y.reshape(-1, 8).mean(0)
        assert torch.allclose(part.readout.bias, part.likelihood.init_bias(mean))
        assert torch.equal(part.readout.weight, pca_readout(y, mean, part.likelihood.init_bias, CFG.latent_dim, random))
    assert torch.isinf(meta.sessions[1].rate_ceiling).all()  # the meta model forecasts uncapped, as it always has
    assert torch.equal(single.sessions[0].rate_ceiling, 2 * y.reshape(-1, 8).amax(0) + 1)
    with pytest.raises(ValueError, match="one session"):
        single.add_session({"n_neurons": 4, "dt": 0.02})
    with pytest.raises(ValueError, match="one session"):
        XFADS(replace(CFG, kind="xfads"), specs())
    with pytest.raises(ValueError, match="task inputs"):
        MetaXFADS(CFG, [{"n_neurons": 4, "dt": 0.02, "inputs": InputSpec(10, 3).to_dict()}])
