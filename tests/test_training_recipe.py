"""The training recipe: the learning-rate schedule over the run's budget, automatic batch size, model
selection on a validation score, and forecast-trained trials."""

import math

import pytest
import torch

from xfads_cli.config import ModelConfig, TrainConfig
from xfads_cli.train.draws import auto_batch_size, trial_draws
from xfads_cli.train.loop import Hooks, Objective, run_epochs
from xfads_cli.train.schedule import Budget, anneal_factor


def test_cosine_schedule_anneals_from_lr_to_lr_final_over_the_budget():
    cfg = TrainConfig(schedule="cosine", lr_final=0.1, anneal_fraction=1.0)
    assert anneal_factor(cfg, 0, 0.0) == 1.0
    assert anneal_factor(cfg, 0, 0.5) == pytest.approx(0.55)
    assert anneal_factor(cfg, 0, 1.0) == pytest.approx(0.1)
    assert anneal_factor(cfg, 0, 7.0) == pytest.approx(0.1)  # past the budget: stays at the floor
    values = [anneal_factor(cfg, 0, p / 10) for p in range(11)]
    assert all(a > b for a, b in zip(values, values[1:]))
    assert anneal_factor(TrainConfig(schedule="exponential", lr_decay=0.5), 3, 0.9) == 0.125
    late = TrainConfig(schedule="cosine", lr_final=0.1, anneal_fraction=0.25)  # constant, then annealed
    assert anneal_factor(late, 0, 0.5) == anneal_factor(late, 0, 0.75) == 1.0
    assert anneal_factor(late, 0, 0.875) == pytest.approx(0.55)
    assert anneal_factor(late, 0, 1.0) == pytest.approx(0.1)


def test_budget_progress_is_whichever_of_epochs_and_time_is_used_up_first():
    b = Budget(epochs=10, minutes=2.0)
    assert b.progress(5, 0.0) == 0.5
    assert b.progress(1, 90.0) == 0.75
    assert Budget(epochs=10, minutes=None).progress(2, 1e6) == 0.2
    assert Budget(epochs=10, minutes=1.0, epoch0=4, seconds0=60.0).progress(6, 90.0) == 0.5


def test_auto_batch_size_gives_several_steps_per_epoch_on_small_recordings():
    assert auto_batch_size(24) == 8
    assert auto_batch_size(160) == 16
    assert auto_batch_size(1000) == 64
    assert all(8 <= auto_batch_size(n) <= 64 for n in range(1, 5000, 37))


def _toy(cfg, select="valid_loss", records=None, **kwargs):
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 1)
    x = torch.randn(8, 3)
    scores = iter(records or [])
    objective = Objective(batches=lambda epoch: [x[i: i + 2] for i in range(0, 8, 2)],
                          batch_loss=lambda b: model(b).square().mean(), valid_loss=lambda: math.nan)
    hooks = Hooks(evaluate=(lambda m: next(scores)) if records else None)
    return model, run_epochs(model, cfg, objective, hooks, select=select, **kwargs).run()


def test_cosine_run_ends_at_lr_final_and_records_a_falling_lr():
    cfg = TrainConfig(max_epochs=5, lr=0.1, lr_final=0.01, anneal_fraction=1.0, warmup_steps=0, patience=100)
    _, result = _toy(cfg)
    lrs = [r["lr"] for r in result.history]
    assert all(a > b for a, b in zip(lrs, lrs[1:]))
    # the last step of the last epoch runs at progress 19/20 of the budget
    assert lrs[-1] == pytest.approx(0.1 * anneal_factor(cfg, 4, 19 / 20))


def test_selection_on_a_score_keeps_the_epoch_with_the_highest_value():
    cfg = TrainConfig(max_epochs=4, lr=0.1, patience=100)
    records = [{"valid_fp_bps": v} for v in (0.01, 0.05, 0.02, float("nan"))]
    _, result = _toy(cfg, select="valid_fp_bps", records=records)
    assert result.best_epoch == 1 and result.best_score == 0.05 and result.select == "valid_fp_bps"


