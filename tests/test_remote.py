"""Remote recordings (issue 16 part 3): DATA as an http(s) URL, read lazily through range requests from a
real HTTP server on 127.0.0.1 (tests/range_server.py), cached per URL and ETag.

s3:// and dandi:// need the network: only their parsing, and the error without the DANDI client, are
tested here (s3:// is read from its bucket's https:// endpoint by the same code as any https:// URL).
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from conftest import FIXTURES
from range_server import RangeServer
from xfads_cli.cli import app
from xfads_cli.data.load import load_data
from xfads_cli.data.source import RemoteSource, parse_source
from xfads_cli.errors import UsageError

pytest.importorskip("remfile")
runner = CliRunner()
TINY = ["--set", "model.latent_dim=2", "--set", "model.dynamics_hidden=8", "--set", "model.encoder_hidden=8",
        "--threads", "1"]


@pytest.fixture
def server(tmp_path, monkeypatch):
    """The fixtures served over HTTP, the cache in a fresh folder."""
    served = tmp_path / "served"
    served.mkdir()
    for name in ("lorenz_small.nwb", "vdp_small.h5", "mc_maze_2trials.nwb"):
        shutil.copy(FIXTURES / name, served / name)
    monkeypatch.setenv("XFADS_CACHE", str(tmp_path / "cache"))
    with RangeServer(served) as srv:
        yield srv


def _same(a, b) -> None:
    assert np.array_equal(a.counts, b.counts, equal_nan=True)
    assert list(a.unit_ids) == list(b.unit_ids) and list(a.trial_ids) == list(b.trial_ids)
    assert list(a.split) == list(b.split) and a.session == b.session and a.bin_ms == b.bin_ms


@pytest.mark.parametrize("name", ["lorenz_small.nwb", "vdp_small.h5"])
def test_url_loads_as_the_local_file(server, name):
    remote = load_data(server.url(name))
    _same(remote, load_data(server.directory / name))
    assert remote.provenance["path"] == remote.provenance["url"] == server.url(name)
    assert "sha256" not in remote.provenance  # a remote file is not hashed: its ETag and size instead
    assert remote.provenance["etag"] and remote.provenance["size_bytes"] == (server.directory / name).stat().st_size


@pytest.mark.parametrize("name", ["lorenz_small.nwb", "vdp_small.h5"])
def test_inspect_a_url(server, name):
    result = runner.invoke(app, ["inspect", server.url(name), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output[result.output.index("["):])[0]
    assert report["path"] == server.url(name) and report["size_bytes"] == (server.directory / name).stat().st_size
    assert "error" not in report["loaded"]


def test_only_what_the_loader_reads_is_fetched(server):
    """A 16 MB acquisition series the loader never reads is never sent."""
    from pynwb import NWBHDF5IO, TimeSeries

    big = server.directory / "big.nwb"
    with NWBHDF5IO(str(server.directory / "lorenz_small.nwb"), "r") as io:
        nwb = io.read()
        data = np.random.default_rng(0).standard_normal((2**19, 4))  # 16 MiB of float64
        nwb.add_acquisition(TimeSeries(name="lfp", data=data, unit="V", rate=1000.0))
        with NWBHDF5IO(str(big), "w") as out:
            out.export(src_io=io, nwbfile=nwb)
    server.log.clear()
    _same(load_data(server.url("big.nwb")), load_data(big))
    assert server.bytes_sent() < 0.2 * big.stat().st_size, server.bytes_sent()


def test_second_load_uses_the_cache_and_a_new_etag_refetches(server):
    url = server.url("mc_maze_2trials.nwb")
    first = load_data(url)
    assert server.data_requests()
    server.log.clear()
    _same(load_data(url), first)
    assert server.data_requests() == [] and server.log, server.log  # HEAD validation only
    server.etags["mc_maze_2trials.nwb"] = '"changed"'
    server.log.clear()
    _same(load_data(url), first)
    assert server.data_requests(), "a changed ETag must refetch"


def test_a_server_without_head(server):
    """Size and ETag come from the first range request; a second load sends only that request."""
    server.mode = "no-head"
    url = server.url("vdp_small.h5")
    local = load_data(server.directory / "vdp_small.h5")
    _same(load_data(url), local)
    server.log.clear()
    _same(load_data(url), local)
    assert all(entry[2] == f"bytes=0-{100 * 1024 - 1}" for entry in server.data_requests()), server.log


def test_two_processes_load_one_url_at_once(server, tmp_path):
    """Both fill the same (empty) cache at the same time; a third load then reads only the cache."""
    import os
    import subprocess

    url = server.url("lorenz_small.nwb")
    code = (f"from xfads_cli.data.load import load_data; d = load_data({url!r}); "
            "import numpy as np; print(int(np.nansum(d.counts)), len(d.unit_ids))")
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    runs = [subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True) for _ in range(2)]
    outputs = [run.communicate(timeout=120) for run in runs]
    assert all(run.returncode == 0 for run in runs), outputs
    local = load_data(server.directory / "lorenz_small.nwb")
    expected = f"{int(np.nansum(local.counts))} {len(local.unit_ids)}"
    assert [out.strip() for out, _ in outputs] == [expected, expected]
    assert not list((tmp_path / "cache").rglob("*.partial"))  # no temporary file left behind
    server.log.clear()
    _same(load_data(url), local)
    assert server.data_requests() == []


def _inspect_error(url: str, code: int, fragment: str) -> None:
    result = runner.invoke(app, ["inspect", url])
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output and result.exception is None or isinstance(result.exception, SystemExit)
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and url in lines[0] and fragment in lines[0], lines


@pytest.mark.parametrize("mode, code, fragment", [
    ("status:404", 2, "was not found (HTTP 404 Not Found); check the URL"),
    ("status:403", 2, "access denied"),
    ("status:500", 1, "the server failed (HTTP 500 Internal Server Error); try again later"),
    ("no-range", 2, "does not answer range requests"),
    ("truncate", 1, "cut short"),
])
def test_server_failures_are_one_line_errors(server, mode, code, fragment):
    server.mode = mode
    _inspect_error(server.url("lorenz_small.nwb"), code, fragment)


def test_a_failure_after_opening_is_the_network_error(server, monkeypatch):
    """A read that fails inside h5py/pynwb (after the file was opened) is reported as what it is."""
    import importlib

    from xfads_cli.data.load import file_format

    monkeypatch.setattr(importlib.import_module("remfile.RemFile"), "_num_request_retries", 0)  # no 25 s of backoff
    url = server.url("lorenz_small.nwb")
    assert file_format(url) == "nwb"  # opened once: range support verified, the first blocks cached
    server.mode = "fail-get:500"
    result = runner.invoke(app, ["inspect", url])
    assert result.exit_code == 1 and "Traceback" not in result.output, result.output
    assert result.output.startswith(f"error: {url}: the server failed (HTTP 500") and len(result.output.splitlines()) == 1


def test_missing_file_and_unreachable_host(server):
    _inspect_error(server.url("nope.nwb"), 2, "HTTP 404")
    _inspect_error("http://127.0.0.1:9/x.nwb", 2, "cannot reach 127.0.0.1:9")  # port 9 (discard): nothing listens


def test_fit_and_smooth_a_url(server, tmp_path):
    url = server.url("lorenz_small.nwb")
    run = tmp_path / "run"
    result = runner.invoke(app, ["fit", url, "--out", str(run), "--max-epochs", "1", "--quiet", *TINY])
    assert result.exit_code == 0, result.output
    summary = json.loads((run / "summary.json").read_text())
    assert summary["data"]["path"] == url and summary["data"]["etag"]
    import torch

    ckpt = torch.load(run / "best.pt", weights_only=False)
    assert ckpt["data"]["path"] == url and ckpt["data"]["url"] == url
    out = tmp_path / "x.h5"
    result = runner.invoke(app, ["smooth", str(run), url, "--out", str(out), "--quiet", "--threads", "1"])
    assert result.exit_code == 0, result.output
    import h5py

    with h5py.File(out, "r") as f:
        assert f.attrs["input_path"] == url and f.attrs["input_etag"]
    result = runner.invoke(app, ["smooth", str(run), url, "--out", str(tmp_path / "x.nwb"), "--format", "nwb"])
    assert result.exit_code == 2 and "use --format h5" in result.output and not (tmp_path / "x.nwb").exists()
    forecast = ["forecast", str(run), url, "--context", "40", "--horizon", "20", "--samples", "4", "--quiet"]
    result = runner.invoke(app, [*forecast, "--out", str(tmp_path / "f.h5")])
    assert result.exit_code == 0 and (tmp_path / "f.h5").is_file(), result.output
    result = runner.invoke(app, [*forecast, "--out", str(tmp_path / "g.h5"), "--at-s", "1.0"])
    assert result.exit_code == 2 and "lorenz_small.nwb is cut into trials" in result.output, result.output


def test_a_failed_fit_writes_nothing(server, tmp_path):
    server.mode = "status:503"
    result = runner.invoke(app, ["fit", server.url("lorenz_small.nwb"), "--out", str(tmp_path / "run"), *TINY])
    assert result.exit_code == 1 and "error: " in result.output and "Traceback" not in result.output
    assert not (tmp_path / "run").exists()


def test_sweep_takes_local_files_only(server, tmp_path):
    url = server.url("vdp_small.h5")
    result = runner.invoke(app, ["sweep", url, "--space", "s.yaml", "--out", str(tmp_path / "sw"), "--trials", "1"])
    assert result.exit_code == 2 and "sweep reads local files only" in result.output and url in result.output
    assert not (tmp_path / "sw").exists()


def test_content_id_matches_sessions_by_sha256_or_url_and_etag():
    """runs.index_in_run matches a meta run's sessions by this: a file without either matches nothing."""
    from xfads_cli.data.provenance import content_id

    assert content_id({"path": "/x.nwb", "sha256": "ab"}) == "ab"
    assert content_id({"path": "u", "url": "u", "etag": '"e"'}) == 'u "e"'
    assert content_id({"path": "u", "url": "u", "etag": None}) is None and content_id({"sha256": None}) is None


