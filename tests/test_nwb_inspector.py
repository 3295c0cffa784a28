"""NWB files xfads writes pass nwbinspector (the checker DANDI runs on upload): simulate and generate
outputs without any CRITICAL or BEST_PRACTICE_VIOLATION message, smooth and forecast --format nwb
outputs without any such message that their input has not; every output has its own identifier and
records its input's identifier and sha256."""

from __future__ import annotations

import hashlib
import json
import warnings
from pathlib import Path

import h5py
import numpy as np
import pytest
from typer.testing import CliRunner

from xfads_cli.cli import app

pytest.importorskip("nwbinspector")

runner = CliRunner()
SMALL = ["--set", "model.latent_dim=2", "--set", "model.dynamics_hidden=8", "--set", "model.encoder_hidden=8",
         "--set", "model.samples=4"]


def invoke(*args):
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result


def serious(path: Path) -> set[tuple[str, str, str]]:
    """nwbinspector's CRITICAL and BEST_PRACTICE_VIOLATION messages on `path`, as (check, object, location)."""
    from nwbinspector import Importance, inspect_nwbfile

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        messages = list(inspect_nwbfile(nwbfile_path=str(path), importance_threshold=Importance.BEST_PRACTICE_VIOLATION))
    return {(m.check_function_name, str(m.object_name), str(m.location)) for m in messages}


def identifier(path: Path) -> str:
    with h5py.File(path, "r") as f:
        value = f["identifier"][()]
    return value.decode() if isinstance(value, bytes) else str(value)


def module_json(path: Path, name: str) -> dict:
    with h5py.File(path, "r") as f:
        return json.loads(f[f"processing/{name}"].attrs["description"])


@pytest.fixture(scope="module")
def outputs(tmp_path_factory) -> dict[str, Path]:
    """simulate -> fit (2 epochs) -> smooth, forecast (--format nwb) and generate (.nwb), once."""
    folder = tmp_path_factory.mktemp("inspector")
    files = {name: folder / f"{name}.nwb" for name in ("simulate", "smooth", "forecast", "generate")}
    invoke("simulate", "lorenz", "--out", files["simulate"], "--neurons", 8, "--trials", 16, "--bins", 72)
    run = folder / "run"
    invoke("fit", files["simulate"], "--out", run, "--max-epochs", 2, "--threads", 1, "--quiet", *SMALL)
    invoke("smooth", run, files["simulate"], "--out", files["smooth"], "--format", "nwb", "--threads", 1, "--quiet")
    invoke("forecast", run, files["simulate"], "--out", files["forecast"], "--format", "nwb", "--context", 40,
           "--horizon", 20, "--samples", 5, "--threads", 1, "--quiet")
    invoke("generate", run, "--out", files["generate"], "--trials", 4, "--bins", 30, "--threads", 1, "--quiet")
    return files


@pytest.mark.parametrize("name", ["simulate", "generate"])
def test_simulated_files_have_no_critical_or_violation(outputs, name):
    assert serious(outputs[name]) == set()
    with h5py.File(outputs[name], "r") as f:
        resolution = f["units/spike_times"].attrs["resolution"]
        samples = f["units/spike_times"][:] / resolution  # spike times are on the clock `resolution` says
        np.testing.assert_allclose(samples, np.round(samples), atol=1e-6)
        assert f["general/subject/species"][()].decode().startswith("http://purl.obolibrary.org/obo/NCBITaxon_")