@pytest.mark.parametrize("schedule, epochs", [("exponential", 3), ("cosine", 9)])
def test_patience_counts_epochs_and_with_the_cosine_schedule_waits_for_the_anneal(schedule, epochs):
    cfg = TrainConfig(max_epochs=10, lr=0.1, patience=2, schedule=schedule, anneal_fraction=0.3)
    records = [{"valid_fp_bps": v} for v in (0.1, 0.05, 0.04, 0.03, 0.02, 0.01, 0.0, 0.0, 0.0, 0.0)]
    _, result = _toy(cfg, select="valid_fp_bps", records=records)
    # best at epoch 0; 2 worse epochs stop the exponential run; the cosine one anneals over the last 30%
    # (from 70% of the budget) and stops when half of that (15%) passed without a new best: epoch 8 ends at 90%
    assert len(result.history) == epochs and result.best_epoch == 0 and "no validation improvement" in result.stopped


def test_a_new_best_during_the_anneal_restarts_the_count():
    cfg = TrainConfig(max_epochs=20, lr=0.1, patience=2, anneal_fraction=0.5)
    records = [{"valid_fp_bps": v} for v in [0.1] + [0.0] * 11 + [0.2] + [0.0] * 7]
    _, result = _toy(cfg, select="valid_fp_bps", records=records)
    # anneal from epoch 10 (50%); new best at epoch 12 (ends at 65%); stop 25% later: after epoch 17 (90%)
    assert result.best_epoch == 12 and len(result.history) == 18


def test_time_limit_is_checked_after_every_step(monkeypatch):
    import xfads_cli.train.loop as loop

    clock = {"t": 0.0}

    def fake_monotonic():
        clock["t"] += 1.0  # every call: one second
        return clock["t"]

    monkeypatch.setattr(loop.time, "monotonic", fake_monotonic)
    cfg = TrainConfig(max_epochs=1000, lr=0.1, patience=1000, time_limit_min=0.1)  # 6 s
    _, result = _toy(cfg)
    assert len(result.history) <= 2 and "time limit" in result.stopped


def test_forecast_draws_cut_trials_and_drop_their_backward_potentials():
    from xfads_cli.model.xfads import XFADS

    model = XFADS.one_session(ModelConfig(latent_dim=3, rank_local=2, rank_backward=1, samples=4, encoder_hidden=8,
                              dynamics_hidden=8), 5, torch.ones(5, dtype=torch.bool), 0.02)
    y = torch.zeros(40, 20, 5)
    noise0, keep0, back0, _, _ = trial_draws(model, y, list(range(40)), drop=0.2)
    noise, keep, back, _, _ = trial_draws(model, y, list(range(40)), drop=0.2, forecast=0.5)
    assert back0 is None and torch.equal(noise, noise0)  # the earlier draws do not change
    assert 5 < int((~back).sum()) < 35
    for i in range(40):
        if back[i]:
            assert torch.equal(keep[i], keep0[i])
        else:  # kept up to a cut in the middle three fifths, dropped from it to the end
            cut = int(keep[i].logical_not().nonzero()[0])  # first dropped bin at or before the cut
            assert not keep[i, 16:].any() and cut <= 15
            assert torch.equal(keep[i, :4], keep0[i, :4])
    assert trial_draws(model, y, [1], n_samples=7)[0].shape[3] == 7


