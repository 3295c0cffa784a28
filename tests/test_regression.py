"""Fixed-seed regression: `fit` -> `smooth` -> `forecast` on the bundled fixtures gives the numbers the
code gave when tests/fixtures/regression/ was written, and checkpoints written then still load and
smooth identically.

Refactors must not change results (issue 14): every float dataset of the smooth and forecast files and
the per-epoch losses are compared, single-session and meta model. The fits run in float64 with one
thread and --deterministic, so the only expected differences are float round-off (rtol 1e-6 leaves
room for another CPU's vector units, not for a changed computation).

A deliberate change of results regenerates the reference, and says why in its commit:

    python tests/test_regression.py --regenerate

(`single_run/`, a whole RUN_DIR written by the reference's code for the resume test, and the checkpoints
`{case}_best.pt` with the smooth/forecast numbers the code that wrote them gave (`checkpoints.npz`) are not
regenerated: they stand for runs users already have.)

Regenerated on 2026-12-03 for the meta case only (the single case's numbers were unchanged): the two
training paths became one (train/loop.py `fit`), whose Monte Carlo draws are keyed per trial and use
train.samples, where the meta model's loop drew per chunk and used model.samples.
Regenerated on 2026-12-06 for the meta case only (the single case's 13 arrays bit-identical): a meta
fit now starts each session's embedding offset from its data (model/embedding_init.py, issue 27).
"""

from __future__ import annotations

import csv
import shutil
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
from typer.testing import CliRunner

from xfads_cli.cli import app

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "data_fixtures"
REFERENCE = Path(__file__).resolve().parent / "fixtures" / "regression"
RTOL, ATOL = 1e-6, 1e-9

SMALL = ["--threads", "1", "--deterministic", "--seed", "3", "--set", "train.dtype=float64",
         "--set", "model.latent_dim=3", "--set", "model.dynamics_hidden=16", "--set", "model.encoder_hidden=16",
         "--set", "model.samples=4", "--set", "model.rank_local=2", "--set", "model.rank_backward=1"]
CASES = {
    # name: (recordings, fit options)
    "single": (["vdp_small.h5"], ["--max-epochs", "3"]),
    "meta": (["vdp_small.h5", "duffing_small.nwb"], ["--max-epochs", "2", "--set", "model.read_in_dim=4"]),
}
OUT_OPTS = ["--threads", "1", "--quiet", "--overwrite"]


def invoke(*args) -> None:
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output


INPUTS = {"counts", "context_counts", "true_rates"}  # copied from the recording, not computed


def float_datasets(path: Path) -> dict[str, np.ndarray]:
    """Every computed float dataset of an output file."""
    out = {}

    def visit(name, obj):
        if isinstance(obj, h5py.Dataset) and obj.dtype.kind == "f" and name.split("/")[-1] not in INPUTS:
            out[name] = obj[()]

    with h5py.File(path, "r") as f:
        f.visititems(visit)
    return out


def run_case(name: str, work: Path, checkpoint: Path | None = None) -> tuple[dict[str, np.ndarray], Path]:
    """Fit (unless a checkpoint is given), smooth and forecast one case; every number to compare,
    keyed '<case>/<source>/<dataset>'."""
    recordings, fit_opts = CASES[name]
    data = [FIXTURES / r for r in recordings]
    numbers = {}
    if checkpoint is None:
        run = work / f"{name}_run"
        invoke("fit", *data, "--out", run, "--quiet", *fit_opts, *SMALL)
        with open(run / "metrics.csv") as f:
            rows = list(csv.DictReader(f))
        for key in ("train_loss", "valid_loss"):
            numbers[f"{name}/metrics/{key}"] = np.array([float(r[key]) for r in rows])
        checkpoint = run / "best.pt"
    # the first recording (a meta run smooths and forecasts any of its sessions the same way)
    smooth, forecast = work / f"{name}_smooth.h5", work / f"{name}_forecast.h5"
    invoke("smooth", checkpoint, data[0], "--out", smooth, "--split", "test", *OUT_OPTS)
    invoke("forecast", checkpoint, data[0], "--out", forecast, "--split", "test", "--context", 40, "--horizon", 20,
           *OUT_OPTS)
    for source, path in (("smooth", smooth), ("forecast", forecast)):
        numbers.update({f"{name}/{source}/{k}": v for k, v in float_datasets(path).items()})
    return numbers, checkpoint


def reference(file: str = "reference.npz") -> dict[str, np.ndarray]:
    if not (REFERENCE / file).exists():
        pytest.fail(f"{REFERENCE / file} is missing; run: python tests/test_regression.py --regenerate")
    with np.load(REFERENCE / file) as f:
        return {k: f[k] for k in f.files}


def assert_same(got: dict[str, np.ndarray], want: dict[str, np.ndarray], prefix: str) -> None:
    keys = sorted(k for k in want if k.startswith(prefix))
    assert keys, f"no reference numbers under {prefix}"
    assert sorted(k for k in got if k.startswith(prefix)) == keys
    for key in keys:
        np.testing.assert_allclose(got[key], want[key], rtol=RTOL, atol=ATOL, err_msg=key)


@pytest.mark.parametrize("name", sorted(CASES))
def test_fit_smooth_forecast_reproduce_the_reference(name, tmp_path):
    got, _ = run_case(name, tmp_path)
    assert_same(got, reference(), f"{name}/")


@pytest.mark.parametrize("name", sorted(CASES))
def test_checkpoints_written_before_still_load_and_smooth_identically(name, tmp_path):
    got, _ = run_case(name, tmp_path, checkpoint=REFERENCE / f"{name}_best.pt")
    want = reference("checkpoints.npz")
    for source in ("smooth", "forecast"):
        assert_same(got, want, f"{name}/{source}/")


def test_a_run_written_before_resumes(tmp_path):
    """tests/fixtures/regression/single_run/ is the 'single' case's RUN_DIR as the code of the reference
    wrote it (3 epochs); today's fit --resume continues it to 5."""
    run = tmp_path / "run"
    shutil.copytree(REFERENCE / "single_run", run)
    with open(run / "metrics.csv") as f:
        before = list(csv.DictReader(f))
    invoke("fit", FIXTURES / "vdp_small.h5", "--out", run, "--resume", "--max-epochs", 5, "--quiet", "--threads", 1,
           "--deterministic")
    with open(run / "metrics.csv") as f:
        after = list(csv.DictReader(f))
    assert [r["epoch"] for r in after] == ["0", "1", "2", "3", "4"]
    assert [r["train_loss"] for r in after[:3]] == [r["train_loss"] for r in before]
    assert all(np.isfinite(float(r["train_loss"])) for r in after[3:])


def regenerate() -> None:
    import tempfile

    REFERENCE.mkdir(parents=True, exist_ok=True)
    numbers = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in sorted(CASES):
            got, _ = run_case(name, Path(tmp))
            numbers.update(got)
    np.savez_compressed(REFERENCE / "reference.npz", **numbers)
    print(f"wrote {REFERENCE}: {len(numbers)} arrays")


if __name__ == "__main__":
    if sys.argv[1:] != ["--regenerate"]:
        sys.exit("usage: python tests/test_regression.py --regenerate")
    regenerate()
