"""`xfads stream` (issue 26): decoding bin by bin gives the offline causal filter's posterior (same draws,
float64), bad and missing bins are handled as documented, and the command ends cleanly on SIGTERM;
with pylsl installed, a real LSL outlet -> xfads stream -> inlet round trip."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from xfads_cli.cli import app
from xfads_cli.config import ModelConfig
from xfads_cli.model.meta import MetaXFADS
from xfads_cli.model.streaming import sequence_noise
from xfads_cli.model.xfads import XFADS
from xfads_cli.runs.decoder import CausalDecoder

CHECKPOINTS = Path(__file__).resolve().parent / "fixtures" / "regression"
FIXTURES = Path(__file__).resolve().parents[1] / "data_fixtures"
CFG = ModelConfig(latent_dim=3, rank_local=2, rank_backward=2, samples=6, encoder_hidden=8, dynamics_hidden=8)


def counts(time: int, n: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    y = torch.poisson(torch.full((1, time, n), 0.8), generator=g).double()
    y[0, 4] = float("nan")  # a whole bin missing
    y[0, 9, 1] = float("nan")  # one unit's count missing
    return y


def assert_bin_by_bin_is_the_offline_filter(session, y: torch.Tensor, horizon: int = 0) -> None:
    T, S = y.shape[1], CFG.samples
    noise = sequence_noise(session, 1, T, mode="filter", n_samples=S, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        whole = session.posterior(y, mode="filter", n_samples=S, noise=noise)
        rates = session.rates(whole.samples).mean(0)[0]  # [time, neuron]
    decoder = CausalDecoder(session, n_samples=S, horizon=horizon, generator=torch.Generator().manual_seed(0))
    for t in range(T):
        out = decoder.step(y[0, t].numpy(), noise=noise[t : t + 1])
        np.testing.assert_allclose(out.latent_mean, whole.mean[0, t].numpy(), rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(out.latent_var, whole.var[0, t].numpy(), rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(out.rates, rates[t].numpy(), rtol=1e-10, atol=1e-12)
        if horizon:
            assert out.forecast.shape == (horizon, y.shape[2]) and np.isfinite(out.forecast).all()


def test_bin_by_bin_decoding_equals_the_offline_causal_filter():
    torch.manual_seed(0)
    model = XFADS.one_session(CFG, 4, torch.tensor([True, True, True, False]), 0.02).double().eval()
    assert_bin_by_bin_is_the_offline_filter(model.session(0), counts(20, 4), horizon=3)


def test_bin_by_bin_decoding_of_a_meta_session_equals_its_offline_causal_filter():
    torch.manual_seed(0)
    cfg = replace(CFG, kind="meta", embed_dim=2, read_in_dim=4)
    meta = MetaXFADS(cfg, [{"name": "a", "n_neurons": 5, "dt": 0.02}, {"name": "b", "n_neurons": 4, "dt": 0.02}])
    meta = meta.double().eval()
    y = counts(15, 4)
    assert_bin_by_bin_is_the_offline_filter(meta.session(1, lambda: y), y)


def test_stream_forecasts_are_capped_as_offline_forecasts():
    torch.manual_seed(0)
    model = XFADS.one_session(CFG, 4, torch.ones(4, dtype=torch.bool), 0.02).double().eval()
    model.sessions[0].rate_ceiling.fill_(1e-3)
    decoder = CausalDecoder(model.session(0), n_samples=CFG.samples, horizon=4, generator=torch.Generator())
    out = decoder.step(np.ones(4))
    assert out.forecast.max() <= 1e-3 and out.rates.max() > 1e-3  # the cap is the forecast's only


def invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def n_units(checkpoint: Path) -> int:
    result = invoke("stream", checkpoint, "--describe", "--json")
    return json.loads(result.stdout)["sessions"][0]["n_units"]


def test_stream_decodes_every_line_and_reports_bad_and_missing_bins(tmp_path):
    n = n_units(CHECKPOINTS / "single_best.pt")
    good = [1, 0, 2] * (n // 3) + [0] * (n % 3)
    lines = [json.dumps({"counts": good, "t": 0.5}),
             json.dumps({"counts": [None] + good[1:]}),
             "",
             "not json",
             '{"counts": [1, 2]}',
             json.dumps({"counts": [0] * n})]
    source = tmp_path / "in.ndjson"
    source.write_text("\n".join(lines) + "\n")
    out, stats = tmp_path / "out.ndjson", tmp_path / "stats.json"
    result = invoke("stream", CHECKPOINTS / "single_best.pt", "--input", source, "--output", out, "--stats", stats,
                    "--horizon", 2, "--samples", 4)
    assert result.exit_code == 0, result.output
    decoded = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(decoded) == 5  # one line per non-blank input line, bad ones included
    assert decoded[0]["t"] == 0.5 and decoded[1]["t"] == pytest.approx(0.02)  # its own t, else the bin's start
    for line in decoded:
        assert len(line["latent_mean"]) == len(line["latent_var"]) == 3 and len(line["rates"]) == n
        assert np.array(line["forecast"]).shape == (2, n)
        assert all(np.isfinite(line["rates"])) and all(v > 0 for v in line["latent_var"])
    summary = json.loads(stats.read_text())
    assert (summary["bins"], summary["missing"], summary["errors"]) == (5, 3, 2)
    assert summary["checkpoint_sha256"] and summary["seed"] is not None and "torch" in summary["versions"]
    assert summary["latency_ms"]["p50"] > 0 and summary["latency_ms"]["max"] >= summary["latency_ms"]["p99"]
    assert "bin 2: not a JSON line" in result.stderr and f"bin 3: counts must be a list of {n}" in result.stderr


def test_describe_lists_the_units_in_input_order():
    result = invoke("stream", CHECKPOINTS / "meta_best.pt", "--describe", "--json")
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)
    assert [s["name"] for s in info["sessions"]] == ["vdp_small", "duffing_small"]
    assert info["sessions"][0]["n_units"] == len(info["sessions"][0]["units"]) and info["bin_ms"] > 0


def test_a_meta_run_needs_a_session_and_its_recording(tmp_path):
    source = tmp_path / "in.ndjson"
    result = invoke("stream", CHECKPOINTS / "meta_best.pt", "--input", source)
    assert result.exit_code == 2 and "no such file" in result.stderr
    source.write_text("")
    result = invoke("stream", CHECKPOINTS / "meta_best.pt", "--input", source)
    assert result.exit_code == 2 and "choose one with --session" in result.stderr
    result = invoke("stream", CHECKPOINTS / "meta_best.pt", "--input", source, "--session", "vdp_small")
    assert result.exit_code == 2 and "--data FILE" in result.stderr
    result = invoke("stream", CHECKPOINTS / "meta_best.pt", "--input", source, "--session", "vdp_small",
                    "--data", FIXTURES / "vdp_small.h5", "--output", tmp_path / "o.ndjson")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "o.ndjson").read_text() == ""


def test_a_named_pipe_is_an_input(tmp_path):
    n = n_units(CHECKPOINTS / "single_best.pt")
    fifo, out = tmp_path / "bins.fifo", tmp_path / "out.ndjson"
    os.mkfifo(fifo)
    proc = _xfads("stream", CHECKPOINTS / "single_best.pt", "--input", fifo, "--output", out,
                  stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        with open(fifo, "w") as pipe:  # opens once the stream has opened its end
            for _ in range(4):
                pipe.write(json.dumps({"counts": [1] * n}) + "\n")
        _, err = proc.communicate(timeout=60)  # the writer closed: the input ended
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    assert len(out.read_text().splitlines()) == 4


def _xfads(*args, **kwargs) -> subprocess.Popen:
    code = "import sys; from xfads_cli.cli import main; sys.argv = ['xfads'] + sys.argv[1:]; main()"
    return subprocess.Popen([sys.executable, "-c", code, *map(str, args)], env=dict(os.environ, XFADS_THREADS="1"),
                            text=True, **kwargs)


def test_sigterm_ends_the_stream_cleanly_with_its_stats(tmp_path):
    stats, n = tmp_path / "stats.json", n_units(CHECKPOINTS / "single_best.pt")
    proc = _xfads("stream", CHECKPOINTS / "single_best.pt", "--stats", stats, stdin=subprocess.PIPE,
                  stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        for _ in range(3):
            proc.stdin.write(json.dumps({"counts": [1] * n}) + "\n")
            proc.stdin.flush()
            assert json.loads(proc.stdout.readline())["rates"]  # decoded before the next bin is sent
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    assert json.loads(stats.read_text())["bins"] == 3 and "terminated (SIGTERM)" in err


def test_lsl_round_trip(tmp_path):
    pylsl = pytest.importorskip("pylsl")
    name, n = f"xfads-test-{uuid.uuid4().hex[:8]}", n_units(CHECKPOINTS / "single_best.pt")
    info = pylsl.StreamInfo(name, "counts", n, pylsl.IRREGULAR_RATE, pylsl.cf_float32, name)
    outlet = pylsl.StreamOutlet(info)
    stats = tmp_path / "stats.json"
    proc = _xfads("stream", CHECKPOINTS / "single_best.pt", "--input", f"lsl:{name}", "--output", f"lsl:{name}-out",
                  "--horizon", 2, "--stats", stats, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        found = pylsl.resolve_byprop("name", f"{name}-out", minimum=1, timeout=30)
        assert found, "xfads stream opened no outlet"
        inlet = pylsl.StreamInlet(found[0])
        inlet.open_stream(timeout=10)
        sample = ([1.0, 0.0] * n)[: n - 1] + [float("nan")]  # the last unit missing
        received, deadline = [], time.time() + 30
        while len(received) < 5 and time.time() < deadline:  # the stream's inlet connects at its own pace
            outlet.push_sample(sample)
            decoded, _ = inlet.pull_sample(timeout=0.05)
            if decoded is not None:
                received.append(decoded)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert len(received) >= 5, err
    assert all(len(s) == 3 + 3 + n + 2 * n and np.isfinite(s).all() for s in received)
    assert proc.returncode == 0, err
    assert json.loads(stats.read_text())["bins"] >= 5