def test_a_trial_without_backward_potentials_is_filtered_causally():
    from xfads_cli.model.xfads import XFADS

    torch.manual_seed(1)
    cfg = ModelConfig(latent_dim=3, rank_local=2, rank_backward=2, samples=5, encoder_hidden=8, dynamics_hidden=8)
    model = XFADS.one_session(cfg, 4, torch.ones(4, dtype=torch.bool), 0.02).double()
    torch.nn.init.normal_(model.backward.proj.weight, std=0.5)  # backward messages that matter
    y = torch.poisson(torch.full((3, 12, 4), 2.0)).double()
    noise = torch.randn(model.noise_shape(3, 12), dtype=torch.float64)
    mask = torch.tensor([True, False, True])
    smoothed = model.posterior(y, noise=noise, backward_mask=mask)
    filtered = model.posterior(y, mode="filter", noise=noise[..., : 5 + 3 + 2])
    full = model.posterior(y, noise=noise)
    torch.testing.assert_close(smoothed.mean[1], filtered.mean[1], rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(smoothed.mean[0], full.mean[0], rtol=1e-10, atol=1e-12)
    assert not torch.allclose(full.mean[1], filtered.mean[1])


def test_progress_keeps_the_best_so_far_across_a_resume(capsys):
    """A resumed fit's progress line goes on from the checkpoint's best, not from its first new epoch."""
    from xfads_cli.progress import EpochProgress

    p = EpochProgress(10)
    p.resume("valid_fp_bps", {"epoch": 3, "score": 0.25, "key": "valid_fp_bps"})
    p.update({"epoch": 6, "train_loss": 1.0, "valid_fp_bps": 0.2})
    assert "best 0.25 at epoch 3," in capsys.readouterr().err
    p.update({"epoch": 7, "train_loss": 1.0, "valid_fp_bps": 0.3})
    assert "best 0.3 at epoch 7," in capsys.readouterr().err
    fresh = EpochProgress(10)
    fresh.resume("valid_fp_bps", {"epoch": 3, "score": 0.25, "key": "valid_loss"})  # selected on another key
    fresh.update({"epoch": 6, "train_loss": 1.0, "valid_fp_bps": 0.2})
    assert "best 0.2 at epoch 6," in capsys.readouterr().err


def test_input_dropout_hides_entries_from_the_encoder_and_scores_only_them():
    """Coordinated dropout: the posterior does not depend on a hidden count, the likelihood's gradient
    comes from the hidden held-in entries (x 1/rate) and the held-out neurons, and the ELBO's value is
    that of the same posterior without the gradient mask."""
    from xfads_cli.model.encoders import InputDropout, scale_grad
    from xfads_cli.model.xfads import XFADS

    torch.manual_seed(2)
    cfg = ModelConfig(latent_dim=3, rank_local=2, rank_backward=1, samples=4, encoder_hidden=8, dynamics_hidden=8)
    heldin = torch.tensor([True, True, True, True, False])
    model = XFADS.one_session(cfg, 5, heldin, 0.02).double()
    y = torch.poisson(torch.full((2, 10, 5), 1.5)).double().requires_grad_(True)
    noise = torch.randn(model.noise_shape(2, 10), dtype=torch.float64)
    dropped = torch.rand(2, 10, 4) < 0.3
    drop = InputDropout(dropped, 0.3)
    post = model.posterior(y, noise=noise, input_dropout=drop)
    (g,) = torch.autograd.grad(post.mean.sum(), y)
    assert torch.all(g[..., :4][dropped] == 0) and torch.any(g[..., :4][~dropped] != 0)

    x = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    (gx,) = torch.autograd.grad(scale_grad(x.sin(), torch.tensor([0.0, 1.0, 2.0, 3.0])).sum(), x)
    torch.testing.assert_close(gx, x.cos().detach() * torch.tensor([0.0, 1.0, 2.0, 3.0]))
    terms = model.elbo(y.detach(), noise=noise, input_dropout=drop)
    same = model.elbo(y.detach(), noise=noise, input_dropout=drop)  # deterministic given the draws
    torch.testing.assert_close(terms.elbo, same.elbo)
    # value: the loglik of that posterior, unmasked
    likelihood = model.sessions[0].likelihood
    expect = likelihood.log_prob(model.eta(terms.posterior.samples), y.detach()).sum(-1).mean(0).sum(-1)
    torch.testing.assert_close(terms.loglik, expect)
    # gradient w.r.t. the readout bias: hidden held-in entries x 1/0.3, shown entries 0, held-out x 1
    model.zero_grad()
    terms.loglik.sum().backward()
    eta_s = model.eta(terms.posterior.samples.detach())
    w = torch.ones(2, 10, 5, dtype=torch.float64)
    w[..., :4] = dropped.double() / 0.3
    resid = (y.detach() - likelihood.mean(eta_s))  # d log p / d eta for Poisson-exp
    expect_bias = (resid * w).sum((1, 2)).mean(0)
    torch.testing.assert_close(model.sessions[0].readout.bias.grad, expect_bias)


def test_input_dropout_draws_are_per_trial_and_leave_the_other_draws_alone():
    from xfads_cli.model.xfads import XFADS

    model = XFADS.one_session(ModelConfig(latent_dim=3, rank_local=2, rank_backward=1, samples=4, encoder_hidden=8,
                              dynamics_hidden=8), 6, torch.tensor([True] * 5 + [False]), 0.02)
    y = torch.zeros(30, 40, 6)
    plain = trial_draws(model, y, list(range(30)), drop=0.2)
    draws = trial_draws(model, y, list(range(30)), drop=0.2, input_drop=0.3)
    assert plain.input_dropout is None
    assert torch.equal(plain.noise, draws.noise) and torch.equal(plain.local_mask, draws.local_mask)
    hidden = draws.input_dropout.dropped
    assert hidden.shape == (30, 40, 5) and abs(float(hidden.float().mean()) - 0.3) < 0.03
    again = trial_draws(model, y[[7, 3]], [7, 3], drop=0.2, input_drop=0.3).input_dropout.dropped
    assert torch.equal(again, hidden[[7, 3]])  # a trial's mask does not depend on its batch


def test_without_validation_trials_best_pt_follows_the_training_loss(tmp_path):
    """No validation trials: no score exists, so best.pt must not stay the first epoch's model."""
    import json
    from pathlib import Path

    from typer.testing import CliRunner

    from xfads_cli.cli import app

    data = Path(__file__).resolve().parents[1] / "data_fixtures" / "vdp_small.h5"
    res = CliRunner().invoke(app, ["fit", str(data), "--out", str(tmp_path / "run"), "--max-epochs", "3",
                                   "--set", "data.split=[0.8,0,0.2]", "--json"])
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout[res.stdout.index("{"):])
    assert summary["selected_on"] == "train_loss" and summary["best_epoch"] == 2
    res = CliRunner().invoke(app, ["fit", str(data), "--out", str(tmp_path / "run2"), "--max-epochs", "1",
                                   "--set", "data.split=[0.8,0,0.2]", "--set", "train.select=fp_bps"])
    assert res.exit_code == 2 and "validation share" in res.output
    assert not (tmp_path / "run2").exists()


