"""Multi-session fit, embed and adapt through the CLI (meta-dynamical model, docs/model.md section 6)."""

import json

import h5py
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from xfads_cli.cli import app

runner = CliRunner()
FAST = ["--set", "model.samples=4", "--set", "model.latent_dim=2", "--set", "model.dynamics_hidden=16",
        "--set", "model.encoder_hidden=16", "--set", "model.read_in_dim=8", "--set", "train.batch_size=8"]


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def sessions(tmp_path_factory):
    folder = tmp_path_factory.mktemp("sessions")
    for i, mu in enumerate((-0.5, 0.5, 1.5)):
        result = invoke("simulate", "hopf", "--out", folder / f"hopf{i}.nwb", "--neurons", 6 + 2 * i, "--trials", 12,
                        "--bins", 20, "--param", mu, "--seed", i)
        assert result.exit_code == 0, result.output
    new = tmp_path_factory.mktemp("new") / "hopf_new.nwb"
    assert invoke("simulate", "hopf", "--out", new, "--neurons", 7, "--trials", 12, "--bins", 20, "--param", 1.0,
                  "--seed", 7).exit_code == 0
    return folder, new


@pytest.fixture(scope="module")
def meta_run(sessions, tmp_path_factory):
    folder, _ = sessions
    out = tmp_path_factory.mktemp("runs") / "meta"
    result = invoke("fit", folder, "--out", out, "--max-epochs", 2, "--quiet", "--json", *FAST)
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["kind"] == "meta" and len(summary["data"]) == 3
    # the check of the training sessions' embeddings (2 epochs: nothing organised, so both warnings)
    check = summary["embedding"]
    assert check["separation"] >= 0 and check["dynamics_effect"] >= 0 and check["dynamics_effect_horizon_bins"] == 5
    assert check["warnings"] and all(w in summary["notes"] for w in check["warnings"])
    return out


def test_fit_keeps_each_sessions_fitted_embedding_in_the_best_model(meta_run, sessions):
    best = torch.load(meta_run / "best.pt", weights_only=True)
    fitted = torch.stack([best["model"][f"sessions.{i}.fitted_embedding"] for i in range(3)])  # [session, 2, embed]
    assert bool((fitted[:, 1] > 0).all())  # known: a positive variance
    # last.pt's own parameters are what a resumed run continues from; its copy of the best ones has them
    last = torch.load(meta_run / "last.pt", weights_only=True)
    assert torch.equal(last["best_model"]["sessions.0.fitted_embedding"], fitted[0])
    # and they are q(e_i) pooled over the training trials, as the model computes it
    from pathlib import Path

    from xfads_cli.runs import as_tensor, load_data_for_run, load_run

    run = load_run(Path(meta_run), "cpu")
    data = load_data_for_run(sorted(sessions[0].glob("*.nwb"))[0], run)
    _, _, mu, var = run.model.session_embedding(as_tensor(data.subset("train").counts, run), 0)
    assert torch.allclose(fitted[0, 0], mu, atol=1e-6) and torch.allclose(fitted[0, 1], var, atol=1e-6)
    # the signatures of its training counts at each shot count, where adapt places a new session from
    from xfads_cli.model.embedding_init import signature_ladder

    ladder = best["model"]["sessions.0.signature_ladder"].double().numpy()
    assert np.allclose(ladder, signature_ladder(data.subset("train").counts), atol=1e-5)


def test_embed_writes_sessions_and_trials(meta_run, sessions, tmp_path):
    folder, _ = sessions
    out = tmp_path / "embed.h5"
    files = sorted(folder.glob("*.nwb"))
    result = invoke("embed", meta_run, *files, "--out", out, "--json", "--quiet")
    assert result.exit_code == 0, result.output
    with h5py.File(out, "r") as f:
        assert f["embed_mean"].shape == (3, 2) and f["embed_var"].shape == (3, 2)
        assert (f["embed_var"][()] > 0).all()
        assert f["trial_embed_mean"].shape == (36, 2)
        assert list(f["param_mu"][()]) == [-0.5, 0.5, 1.5]
    metrics = json.loads(result.stdout)["metrics"]
    assert "rank_correlation" in metrics and metrics["separation"] >= 0 and metrics["dynamics_effect"] >= 0


