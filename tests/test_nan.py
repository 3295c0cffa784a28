"""Non-finite losses and gradients: the step is skipped, the parameters rolled back to the start of the
epoch and the learning rate halved; after MAX_DIVERGENCES halvings the run stops with RunFailure (CLI
exit code 1), the last good checkpoint kept."""

import math

import pytest
import torch
from typer.testing import CliRunner

from xfads_cli.cli import app
from xfads_cli.config import TrainConfig
from xfads_cli.errors import RunFailure
from xfads_cli.train.loop import MAX_DIVERGENCES, Objective, run_epochs

CFG = TrainConfig(max_epochs=3, batch_size=2, lr=0.01, schedule="exponential", lr_decay=1.0, warmup_steps=0, patience=100)
STEPS = 4  # per epoch in the toy problem


def toy_fit(bad_steps, kind="loss", on_epoch=None, snapshots=None):
    """A linear model on 8 points, 4 steps per epoch; the loss of the steps in bad_steps (1-based,
    counted over the run) is made non-finite ("loss"), or finite with a NaN gradient ("grad"), or
    raises FloatingPointError as a failed Cholesky would ("raise")."""
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 1)
    x = torch.randn(8, 3)
    calls = {"n": 0}

    def batch_loss(b):
        calls["n"] += 1
        if snapshots is not None:
            snapshots.append(model.weight.detach().clone())
        loss = model(b).square().mean()
        if calls["n"] not in bad_steps:
            return loss
        if kind == "loss":
            return loss * math.nan
        if kind == "raise":
            raise FloatingPointError("low_rank_filter: non-finite matrix in Cholesky")
        w = model.weight  # d/dw sqrt(|w - w|) = 0 * inf = NaN at a finite loss value
        return loss + (w - w.detach()).abs().sqrt().sum()

    training = run_epochs(model, CFG, Objective(batches=lambda epoch: [x[i : i + 2] for i in range(0, 8, 2)],
                                                batch_loss=batch_loss, valid_loss=lambda: math.nan))
    for event in training:
        if on_epoch is not None:
            on_epoch(event.record, event.is_best, event.state)
    return model, training.result


@pytest.mark.parametrize("kind", ["loss", "grad", "raise"])
def test_a_non_finite_step_is_skipped_rolls_back_and_halves_the_lr(kind):
    snapshots = []
    model, result = toy_fit({6}, kind, snapshots=snapshots)
    assert [r["lr"] for r in result.history] == [0.01, 0.005, 0.005]
    # bad step 6 (the 2nd of epoch 1): no optimizer step, and the parameters go back to epoch 1's start
    assert not torch.equal(snapshots[5], snapshots[4])
    assert torch.equal(snapshots[6], snapshots[4])
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert all(math.isfinite(r["train_loss"]) for r in result.history)


def test_persistent_nan_stops_with_run_failure_after_bounded_halvings():
    saved = []

    def on_epoch(record, is_best, state):
        saved.append((record["epoch"], state()["divergences"]))

    bad = set(range(STEPS + 2, 100))  # from the 2nd step of epoch 1 on
    with pytest.raises(RunFailure, match="non-finite loss 4 times"):
        toy_fit(bad, "loss", on_epoch=on_epoch)
    # epoch 1 ended with 3 skipped steps (still finite, saved); the 4th failure came in epoch 2
    assert saved == [(0, 0), (1, MAX_DIVERGENCES)]


def test_rollback_recovers_from_parameters_whose_loss_stays_non_finite():
    """A loss that is NaN wherever |w| > 5 and a learning rate that jumps past it: skipping the step alone
    would keep w out there (every later step NaN, RunFailure); rolling back and halving the rate converges."""
    torch.manual_seed(0)
    w = torch.nn.Parameter(torch.zeros(1))
    model = torch.nn.Module()
    model.w = w
    visited = []

    def batch_loss(b):
        visited.append(float(w.detach()))
        loss = (w - 4.0).square().sum()
        return loss * math.nan if w.abs().max() > 5 else loss

    cfg = TrainConfig(max_epochs=30, batch_size=1, lr=3.0, schedule="exponential", lr_decay=1.0, warmup_steps=0, patience=100)
    result = run_epochs(model, cfg, Objective(batches=lambda epoch: [0, 1, 2], batch_loss=batch_loss,
                                              valid_loss=lambda: math.nan)).run()
    assert max(visited) > 5  # it did step into the non-finite region
    assert result.history[-1]["lr"] < 3.0
    assert abs(float(w) - 4.0) < 0.5 and all(math.isfinite(r["train_loss"]) for r in result.history)


@pytest.fixture(scope="module")
def recording(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "ring.h5"
    result = CliRunner().invoke(app, ["simulate", "ring", "--out", str(path), "--neurons", "5", "--trials", "10",
                                      "--bins", "10", "--seed", "1"])
    assert result.exit_code == 0, result.output
    return path


def test_cli_divergence_exits_1_and_keeps_the_last_good_checkpoint(recording, tmp_path, monkeypatch):
    from xfads_cli.model.xfads import XFADS

    original, calls = XFADS.elbo, {"n": 0}

    def elbo(self, y, *args, **kwargs):
        terms = original(self, y, *args, **kwargs)
        if self.training and torch.is_grad_enabled():  # training steps only, not validation
            calls["n"] += 1
            if calls["n"] > 3:  # epoch 0 (2 steps of 4 trials) and one step of epoch 1 are fine
                return terms._replace(elbo=terms.elbo * math.nan)
        return terms

    monkeypatch.setattr(XFADS, "elbo", elbo)
    out = tmp_path / "run"
    result = CliRunner().invoke(app, ["fit", str(recording), "--out", str(out), "--max-epochs", "5", "--quiet",
                                      "--set", "train.batch_size=4", "--set", "model.samples=2",
                                      "--set", "model.latent_dim=2", "--set", "model.encoder_hidden=8",
                                      "--set", "model.dynamics_hidden=8"])
    assert result.exit_code == 1, result.output
    assert "non-finite loss" in result.output and "last.pt keeps the last completed epoch" in result.output
    assert "Traceback" not in result.output
    last = torch.load(out / "last.pt", weights_only=True)
    best = torch.load(out / "best.pt", weights_only=True)
    assert last["epoch"] >= 0 and best["epoch"] <= last["epoch"]
    for ckpt in (last, best):
        assert all(torch.isfinite(v).all() for v in ckpt["model"].values() if v.is_floating_point())
    assert not (out / "summary.json").exists()


def test_warmup_scales_the_first_steps():
    from xfads_cli.train.schedule import warmup_factor

    assert [warmup_factor(k, 4) for k in range(6)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    assert warmup_factor(0, 0) == 1.0