def test_parse_source():
    assert parse_source("runs/x.nwb") == Path("runs/x.nwb")
    https = parse_source("https://host.org/a/b/x.nwb")
    assert isinstance(https, RemoteSource) and https.url == "https://host.org/a/b/x.nwb" and https.name == "x.nwb"
    s3 = parse_source("s3://bucket/key/file.h5")
    assert (s3.scheme, s3.host, s3.key, s3.stem, s3.suffix) == ("s3", "bucket", "key/file.h5", "file", ".h5")
    dandi = parse_source("dandi://000128@0.220113.0408/sub-Jenkins/sub-Jenkins_ecephys.nwb")
    assert (dandi.host, dandi.key, dandi.name) == ("000128@0.220113.0408", "sub-Jenkins/sub-Jenkins_ecephys.nwb",
                                                  "sub-Jenkins_ecephys.nwb")
    from xfads_cli.data.remote import http_url

    assert http_url(s3) == "https://bucket.s3.amazonaws.com/key/file.h5"
    assert http_url(parse_source("s3://b/sub-1/x_behavior+ecephys.nwb")) == \
        "https://b.s3.amazonaws.com/sub-1/x_behavior%2Becephys.nwb"
    for bad, fragment in [("ftp://host/x.nwb", "unsupported URL scheme"), ("s3://bucket", "names no file"),
                          ("dandi://000128/", "names no file")]:
        with pytest.raises(UsageError, match=fragment):
            parse_source(bad)