def test_adapt_trains_only_the_new_session(meta_run, sessions, tmp_path):
    _, new = sessions
    out = tmp_path / "adapted"
    result = invoke("adapt", meta_run, new, "--trials", 4, "--out", out, "--max-epochs", 2, "--quiet")
    assert result.exit_code == 0, result.output
    old = torch.load(meta_run / "best.pt", weights_only=True)
    adapted = torch.load(out / "last.pt", weights_only=True)
    for key, value in old["model"].items():
        assert torch.equal(value, adapted["model"][key]), key  # shared and old-session parameters untouched
    new_keys = [k for k in adapted["model"] if k not in old["model"]]
    assert new_keys and all(k.startswith("sessions.3.") for k in new_keys)
    assert adapted["spec"]["sessions"][-1]["embed_trial_ids"] and len(adapted["spec"]["sessions"]) == 4
    # the embedding mean is a parameter of the new session, fitted from where its shots' signature
    # places it among the training sessions
    assert adapted["spec"]["sessions"][-1]["refine_embedding"] is True
    from pathlib import Path

    from xfads_cli.data.load import load_data
    from xfads_cli.runs import as_tensor, load_run

    run = load_run(Path(meta_run), "cpu")
    shots = load_data(new, run.config.data).subset("train").select(np.arange(4))
    start = run.model.signature_start(as_tensor(shots.counts, run))
    summary = json.loads((out / "summary.json").read_text())
    assert summary["embedding_search"]["start"] == pytest.approx(start.tolist(), abs=1e-6)
    assert not adapted["model"]["sessions.3.embedding_offset"].any()  # no offset: placed by its own mean
    from xfads_cli.train.embedding_search import training_manifold

    # placed among the training sessions: on a segment between two of them
    fitted = torch.stack([old["model"][f"sessions.{i}.fitted_embedding"][0] for i in range(3)])
    among = training_manifold(fitted)
    assert bool((among - adapted["model"]["sessions.3.embedding"]).abs().sum(-1).min() < 1e-5)
    assert summary["shared_parameters_unchanged"] is True
    best = torch.load(out / "best.pt", weights_only=True)
    assert summary["embedding_mean"] == pytest.approx(best["model"]["sessions.3.embedding"].tolist(), abs=1e-6)
    # the forecast search ran and both checkpoints hold its choice
    assert summary["embedding_search"]["candidates"] > 20
    assert torch.equal(adapted["model"]["sessions.3.embedding"], best["model"]["sessions.3.embedding"])
    fc = invoke("forecast", out, new, "--out", tmp_path / "f.h5", "--context", 12, "--horizon", 8, "--quiet")
    assert fc.exit_code == 0, fc.output
    sm = invoke("smooth", out, new, "--out", tmp_path / "s.h5", "--quiet")
    assert sm.exit_code == 0, sm.output


def test_shared_parameters_unchanged_compares_values():
    from xfads_cli.commands.adapt import same_values

    params = [torch.nn.Parameter(torch.randn(3)), torch.nn.Parameter(torch.zeros(2, 2))]
    before = [p.detach().clone() for p in params]
    assert same_values(before, params)
    with torch.no_grad():
        params[1][0, 1] += 1e-6
    assert not same_values(before, params)
    assert not same_values(before[:1], params)  # a parameter more or less is a change too


def test_adapt_refuses_to_move_shared_parameters(meta_run, sessions, tmp_path, monkeypatch):
    """A bug that trained a shared parameter during adapt ends the command instead of writing a run
    whose summary says shared_parameters_unchanged."""
    import xfads_cli.train.loop as loop
    from xfads_cli.commands.adapt import adapt

    real_fit = loop.train_model

    class LeakyTraining:
        """The Training of fit, moving a shared parameter once it has run."""

        def __init__(self, model, training):
            self.model, self.training = model, training

        def __iter__(self):
            yield from self.training
            with torch.no_grad():
                next(self.model.shared_parameters()).add_(0.1)

        @property
        def result(self):
            return self.training.result

    def leaky_fit(model, *args, **kwargs):
        return LeakyTraining(model, real_fit(model, *args, **kwargs))

    monkeypatch.setattr(loop, "train_model", leaky_fit)
    _, new = sessions
    with pytest.raises(RuntimeError, match="adapt changed shared parameters"):
        adapt(meta_run, new, tmp_path / "leaky", trials=2, max_epochs=1, refine_embedding=False, device="cpu")
    assert not (tmp_path / "leaky" / "summary.json").exists()


