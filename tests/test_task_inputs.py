"""Known task inputs (docs/model.md section 11): the feature basis, the drive in the filter against a
Kalman filter with inputs, the input readout's fit, and a model with inputs end to end."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests import reference as ref
from tests.test_filtering import LGSSM
from xfads_cli.config import ModelConfig
from xfads_cli.model import filtering as F
from xfads_cli.model.task_inputs import InputSpec, task_features
from xfads_cli.model.task_inputs import choose_inputs as _choose
from xfads_cli.scoring import psth_gain_bps
from xfads_cli.model.xfads import XFADS

f64 = torch.float64


def spec(**kw) -> InputSpec:
    base = dict(clock_bins=20, n_clock=5, conditions=("a", "b"), events=("go",), event_bins=10, n_event=4)
    return InputSpec(**(base | kw))


def test_features_layout_and_round_trip():
    s = spec()
    u = task_features(s, 20, 3, np.array(["a", "b", "zz"]), {"go": np.array([5.0, np.nan, 12.5])})
    assert u.shape == (3, 20, s.dim) and s.dim == 5 * 3 + 4
    clock = u[..., :5]
    assert np.allclose(clock[0], clock[1]) and clock[0, 0, 0] == pytest.approx(1.0)
    cond = u[..., 5:15].reshape(3, 20, 2, 5)
    assert np.allclose(cond[0, :, 0], clock[0]) and np.allclose(cond[0, :, 1], 0)  # 'a' -> first block
    assert np.allclose(cond[1, :, 1], clock[1]) and np.allclose(cond[2], 0)  # unseen label: no term
    events = u[..., 15:]
    assert np.allclose(events[0, :5], 0) and events[0, 5, 0] == pytest.approx(1.0)  # nothing before the event
    assert np.allclose(events[1], 0)  # no event in that trial
    assert InputSpec.from_dict(s.to_dict()) == s


def test_future_events_are_unknown_when_forecasting():
    s = spec()
    events = {"go": np.array([5.0, 12.0])}
    u = task_features(s, 20, 2, np.array(["a", "a"]), events, known_until=10)
    full = task_features(s, 20, 2, np.array(["a", "a"]), events)
    np.testing.assert_array_equal(u[0], full[0])  # the event at bin 5 has happened by bin 10
    assert np.allclose(u[1, :, 15:], 0) and not np.allclose(full[1, :, 15:], 0)  # bin 12: not yet
    np.testing.assert_array_equal(u[..., :15], full[..., :15])  # clock and condition are always known


def test_filter_drive_equals_kalman_filter_with_inputs():
    m = LGSSM()
    g = torch.Generator().manual_seed(3)
    drive = torch.randn(m.T, m.L, generator=g, dtype=f64)
    kf = ref.kalman_filter(m.A, m.Q, m.C, m.d, m.R, m.m0, torch.diag(m.q0), m.y, drive=drive)
    k, K = m.alpha()
    for mode in ("filter", "two_filter"):
        post = F.low_rank_filter(m.dynamics, m.m0, m.q0, m.q, k, K, n_samples=2 * m.L, mode=mode,
                                 sampler="cubature", drive=drive[None])
        mean = post.mean[0] if mode == "filter" else post.filtered_mean[0]
        torch.testing.assert_close(mean, kf.mean, rtol=0, atol=1e-8)
    undriven = F.low_rank_filter(m.dynamics, m.m0, m.q0, m.q, k, K, n_samples=2 * m.L, mode="filter",
                                 sampler="cubature")
    assert (undriven.mean[0] - kf.mean).abs().max() > 0.1  # the drive matters


class _Data:
    """The parts of SpikeData choose_inputs reads."""

    def __init__(self, conditions, n_time=30, chopped=False, locked=True):
        self.conditions = None if conditions is None else np.asarray(conditions)
        self.events, self.n_time, self.bin_ms = {}, n_time, 20.0
        self.provenance = {"trials_from": "chopped" if chopped else "trials"}
        # 40 trials of 5 neurons: a response peak at bin 10 (locked) or a flat rate
        rng = np.random.default_rng(0)
        bump = 3.0 * np.exp(-0.5 * ((np.arange(n_time) - 10) / 2.0) ** 2) if locked else np.zeros(n_time)
        self.counts = rng.poisson(0.5 * np.exp(bump)[None, :, None], size=(40, n_time, 5)).astype(np.float32)
        self.split = np.array(["train"] * 40)
        if self.conditions is not None:
            self.conditions = np.resize(self.conditions, 40)

    def subset(self, split):
        return self


def choose_inputs(requested, data):
    return _choose(requested, data, psth_gain_bps(data.counts, data.split == "train", data.conditions))


def test_auto_inputs_follow_the_recording():
    s = choose_inputs(("auto",), _Data(["x", "y", "x", "y"]))
    assert s.conditions == ("x", "y") and s.n_clock >= 2 and "condition (2 labels)" in s.names()
    s = choose_inputs(("auto",), _Data(None))
    assert s.conditions == () and s.n_clock >= 2
    assert choose_inputs(("auto",), _Data(None, chopped=True)) is None
    assert choose_inputs((), _Data(["x", "y"])) is None
    # no trial-locked structure: the trial average predicts held-out trials no better than the mean rate
    assert choose_inputs(("auto",), _Data(None, locked=False)) is None
    assert choose_inputs(("clock",), _Data(None, locked=False)).n_clock >= 2  # asked for by name: kept


def _task_counts(seed=0, trials=60, T=30, N=6):
    """Poisson counts whose log-rate is a condition-specific bump in time plus a per-trial latent offset."""
    rng = np.random.default_rng(seed)
    cond = np.array(["a", "b"])[np.arange(trials) % 2]
    t = np.arange(T)
    profile = {c: 1.5 * np.exp(-0.5 * ((t - centre) / 3.0) ** 2) for c, centre in (("a", 8), ("b", 20))}
    w = rng.normal(size=N)
    log_rate = np.stack([profile[c] for c in cond])[..., None] * (0.5 + np.abs(w)) - 0.5
    log_rate = log_rate + 0.3 * rng.normal(size=(trials, 1, 1)) * w
    return rng.poisson(np.exp(log_rate)).astype(np.float32), cond, log_rate


def _model(inputs, N=6):
    torch.manual_seed(0)
    cfg = ModelConfig(latent_dim=3, rank_local=2, rank_backward=1, dynamics_hidden=16, encoder_hidden=16, samples=4)
    return XFADS.one_session(cfg, N, torch.ones(N, dtype=torch.bool), 0.02, inputs).double()


def test_input_readout_fit_recovers_the_condition_average():
    counts, cond, log_rate = _task_counts(trials=200)
    s = InputSpec(clock_bins=30, n_clock=16, conditions=("a", "b"))
    model = _model(s)
    u = torch.as_tensor(task_features(s, 30, len(cond), cond))
    y = torch.as_tensor(counts, dtype=f64)
    model.init_from_data(y, 0, u)
    s0 = model.sessions[0]
    fitted = (s0.offset(u[:2]) + s0.readout.bias).detach().numpy()  # one trial of each condition
    truth = np.stack([log_rate[cond == c].mean(0) for c in ("a", "b")])
    empirical = np.log(np.stack([counts[cond == c].mean(0) for c in ("a", "b")]) + 1e-3)
    r_fit, r_emp = (np.corrcoef(x.ravel(), truth.ravel())[0, 1] for x in (fitted, empirical))
    assert r_fit > 0.95 and r_fit > r_emp  # smooth bumps average the noise of single bins away
    # and a model without inputs cannot tell the conditions apart: its bias is one number per neuron
    plain = _model(None)
    plain.init_from_data(y, 0)
    assert plain.sessions[0].offset(u) == 0.0


def test_model_with_inputs_trains_and_forecasts_with_them():
    counts, cond, _ = _task_counts(trials=16)
    s = InputSpec(clock_bins=30, n_clock=8, conditions=("a", "b"))
    model = _model(s)
    y = torch.as_tensor(counts, dtype=f64)
    u = torch.as_tensor(task_features(s, 30, len(cond), cond), dtype=f64)
    model.init_from_data(y, 0, u)
    loss = model.batch_loss(y, 0, u=u, share=1.0)
    loss.backward()
    assert torch.isfinite(loss)
    s0 = model.sessions[0]
    assert s0.input_drive.weight.grad.abs().sum() > 0 and s0.input_readout.weight.grad.abs().sum() > 0
    with torch.no_grad():
        s0.input_drive.weight.normal_()
    gen = lambda: torch.Generator().manual_seed(1)  # noqa: E731
    with_u = model.forecast(y[:, :10], 20, n_samples=5, generator=gen(), u=u).rates
    swapped = model.forecast(y[:, :10], 20, n_samples=5, generator=gen(), u=u.flip(0)).rates
    assert with_u.shape == (5, 16, 20, 6)
    assert not torch.allclose(with_u, swapped)  # the horizon's inputs change the forecast


# ----------------------------------------------------------------------------------------------
# through the CLI: simulate task -> fit -> forecast

FAST = ["--set", "model.samples=4", "--set", "model.latent_dim=3", "--set", "model.dynamics_hidden=16",
        "--set", "model.encoder_hidden=16", "--threads", "1"]


def _invoke(*args):
    from typer.testing import CliRunner

    from xfads_cli.cli import app

    result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result


@pytest.fixture(scope="module")
def task_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("task") / "task.nwb"
    _invoke("simulate", "task", "--out", path, "--neurons", 12, "--trials", 40, "--bins", 40, "--seed", 5)
    return path


def test_fit_uses_clock_condition_and_events_and_forecast_says_what_it_knew(task_file, tmp_path):
    import json

    import h5py

    run = tmp_path / "run"
    _invoke("fit", task_file, "--out", run, "--max-epochs", 2, "--quiet", "--set", "data.inputs=[auto,events]", *FAST)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["task_inputs"].startswith("task inputs: clock, condition (4 labels), event go_time, event stimulus_time")
    assert any("@go_time-2" in k for k in summary["metrics"])  # the grid has a window before each event
    assert any("forecast grid:" in v for v in summary["verdicts"])
    out = tmp_path / "fc.h5"
    res = _invoke("forecast", run, task_file, "--context", 12, "--horizon", 20, "--out", out, "--json", "--quiet")
    fc = json.loads(res.stdout)
    assert "clock, condition (4 labels)" in fc["future_inputs"] and "once they occurred" in fc["future_inputs"]
    with h5py.File(out) as f:
        assert f.attrs["future_inputs"] == fc["future_inputs"]
        assert np.isfinite(f["rates_mean"][()]).all()


def test_inputs_off_gives_the_autonomous_model(task_file, tmp_path):
    import json

    run = tmp_path / "run"
    _invoke("fit", task_file, "--out", run, "--max-epochs", 1, "--quiet", "--set", "data.inputs=[]", *FAST)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["task_inputs"].startswith("task inputs: none")
    state = torch.load(run / "best.pt", weights_only=True)["model"]
    assert not any(k.startswith("input_") for k in state)


def test_unknown_input_is_a_one_line_error(task_file, tmp_path):
    from typer.testing import CliRunner

    from xfads_cli.cli import app

    result = CliRunner().invoke(app, ["fit", str(task_file), "--out", str(tmp_path / "r"), "--max-epochs", "1",
                                      "--set", "data.inputs=[clok]"])
    assert result.exit_code == 2 and "did you mean" in result.output and "clock" in result.output
    assert not (tmp_path / "r").exists()