def test_input_dropout_starts_with_the_epoch_after_its_step_count(monkeypatch):
    """Coordinated dropout is off for the epochs that start before train.input_dropout_from_step steps."""
    from xfads_cli.model.xfads import XFADS
    from xfads_cli.train import loop

    seen = []
    real = loop.trial_draws

    def spy(model, y, keys, drop=0.0, forecast=0.0, n_samples=None, input_drop=0.0, session=0):
        seen.append(input_drop)
        return real(model, y, keys, drop, forecast, n_samples, input_drop, session)

    monkeypatch.setattr(loop, "trial_draws", spy)
    torch.manual_seed(0)
    model = XFADS.one_session(ModelConfig(latent_dim=2, rank_local=1, rank_backward=1, samples=2, encoder_hidden=4,
                              dynamics_hidden=4), 3, torch.ones(3, dtype=torch.bool), 0.02)
    y = torch.poisson(torch.ones(12, 6, 3))
    cfg = TrainConfig(batch_size=4, max_epochs=4, input_dropout=0.25, input_dropout_from_step=5, warmup_steps=0)
    loop.train_model(model, y, None, cfg).run()
    assert seen == [0.0] * 6 + [0.25] * 6  # 3 steps per epoch: epochs 0-1 before step 5, 2-3 after