def test_meta_failure_paths(meta_run, sessions, tmp_path):
    folder, new = sessions
    too_many = invoke("adapt", meta_run, new, "--trials", 50, "--out", tmp_path / "a")
    assert too_many.exit_code == 2 and "lower --trials" in too_many.output
    unknown = invoke("smooth", meta_run, new, "--out", tmp_path / "s.h5")
    assert unknown.exit_code == 2 and "xfads adapt" in unknown.output
    single = tmp_path / "single"
    assert invoke("fit", folder / "hopf0.nwb", "--out", single, "--max-epochs", 1, "--quiet", *FAST).exit_code == 0
    not_meta = invoke("adapt", single, new, "--trials", 2, "--out", tmp_path / "b")
    assert not_meta.exit_code == 2 and "meta" in not_meta.output
    # the adapted session changes its neuron count: the run refuses it
    out = tmp_path / "adapted"
    assert invoke("adapt", meta_run, new, "--trials", 2, "--out", out, "--max-epochs", 1, "--quiet").exit_code == 0
    changed = tmp_path / "hopf_new.nwb"
    assert invoke("simulate", "hopf", "--out", changed, "--neurons", 9, "--trials", 12, "--bins", 20).exit_code == 0
    mismatch = invoke("forecast", out, changed, "--out", tmp_path / "f.h5", "--context", 10, "--horizon", 5)
    assert mismatch.exit_code == 2 and "neurons" in mismatch.output
    assert not (tmp_path / "f.h5").exists() and not (tmp_path / "a").exists()


def test_adapt_with_the_encoder_embedding_has_no_embedding_parameter(meta_run, sessions, tmp_path):
    _, new = sessions
    out = tmp_path / "adapted_enc"
    result = invoke("adapt", meta_run, new, "--trials", 3, "--out", out, "--max-epochs", 1, "--quiet",
                    "--encoder-embedding")
    assert result.exit_code == 0, result.output
    adapted = torch.load(out / "last.pt", weights_only=True)
    assert "sessions.3.embedding" not in adapted["model"]
    assert "refine_embedding" not in adapted["spec"]["sessions"][-1]


def test_meta_runs_from_before_hyper_hidden_still_load(sessions, tmp_path):
    """Their config has no model.hyper_hidden and their hypernetwork was an MLP of encoder_hidden units."""
    from xfads_cli.runs import load_run

    folder, _ = sessions
    out = tmp_path / "old"
    result = invoke("fit", folder, "--out", out, "--max-epochs", 1, "--quiet", *FAST, "--set", "model.hyper_hidden=16")
    assert result.exit_code == 0, result.output
    ckpt = torch.load(out / "best.pt", weights_only=True)
    del ckpt["config"]["model"]["hyper_hidden"]
    torch.save(ckpt, out / "best.pt")
    run = load_run(out)
    assert len(run.model.dynamics.hyper) == 3 and run.config.model.hyper_hidden == 16


def test_embed_plot_draws_the_embeddings_and_the_flow_field(meta_run, sessions, tmp_path):
    pytest.importorskip("matplotlib")
    folder, _ = sessions
    out = tmp_path / "embed.h5"
    result = invoke("embed", meta_run, *sorted(folder.glob("*.nwb")), "--out", out, "--plot", "--json", "--quiet")
    assert result.exit_code == 0, result.output
    plots = json.loads(result.stdout)["plots"]
    assert plots == [str(out.with_suffix(".embedding.png")), str(out.with_suffix(".flow.png"))]
    assert all((tmp_path / p).stat().st_size > 1000 for p in plots)