@pytest.mark.parametrize("bin_ms", [20.0, 7.3, 0.05])
def test_spike_samples_stay_strictly_inside_their_bins(bin_ms):
    from xfads_cli.data.simulate import spike_sample_rate_hz, spike_times_from_counts

    bin_s, rng = bin_ms / 1000.0, np.random.default_rng(0)
    counts = rng.poisson(3.0, size=(4, 50, 2))
    start_s = np.arange(4) * 60 * bin_s + 0.1234
    spikes = spike_times_from_counts(counts, start_s, bin_s, rng)
    rate = spike_sample_rate_hz(bin_s)
    for j, times in enumerate(spikes):
        np.testing.assert_allclose(times * rate, np.round(times * rate), atol=1e-6)
        trial = np.searchsorted(start_s, times, side="right") - 1
        position = (times - start_s[trial]) / bin_s
        inside = position - np.floor(position)
        assert np.all(np.minimum(inside, 1 - inside) > 0.2 / (bin_s * rate))  # a quarter sample from the edges
        rebinned = np.zeros(counts.shape[:2], int)
        np.add.at(rebinned, (trial, np.floor(position).astype(int)), 1)
        np.testing.assert_array_equal(rebinned, counts[:, :, j])


@pytest.mark.parametrize("name", ["smooth", "forecast"])
def test_outputs_add_no_critical_or_violation_and_record_their_source(outputs, name):
    source = outputs["simulate"]
    assert serious(outputs[name]) <= serious(source)
    assert identifier(outputs[name]) != identifier(source)
    recorded = module_json(outputs[name], f"xfads_{name}")["source"]
    assert recorded == {"file": source.name, "identifier": identifier(source),
                        "sha256": hashlib.sha256(source.read_bytes()).hexdigest()}


def test_identifiers_are_unique_across_the_files(outputs):
    """inspect_all's cross-file check (check_unique_identifiers, CRITICAL) on the folder of outputs."""
    from nwbinspector import Importance, inspect_all

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        messages = list(inspect_all(path=outputs["simulate"].parent, select=["check_subject_exists"],
                                    importance_threshold=Importance.CRITICAL, progress_bar=False))
    assert [m.message for m in messages if m.check_function_name == "check_unique_identifiers"] == []
    assert len({identifier(path) for path in outputs.values()}) == len(outputs)


def test_evenly_spaced_bins_are_written_with_a_rate(outputs, tmp_path):
    """One trial's bin centres are evenly spaced: starting_time and rate, not timestamps (which
    nwbinspector's check_regular_timestamps would flag)."""
    from pynwb import NWBHDF5IO

    from xfads_cli.outputs.nwb import write_nwb_copy

    out = write_nwb_copy(outputs["simulate"], tmp_path / "one.nwb", "xfads_smooth",
                         {"latents_mean": np.zeros((1, 20, 2), np.float32)}, np.array([1.0]), 20.0, "one trial", {})
    assert serious(out) <= serious(outputs["simulate"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with NWBHDF5IO(str(out), "r") as io:
            ts = io.read().processing["xfads_smooth"]["latents_mean"]
            assert ts.timestamps is None and ts.rate == pytest.approx(50.0)
            np.testing.assert_allclose(ts.get_timestamps(), 1.0 + (np.arange(20) + 0.5) * 0.02)


@pytest.mark.parametrize("name", ["mc_maze_2trials.nwb", "rat_hc_linear_track.nwb"])
def test_recordings_from_elsewhere_get_no_new_message(request, fixtures_dir, tmp_path, name):
    """Files not written by xfads keep their own messages (no Subject, no units resolution ...) and get
    none added; the rat's continuous recording is cut into windows back to back (evenly spaced bins)."""
    from xfads_cli.config import DataConfig
    from xfads_cli.data.nwb import load_nwb
    from xfads_cli.outputs.nwb import write_nwb_copy

    source = fixtures_dir / name  # bundled (mc_maze_2trials.nwb): runs on every clone
    if not source.is_file():
        source = request.getfixturevalue("real_dir") / name  # ../shared, skipped when absent
    cfg = DataConfig(split=(0.5, 0.5, 0.0)) if name.startswith("mc_maze") else DataConfig()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        data = load_nwb(source, cfg)
    series = {"rates_mean": np.ones((data.n_trials, data.n_time, data.n_neurons), np.float32)}
    out = write_nwb_copy(source, tmp_path / name, "xfads_smooth", series, data.start_s, cfg.bin_ms, "test", {})
    assert serious(out) <= serious(source)
    assert module_json(out, "xfads_smooth")["source"]["identifier"] == identifier(source) != identifier(out)
