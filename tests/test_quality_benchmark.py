"""The parts of benchmarks/quality.py that need no fitting: npz -> NWB conversion of the real
recordings, the coupled-oscillator simulator, case selection and the table formatter."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCH))

import coupled_system  # noqa: E402
import quality  # noqa: E402
import real_recordings  # noqa: E402


def _read_nwb(path: Path) -> tuple[int, int | None, int]:
    from pynwb import NWBHDF5IO

    with NWBHDF5IO(str(path), "r") as io:
        nwb = io.read()
        units = nwb.units
        spikes = sum(len(units["spike_times"][i]) for i in range(len(units)))
        trials = None if nwb.trials is None else len(nwb.trials)
        return len(units), trials, spikes


def test_mouse_gpe_converts_to_a_trial_aligned_nwb(real_dir, tmp_path):
    src = real_dir / "mouse_gpe_50trials.npz"
    d = np.load(src)
    info = real_recordings.convert_mouse_gpe(src, tmp_path / "gpe.nwb")
    assert info == {"units": 18, "trials": 50, "spikes": 15209}
    assert _read_nwb(tmp_path / "gpe.nwb") == (18, 50, d["spike_times"].size)
    layout, loaded = quality.layout_of(tmp_path / "gpe.nwb", [quality.HELDOUT_SET])
    assert layout == "trial-aligned (trials)"
    assert loaded["trials"] == 50 and loaded["neurons"] == 18 and loaded["heldout_neurons"] > 0


def test_ibl_converts_to_a_continuous_nwb_that_is_chopped(real_dir, tmp_path):
    src = real_dir / "ibl_np_120s.npz"
    d = np.load(src)
    info = real_recordings.convert_ibl(src, tmp_path / "ibl.nwb")
    n_clusters = np.unique(d["spike_clusters"]).size
    assert info == {"units": 289, "trials": 0, "spikes": 124905} and n_clusters == 289
    assert _read_nwb(tmp_path / "ibl.nwb") == (289, None, d["spike_times"].size)
    layout, loaded = quality.layout_of(tmp_path / "ibl.nwb", [quality.HELDOUT_SET])
    assert layout == "chopped (1000 ms windows)"
    assert loaded["trials"] == 119


def test_every_real_recording_is_a_case_or_skipped_with_a_reason(real_dir, tmp_path):
    cases = {c.name: c for c in quality.real_case_list(real_dir)}
    assert set(cases) == {"human_mtl_sub-4_ses-4", "ibl_np_120s", "locust_odor_250trials", "mc_maze_2trials",
                          "mouse_gpe_50trials", "rat_hc_linear_track"}
    assert cases["mc_maze_2trials"].skip and "2 trials" in cases["mc_maze_2trials"].skip
    assert "data.intervals=recognition_table" in cases["human_mtl_sub-4_ses-4"].sets
    assert all(quality.HELDOUT_SET in c.sets for c in cases.values())
    path = cases["ibl_np_120s"].prepare(tmp_path, lambda m: None)  # converted once, then reused
    assert path == tmp_path / "ibl_np_120s.nwb" and path.is_file()
    mtime = path.stat().st_mtime_ns
    assert cases["ibl_np_120s"].prepare(tmp_path, lambda m: None) == path and path.stat().st_mtime_ns == mtime


def test_locust_is_scored_on_its_odour_response_window(real_dir):
    from xfads_cli.config import DataConfig

    (case,) = [c for c in quality.real_case_list(real_dir) if c.name == "locust_odor_250trials"]
    assert not case.skip and case.prepare(None, lambda m: None) == real_dir / "locust_odor_250trials.nwb"
    assert case.sets == [quality.HELDOUT_SET, "eval.context_bins=75", "eval.horizon_bins=50"]
    assert "odour response" in case.note
    assert DataConfig().bin_ms == 20.0  # the window is in bins of the default 20 ms
    layout, loaded = quality.layout_of(case.prepare(None, lambda m: None), case.sets)
    assert layout == "trial-aligned (trials)"
    assert loaded["trials"] == 250 and loaded["bins"] == 200 and 75 + 50 <= loaded["bins"]  # 4 s trials
    # the other real cases keep the default window
    others = [c for c in quality.real_case_list(real_dir) if c.name != "locust_odor_250trials"]
    assert not any(s.startswith("eval.") for c in others for s in c.sets)


def test_coupled_system_writes_a_file_inspect_accepts(tmp_path):
    path = tmp_path / "coupled.h5"
    info = coupled_system.write_h5(path, trials=12, bins=30, neurons=10, seed=3)
    lo, _, hi = info["rate_hz_min_median_max"]
    assert 2 < lo and hi < 40  # drawn at 5-20 Hz; a few seconds of counts scatter around that
    with h5py.File(path) as f:
        spikes, retest, rates = f["spikes"][()], f["truth/retest_counts"][()], f["truth/rates"][()]
        assert f["truth/latents"].shape == (12, 30, 4) and f.attrs["bin_ms"] == 20.0
    assert spikes.shape == retest.shape == rates.shape == (12, 30, 10)
    assert not np.array_equal(spikes, retest)  # an independent second draw
    res = subprocess.run([sys.executable, "-m", "xfads_cli", "inspect", str(path), "--json"],
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    (out,) = json.loads(res.stdout)
    assert "retest_counts" in out["truth"] and out["loaded"]["trials"] == 12
    # Same seed, same file content.
    again = coupled_system.simulate(trials=12, bins=30, neurons=10, seed=3)
    np.testing.assert_array_equal(again["counts"], spikes)


def test_simulated_cases_have_distinct_fixed_seeds():
    cases = quality.simulated_cases()
    assert len(cases) == 16 and [c.seed for c in cases] == list(range(1234, 1250))
    assert cases[-1].name == "coupled-200x70" and all(not c.sets for c in cases)
    assert [c.name for c in quality.select(cases, "lorenz-*,*-30x70")][:3] == ["lorenz-200x70", "lorenz-1000x100", "lorenz-30x70"]
    with pytest.raises(ValueError, match="no case matches"):
        quality.select(cases, "nosuch")


def test_table_prints_a_dash_for_missing_keys():
    rows = [
        {"case": "lorenz-200x70", "kind": "simulated", "data": "simulated", "status": "ok", "epochs": 10,
         "s_per_epoch": 1.5, "wall_s": 20.0, "load_at_start": (1.0, 1.0, 1.0),
         "metrics": {"test_retest_bps": 0.3, "test_retest_oracle_bps": 0.4, "test_fp_bps": 0.1}},  # no fp oracle
        {"case": "mouse", "kind": "real", "status": "ok", "sets": ["data.heldout_fraction=0.2"],
         "metrics": {"test_fp_bps": 0.05, "test_fp_baseline_bps": -0.01, "test_co_bps": float("nan")}},
        {"case": "maze", "kind": "real", "status": "skipped", "reason": "only 2 trials", "data": ""},
        {"case": "broken", "status": "failed", "reason": "xfads fit exit 1: error: x"},
        {"case": "empty"},
    ]
    text = quality.format_table(rows)
    lines = text.splitlines()
    table = [ln for ln in lines if ln.startswith("|")]
    assert len(table) == 2 + len(rows)
    assert all(ln.count("|") == len(quality.COLUMNS) + 1 for ln in table)
    lorenz = table[2].split("|")
    assert "0.75 (0.300/0.400)" in lorenz[7] and lorenz[8].strip() == "-" and lorenz[9].strip() == "0.100"
    mouse = table[3].split("|")
    assert mouse[11].strip() == "n/a (+0.060)" and mouse[12].strip() == "-" and mouse[13].strip() == "-"
    assert "SKIPPED" in table[4] and "FAILED" in table[5]
    assert any("only 2 trials" in ln for ln in lines) and any("exit 1" in ln for ln in lines)
    assert quality.ratio(None, 1) == "-" and quality.ratio(1, 0) == "n/a" and quality.ratio(1, 4) == "0.25"