def test_missing_packages_are_named(monkeypatch):
    """Without the DANDI client (or remfile), one line names the extra to install."""
    monkeypatch.setitem(sys.modules, "dandi", None)
    monkeypatch.setitem(sys.modules, "dandi.dandiapi", None)
    result = runner.invoke(app, ["inspect", "dandi://000128/sub-Jenkins/x.nwb"])
    assert result.exit_code == 2 and "pip install 'xfads[dandi]'" in result.output, result.output
    monkeypatch.setitem(sys.modules, "remfile", None)
    result = runner.invoke(app, ["inspect", "https://127.0.0.1:9/x.nwb"])
    assert result.exit_code == 2 and "pip install 'xfads[remote]'" in result.output, result.output


def test_a_server_that_stops_answering_fails_the_read_instead_of_hanging(server, monkeypatch):
    """remfile's range requests have no timeout of their own: data/remote.py gives them one."""
    import time

    from xfads_cli.data import remote
    from xfads_cli.errors import RemoteError

    monkeypatch.setattr(remote, "TIMEOUT_S", 0.5)
    monkeypatch.setattr("remfile.RemFile._num_request_retries", 1)
    server.mode = "hang-after:2"  # connect's HEAD and first GET answered, then silence
    start = time.monotonic()
    with pytest.raises((RemoteError, UsageError)):
        load_data(server.url("lorenz_small.nwb"))
    assert time.monotonic() - start < 20
