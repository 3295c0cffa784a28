"""Property-based fuzzing of all seven commands with Hypothesis (issue 13).

Hypothesis generates small NWB files (units with odd spike times, trials tables that are missing,
empty or impossible, extra interval tables, behaviour), small HDF5 files (plain and NLB layouts,
random shapes and dtypes, NaN / negative / fractional / infinite / huge counts, a bin_ms attribute
that is absent, valid or broken, optional datasets of the right or wrong shape), files that are not
recordings at all, `--set` overrides and YAML config files (valid and invalid values, unknown keys,
malformed items), and argument combinations for each command (output paths that exist, are
directories, sit in missing folders or are the input itself, --overwrite or not, --format, --split,
--context/--horizon of 0, negative, NaN or longer than the trial, ...). Every example runs the real
console entry point `xfads_cli.cli.main` in-process (Typer's CliRunner isolation: a subprocess per
example would cost ~2 s of imports) and asserts, whatever the outcome:

  * the exit code is 0, 1, 2 or 75, and no exception escapes (no traceback on stdout/stderr);
  * exit 1 only from training (fit, adapt) and only as a one-line 'failed: ...' (a RunFailure);
  * exit 2 is exactly one stderr line 'error: ...', nothing on stdout, and the file system is exactly
    as before: no file or folder appeared, changed or vanished;
  * every input (the recordings, config files, the run directories read) is byte-identical after;
  * every file the command created or replaced is complete: HDF5/NWB files open and every dataset
    reads (NWB outputs also through pynwb), checkpoints load with torch.load(weights_only=True),
    summary/config/metrics files parse; no '.partial' temporary is left behind; on exit 0 the
    command's output exists (a run directory holds all its files) and --json printed valid JSON.

Examples are derandomised (the same ones on every run, no example database) and counted: every test
body increments EXAMPLES, and `test_examples_ran` (last in this file) checks that >= 500 ran; one run
executes sum(MAX_EXAMPLES) = 1000 generated examples plus 21 explicit @example regressions (~1.5 min
on one CPU thread; --hypothesis-show-statistics prints the per-test numbers). Knobs for local runs:
XFADS_FUZZ_SCALE=k multiplies every max_examples by k; XFADS_FUZZ_RANDOM=1 draws new examples instead
of the derandomised ones; XFADS_FUZZ_NO_SHRINK=1 reports a failure as generated (shrinking a failing
fit can take minutes); XFADS_FUZZ_LOG=FILE appends one JSON line per example (arguments, exit code,
last stderr line), to see which paths the strategies reach.

The strategies and the writers of the generated files are in tests/writers.py; this file holds the
tests, the in-process runner and the invariants. Generated values are weighted towards working ones
(`mostly`, `weighted`, `chance`), so that most examples carry one or two odd values among valid ones
and get past argument checking: about 40 % of the examples exit 0 (and write outputs that are
checked), the rest exit 2.

Runs fitted once per module (the `world` fixture, all tiny: 8 trials x 10 bins x 3-4 neurons, 1 epoch)
serve smooth, forecast, embed and adapt; they are hashed before and after every example, so a command
writing into the run it reads fails the input invariant (examples that may write over a checkpoint
use a copy of it).

Non-finite and absurdly large settings, and model.read_dims above model.latent_dim, are range errors
in config.py (`test_config_values_out_of_range_exit_2`); the generators draw them too (VALUES in writers.py).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import shutil
import sys
import tempfile
import traceback
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import pytest
import torch
import yaml
from hypothesis import HealthCheck, Phase, example, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from writers import (
    H5Spec,
    NwbSpec,
    OutSpec,
    any_recording,
    chance,
    config_files,
    h5_specs,
    junk_specs,
    mostly,
    nwb_specs,
    one_set,
    out_path,
    out_specs,
    set_args,
    set_items,
    weighted,
    write_config,
    write_h5,
    write_nwb,
    write_recording,
)
from xfads_cli.cli import main
from xfads_cli.data.simulate import SYSTEMS

RUNNER = CliRunner()
SCALE = float(os.environ.get("XFADS_FUZZ_SCALE", "1"))
LOG = os.environ.get("XFADS_FUZZ_LOG")

FUZZ = settings(
    # XFADS_FUZZ_NO_SHRINK=1: report the first failing example as generated (shrinking a failing fit can take minutes)
    phases=[Phase.explicit, Phase.reuse, Phase.generate] if os.environ.get("XFADS_FUZZ_NO_SHRINK") else list(Phase),
    # the same examples on every run (CI budget, reproducible failures); XFADS_FUZZ_RANDOM=1 explores new ones
    derandomize=not os.environ.get("XFADS_FUZZ_RANDOM"),
    database=None,
    deadline=None,  # a fit takes ~0.1-1 s; timing is not a property here
    print_blob=False,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much,
                           HealthCheck.large_base_example],
)

# max_examples per test; their sum is what one run of this file executes (asserted by test_examples_ran)
MAX_EXAMPLES = {"inspect": 180, "simulate": 100, "fit": 200, "smooth": 150, "forecast": 170, "embed": 90, "adapt": 110}
EXAMPLES: dict[str, int] = {}


def examples(command: str) -> settings:
    return settings(FUZZ, max_examples=max(1, int(MAX_EXAMPLES[command] * SCALE)))


def count(command: str) -> None:
    EXAMPLES[command] = EXAMPLES.get(command, 0) + 1


# Tiny models, so that a fit of a tiny recording takes a fraction of a second.
FAST = ["--set", "model.samples=2", "--set", "model.latent_dim=2", "--set", "model.dynamics_hidden=8",
        "--set", "model.encoder_hidden=8", "--set", "model.read_in_dim=4", "--set", "train.samples=2",
        "--set", "eval.samples=2", "--set", "train.warmup_steps=2"]
RUN_FILES = ("config.yaml", "last.pt", "best.pt", "metrics.csv", "summary.json")


# --------------------------------------------------------------------------------------------------
# Running the CLI and checking the invariants


@dataclass
class Outcome:
    args: list[str]
    code: int
    stdout: str
    stderr: str
    error: str | None = None  # traceback of an exception that escaped main()

    def describe(self) -> str:
        return (f"xfads {' '.join(self.args)}\nexit {self.code}\n--- stdout\n{self.stdout[-3000:]}\n"
                f"--- stderr\n{self.stderr[-3000:]}" + (f"\n--- uncaught\n{self.error}" if self.error else ""))


def xfads(*args) -> Outcome:
    """The console entry point (`xfads ARGS`) in-process: argv, stdout and stderr isolated; warnings are
    recorded rather than printed (pytest's warning capture would otherwise decide what reaches stderr);
    torch's thread count is restored (--threads sets it for the process)."""
    argv = [str(a) for a in args]
    threads = torch.get_num_threads()
    saved_argv = sys.argv
    error = None
    with RUNNER.isolation() as (out, err, _), warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        sys.argv = ["xfads", *argv]
        try:
            main()
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        except KeyboardInterrupt:
            raise
        except BaseException:  # noqa: BLE001 - any escape is the violation this suite looks for
            code, error = 1, traceback.format_exc()
        finally:
            sys.argv = saved_argv
            torch.set_num_threads(threads)
            sys.stdout.flush()
            sys.stderr.flush()
        stdout = out.getvalue().decode("utf-8", "replace")
        stderr = err.getvalue().decode("utf-8", "replace")
    result = Outcome(argv, code, stdout, stderr, error)
    if LOG:  # XFADS_FUZZ_LOG=FILE: one JSON line per example (to see what the strategies reach)
        with open(LOG, "a") as handle:
            handle.write(json.dumps({"args": argv, "code": code, "stderr": stderr.splitlines()[-1:],
                                     "uncaught": (error or "").strip().splitlines()[-1:]}) + "\n")
    return result


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def snapshot(*roots: Path) -> dict[str, str]:
    """path -> content hash ('<dir>' for folders) of everything under `roots`."""
    state = {}
    for root in roots:
        for path in Path(root).rglob("*"):
            state[str(path)] = "<dir>" if path.is_dir() else sha256(path)
    return state


def check_file_complete(path: Path) -> None:
    """A file a command created or replaced must be whole and readable as what its name says."""
    name = path.name
    assert ".partial" not in name, f"temporary file left behind: {path}"
    if name == ".xfads.lock":
        return
    if path.suffix == ".pt":
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
        assert isinstance(ckpt, dict) and ckpt.get("format", "").startswith("xfads-checkpoint"), path
        assert "model" in ckpt and "config" in ckpt and "spec" in ckpt, path
        return
    if h5py.is_hdf5(str(path)):
        with h5py.File(path, "r") as f:
            f.visititems(lambda _, obj: obj[()] if isinstance(obj, h5py.Dataset) else None)
            claims_nwb = "nwb_version" in f.attrs
        if claims_nwb:  # an NWB file (simulate .nwb, --format nwb) must also read through pynwb
            from pynwb import NWBHDF5IO

            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                with NWBHDF5IO(str(path), "r") as nwb_io:
                    nwb_io.read()
        return
    if path.suffix == ".json":
        json.loads(path.read_text())
    elif path.suffix == ".yaml":
        yaml.safe_load(path.read_text())
    elif path.suffix == ".csv":
        rows = list(csv.reader(io.StringIO(path.read_text())))
        assert rows and all(len(r) == len(rows[0]) for r in rows), f"ragged {path}"
    elif path.suffix == ".png":
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", f"not a PNG: {path}"
    else:
        raise AssertionError(f"unexpected output file {path} ({path.stat().st_size} bytes)")


TRAINING = ("fit", "adapt")


def check(res: Outcome, before: dict[str, str], roots: list[Path], inputs: list[Path],
          json_out: bool = False) -> set[str]:
    """The invariants every example must satisfy; returns the paths created or changed."""
    command = res.args[0] if res.args else ""
    what = res.describe()
    assert res.error is None, f"uncaught exception\n{what}"
    assert res.code in (0, 1, 2, 75), f"exit code\n{what}"
    assert "Traceback" not in res.stdout + res.stderr, f"traceback printed\n{what}"
    after = snapshot(*roots)
    for path in inputs:
        for key in [k for k in before if k == str(path) or k.startswith(str(path) + os.sep)]:
            assert after.get(key) == before[key], f"input {key} was modified or removed\n{what}"
    leftovers = [p for p in after if ".partial" in Path(p).name]
    assert not leftovers, f"temporary files left behind: {leftovers}\n{what}"
    lines = res.stderr.splitlines()
    if res.code == 2:
        assert len(lines) == 1 and lines[0].startswith("error: ") and lines[0][7:].strip(), f"exit 2 message\n{what}"
        assert len(lines[0]) < 600, f"exit 2 message of {len(lines[0])} characters\n{what}"
        assert res.stdout == "", f"exit 2 printed on stdout\n{what}"
        appeared = sorted(set(after) - set(before))
        vanished = sorted(set(before) - set(after))
        changed = sorted(p for p in set(before) & set(after) if before[p] != after[p])
        assert not (appeared or vanished or changed), \
            f"exit 2 touched the disk: new {appeared}, removed {vanished}, changed {changed}\n{what}"
    if res.code == 1:
        assert command in TRAINING, f"exit 1 from '{command}', which has no runtime failure mode\n{what}"
        failed = [line for line in lines if not line.startswith("warning:")]
        assert failed and failed[-1].startswith("failed: "), f"exit 1 without a 'failed:' line\n{what}"
    new = {p for p in after if before.get(p) != after[p]}
    for path in sorted(new):
        if after[path] != "<dir>":
            check_file_complete(Path(path))
    if res.code == 0 and json_out:
        json.loads(res.stdout)
    return new


def check_run_dir(run: Path) -> None:
    for name in RUN_FILES:
        assert (run / name).is_file(), f"run directory {run} lacks {name}: {sorted(os.listdir(run))}"
        check_file_complete(run / name)


# --------------------------------------------------------------------------------------------------
# Shared runs (fitted once per module)


BASE_NWB = NwbSpec(n_units=4, n_trials=8, trial_s=0.2, events=True, behavior=True, condition=True)
BASE_H5 = H5Spec(trials=8, bins=10, neurons=4)


@dataclass
class World:
    root: Path
    files: dict[str, Path] = field(default_factory=dict)
    runs: dict[str, Path] = field(default_factory=dict)

    def snapshot(self) -> dict[str, str]:
        return snapshot(self.root)


def _fit_run(data: list[Path], out: Path, *extra) -> Path:
    res = xfads("fit", *data, "--out", out, "--max-epochs", 1, "--quiet", "--threads", 1, *FAST, *extra)
    assert res.code == 0, res.describe()
    return out


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> World:
    root = tmp_path_factory.mktemp("properties")
    w = World(root)
    w.files["nwb"] = write_nwb(root / "base.nwb", BASE_NWB)
    w.files["h5"] = write_h5(root / "base.h5", BASE_H5)
    sessions = root / "sessions"
    sessions.mkdir()
    w.files["s0"] = write_h5(sessions / "s0.h5", H5Spec(trials=8, bins=10, neurons=3, seed=1))
    w.files["s1"] = write_h5(sessions / "s1.h5", H5Spec(trials=8, bins=10, neurons=4, seed=2))
    runs = root / "runs"
    w.runs["nwb"] = _fit_run([w.files["nwb"]], runs / "nwb")
    w.runs["h5"] = _fit_run([w.files["h5"]], runs / "h5", "--set", "data.heldout_fraction=0.25")
    w.runs["meta"] = _fit_run([w.files["s0"], w.files["s1"]], runs / "meta", "--set", "model.kind=meta")
    return w


@pytest.fixture(autouse=True)
def _quiet_writer_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def workdir():
    """A fresh folder per example (function-scoped fixtures are shared by all examples of a test)."""
    return tempfile.TemporaryDirectory(prefix="xfads-prop-")


def layout(tmp: Path) -> Path:
    (tmp / "in").mkdir()
    (tmp / "out").mkdir()
    return tmp / "in"


def flag(option: str, on: bool) -> list[str]:
    return [option] if on else []


# --------------------------------------------------------------------------------------------------
# inspect


@examples("inspect")
@given(files=mostly([1], [2, 3], 15).flatmap(lambda n: st.lists(any_recording, min_size=n, max_size=n)),
       sets=set_items, config=config_files, json_out=st.booleans())
def test_inspect(files, sets, config, json_out):
    count("inspect")
    with workdir() as name:
        tmp = Path(name)
        folder = layout(tmp)
        paths = [write_recording(folder, spec, f"rec{i}") for i, spec in enumerate(files)]
        args = ["inspect", *paths, *set_args(sets), *write_config(folder, config), *flag("--json", json_out)]
        before = snapshot(tmp)
        res = xfads(*args)
        check(res, before, [tmp], [folder], json_out)
        assert snapshot(tmp) == before, "inspect wrote to disk"
        if res.code == 0 and json_out:
            assert len(json.loads(res.stdout)) == len(paths)


# --------------------------------------------------------------------------------------------------
# simulate


INTS = mostly(["2", "3", "4", "1"], ["0", "-1", "abc", "2.5", ""], 8)


SIMULATE = dict(system="vdp", neurons="3", trials="2", bins="4", bin_ms=None, seed=None, base_rate=None, param=None,
                out=OutSpec(), json_out=False)


@examples("simulate")
# regressions found by this suite (fixed): --base-rate 1e300 was a traceback, 1e12 wrote an unreadable file
@example(**SIMULATE | {"base_rate": "1e300"})
@example(**SIMULATE | {"base_rate": "1e12"})
@given(system=mostly(SYSTEMS, ("lorentz", "", "VDP"), 10), neurons=INTS, trials=INTS, bins=INTS,
       bin_ms=mostly([None, "20", "5", "50", "1e-9"], ["0", "-1", "nan", "inf", "abc"], 10),
       seed=mostly([None, "0", "1"], ["-1", "abc"], 10),
       base_rate=mostly([None, "10", "0.5", "1e4"], ["0", "-5", "nan", "inf", "1e12", "1e300"], 35),
       param=mostly([None, None, "0", "1", "-3"], ["50", "nan", "1e300", "-inf"], 10), out=out_specs,
       json_out=st.booleans())
def test_simulate(system, neurons, trials, bins, bin_ms, seed, base_rate, param, out, json_out):
    count("simulate")
    with workdir() as name:
        tmp = Path(name)
        layout(tmp)
        path = out_path(tmp, out, None)
        args = ["simulate", system, "--out", path, "--neurons", neurons, "--trials", trials, "--bins", bins]
        for option, value in (("--bin-ms", bin_ms), ("--seed", seed), ("--base-rate", base_rate), ("--param", param)):
            if value is not None:
                args += [option, value]
        args += flag("--overwrite", out.overwrite) + flag("--json", json_out)
        before = snapshot(tmp)
        res = xfads(*args)
        check(res, before, [tmp], [], json_out)
        if res.code == 0:
            assert h5py.is_hdf5(str(path)), res.describe()
            with h5py.File(path, "r") as f:
                assert ("units" in f) if path.suffix == ".nwb" else ("spikes" in f)


# --------------------------------------------------------------------------------------------------
# fit


@dataclass(frozen=True)
class FitOut:
    state: str = "absent"  # absent | missing_parents | empty_dir | other_file | only_config | run | file
    overwrite: bool = False
    resume: str = "no"  # no | resume | auto | both


fit_outs = st.builds(FitOut, mostly(["absent"], ["missing_parents", "empty_dir", "other_file", "only_config", "run",
                                                 "run", "file"], 35),
                     chance(25), mostly(["no"], ["resume", "auto", "auto", "both"], 20))


@st.composite
def fit_inputs(draw):
    """('files', [specs]) | ('directory', [specs]) | ('manifest', [specs], per-session data options)
    | ('base', which): a copy of a shared run's recording (so that --resume of a copied run can match)."""
    kind = draw(mostly(["files"], ["two", "directory", "manifest", "base", "base"], 35))
    if kind == "base":
        return ("base", draw(st.sampled_from(["nwb", "h5"])))
    if kind == "files":
        return ("files", [draw(weighted((45, nwb_specs()), (50, h5_specs()), (5, junk_specs)))])
    specs = draw(st.lists(weighted((40, nwb_specs(n_units=3)), (40, h5_specs(neurons=3)), (20, any_recording)),
                          min_size=2, max_size=2))
    options = draw(mostly([None, {}], [{"bin_ms": 10}, {"bogus": 1}, "text"], 30))
    return (kind if kind != "two" else "files", specs, options)


def write_fit_inputs(folder: Path, inputs, world: World) -> list[Path]:
    if inputs[0] == "base":
        src = world.files[inputs[1]]
        return [Path(shutil.copyfile(src, folder / src.name))]
    specs = inputs[1]
    if inputs[0] == "files":
        return [write_recording(folder, spec, f"rec{i}") for i, spec in enumerate(specs)]
    sub = folder / "sessions"
    sub.mkdir()
    paths = [write_recording(sub, spec, f"rec{i}") for i, spec in enumerate(specs)]
    if inputs[0] == "directory":
        return [sub]
    options = inputs[2]
    entries = [{"path": p.name} | ({"data": options} if options is not None else {}) for p in paths]
    manifest = folder / "sessions.yaml"
    manifest.write_text(yaml.safe_dump({"sessions": entries}) if options != "text" else "sessions: [")
    return [manifest]


def fit_out(tmp: Path, spec: FitOut, world: World, inputs) -> Path:
    out = tmp / "out" / "run"
    if spec.state == "missing_parents":
        out = tmp / "missing" / "deeper" / "run"
    elif spec.state == "empty_dir":
        out.mkdir()
    elif spec.state == "other_file":
        out.mkdir()
        (out / "notes.txt").write_text("mine\n")
    elif spec.state == "only_config":
        out.mkdir()
        (out / "config.yaml").write_text("seed: 0\n")
    elif spec.state == "run":
        shutil.copytree(world.runs[inputs[1] if inputs[0] == "base" else "h5"], out)
    elif spec.state == "file":
        out.write_text("not a run\n")
    return out


FIT = dict(inputs=("base", "h5"), sets=[], config=None, out=FitOut(), max_epochs="1", time_limit=None, seed=None,
           threads="1", device="cpu", deterministic=False, json_out=False, quiet=True, plot=False)


@examples("fit")
# regressions found by this suite (fixed): a Gaussian model's negative means crashed the scoring after the
# run was written; eval.context_bins >= the trial length crashed the forecast scores (final and per
# epoch); data.split=[0,0,0] was a traceback in the loader
@example(**FIT | {"sets": ["model.likelihood=gaussian"]})
@example(**FIT | {"sets": ["eval.context_bins=100"]})
@example(**FIT | {"sets": ["train.select=fp_bps", "eval.context_bins=10"]})
@example(**FIT | {"sets": ["data.split=[0,0,0]"]})
@given(inputs=fit_inputs(), sets=set_items, config=config_files, out=fit_outs,
       max_epochs=mostly(["1"], ["2", "0", "-1", "x"], 15), time_limit=mostly([None], ["0.5", "0", "-1", "1e-9"], 15),
       seed=mostly([None], ["3", "-1"], 15), threads=mostly(["1"], ["0", "x", "auto"], 10),
       device=mostly(["cpu"], ["auto", "cuda", "cuda:3", "tpu"], 10), deterministic=chance(15),
       json_out=st.booleans(), quiet=st.booleans(), plot=chance(3))
def test_fit(world, inputs, sets, config, out, max_epochs, time_limit, seed, threads, device, deterministic,
             json_out, quiet, plot):
    with workdir() as name:
        tmp = Path(name)
        folder = layout(tmp)
        data = write_fit_inputs(folder, inputs, world)
        run = fit_out(tmp, out, world, inputs)
        args = ["fit", *data, "--out", run, "--max-epochs", max_epochs, "--threads", threads, "--device", device,
                *FAST, *set_args(sets), *write_config(folder, config)]
        if time_limit is not None:
            args += ["--time-limit", time_limit]
        if seed is not None:
            args += ["--seed", seed]
        args += flag("--overwrite", out.overwrite) + flag("--deterministic", deterministic) + flag("--plot", plot)
        args += {"no": [], "resume": ["--resume"], "auto": ["--resume-auto"], "both": ["--resume", "--resume-auto"]}[out.resume]
        args += flag("--json", json_out) + flag("--quiet", quiet)
        count("fit")
        before = snapshot(tmp) | world.snapshot()
        res = xfads(*args)
        check(res, before, [tmp, world.root], [folder, world.root], json_out)
        if res.code == 0:
            check_run_dir(run)
            assert json.loads((run / "summary.json").read_text())["epochs"] >= 1


# --------------------------------------------------------------------------------------------------
# smooth and forecast: the shared single-session runs (and the meta run) on generated recordings


@dataclass(frozen=True)
class RunRef:
    which: str = "h5"  # h5 | nwb | meta: a shared run
    form: str = "dir"  # dir | best | last | copy_pt (best.pt copied into tmp) | missing | empty_dir | garbage_pt | not_checkpoint


run_refs = st.builds(RunRef, st.sampled_from(["h5", "nwb", "meta"]),
                     mostly(["dir"], ["best", "last", "copy_pt", "copy_pt", "missing", "empty_dir", "garbage_pt",
                                      "not_checkpoint"], 30))


def run_path(tmp: Path, ref: RunRef, world: World) -> Path:
    run = world.runs[ref.which]
    if ref.form == "dir":
        return run
    if ref.form in ("best", "last"):
        return run / f"{ref.form}.pt"
    if ref.form == "copy_pt":
        return Path(shutil.copyfile(run / "best.pt", tmp / "in" / "model.pt"))
    if ref.form == "missing":
        return tmp / "no_such_run"
    if ref.form == "empty_dir":
        (tmp / "empty_run").mkdir()
        return tmp / "empty_run"
    path = tmp / "in" / "model.pt"
    if ref.form == "garbage_pt":
        path.write_bytes(b"PK\x03\x04 not a checkpoint")
    else:
        torch.save({"format": "something-else", "model": {}}, path)
    return path


def run_data(which: str):
    """Mostly recordings the run can read (its neurons, any trials and odd values), sometimes anything."""
    compatible = {"nwb": nwb_specs(n_units=4, clean=50), "h5": h5_specs(neurons=4, clean=50),
                  "meta": st.sampled_from(["s0", "s1"])}[which]
    return weighted((20, st.just("same")), (65, compatible), (15, any_recording))


@st.composite
def run_cases(draw) -> tuple[RunRef, object]:
    ref = draw(run_refs)
    return ref, draw(run_data(ref.which))


def write_run_data(folder: Path, spec, ref: RunRef, world: World) -> Path:
    if spec in ("same", "s0", "s1"):
        src = world.files[spec if spec != "same" else {"meta": "s0"}.get(ref.which, ref.which)]
        return Path(shutil.copyfile(src, folder / src.name))
    return write_recording(folder, spec, "rec")


def check_result_file(dest: Path, fmt: str, module: str, res: Outcome, json_out: bool) -> None:
    assert dest.is_file(), f"exit 0 but no {dest}\n{res.describe()}"
    with h5py.File(dest, "r") as f:
        group = f if fmt == "h5" else f[f"processing/{module}"]
        names = list(group)
        assert any("rates_mean" in n for n in names), f"{dest} lacks rates_mean: {names}"
        if fmt == "h5" and json_out:
            assert f["rates_mean"].shape[0] == json.loads(res.stdout)["trials"]


SPLITS = mostly(["all"], ["train", "valid", "test", "bogus"], 25)
FORMATS = mostly(["h5"], ["nwb", "nwb", "csv"], 25)
data_sets = weighted((70, st.just([])), (30, st.lists(one_set, min_size=1, max_size=1)))


SMOOTH = dict(case=(RunRef("h5"), "same"), out=OutSpec(), split="all", mode=None, samples=None, fmt="h5", sets=[],
              device="cpu", threads="1", json_out=False, quiet=True, plot=False)


def run_case_paths(tmp: Path, spec, ref, out, world) -> tuple[Path, Path, Path, Path]:
    """(data folder, recording, run, output path) of one smooth/forecast example in tmp."""
    folder = layout(tmp)
    rec = write_run_data(folder, spec, ref, world)
    run = run_path(tmp, ref, world)
    return folder, rec, run, out_path(tmp, out, rec, run if run.is_file() and tmp in run.parents else None)


def check_run_command(world, case, out, fmt: str, json_out: bool, module: str, args_for) -> None:
    """One smooth/forecast example: its files laid out, the command args_for(run, recording, output)
    builds run, every invariant checked (and the output file when it succeeded)."""
    ref, spec = case
    with workdir() as name:
        tmp = Path(name)
        folder, rec, run, dest = run_case_paths(tmp, spec, ref, out, world)
        args = args_for(run, rec, dest)
        before = snapshot(tmp) | world.snapshot()
        res = xfads(*args)
        inputs = [folder, world.root] + ([run] if run.exists() else [])
        check(res, before, [tmp, world.root], inputs, json_out)
        if res.code == 0:
            check_result_file(dest, fmt, module, res, json_out)


@examples("smooth")
# regressions found by this suite (fixed): --out naming the input or the checkpoint read, with --overwrite,
# replaced it; --samples -1 was a traceback and 0 silently the default; a Gaussian model's negative means
# crashed the bits-per-spike scoring
@example(**SMOOTH | {"out": OutSpec("input", overwrite=True)})
@example(**SMOOTH | {"case": (RunRef("h5", "copy_pt"), "same"), "out": OutSpec("checkpoint", ".pt", True)})
@example(**SMOOTH | {"samples": "-1"})
@example(**SMOOTH | {"samples": "0"})
@given(case=run_cases(), out=out_specs, split=SPLITS,
       mode=mostly([None], ["smoother", "filter", "two_filter", "bogus"], 25),
       samples=mostly([None], ["1", "3", "0", "-1", "x"], 25), fmt=FORMATS, sets=data_sets,
       device=mostly(["cpu"], ["cuda", "bogus"], 8), threads=mostly(["1"], ["0", "x"], 8),
       json_out=st.booleans(), quiet=st.booleans(), plot=chance(4))
def test_smooth(world, case, out, split, mode, samples, fmt, sets, device, threads, json_out, quiet, plot):
    count("smooth")

    def args_for(run, rec, dest):
        args = ["smooth", run, rec, "--out", dest, "--split", split, "--format", fmt, "--device", device,
                "--threads", threads, *set_args(sets)]
        args += (["--mode", mode] if mode else []) + (["--samples", samples] if samples else [])
        return args + flag("--overwrite", out.overwrite) + flag("--json", json_out) + flag("--quiet", quiet) + flag(
            "--plot", plot)

    check_run_command(world, case, out, fmt, json_out, "xfads_smooth", args_for)


BINS = mostly(["3", "6", "2", "1"], ["0", "-2", "40", "x"], 20)
MS = mostly(["60", "20", "40"], ["0", "-20", "nan", "inf", "-inf", "1e300", "1e7", "15"], 40)


@st.composite
def windows(draw):
    """--context/--context-ms and --horizon/--horizon-ms: exactly one of each mostly, else both or none."""
    args = []
    for name in ("context", "horizon"):
        kind = draw(mostly(["bins", "bins", "ms"], ["both", "neither"], 10))
        if kind in ("bins", "both"):
            args += [f"--{name}", draw(BINS)]
        if kind in ("ms", "both"):
            args += [f"--{name}-ms", draw(MS)]
    return args


FORECAST = dict(case=(RunRef("h5"), "same"), out=OutSpec(), window=["--context", "3", "--horizon", "2"], samples="2",
                mode="filter", split="all", save_samples=False, fmt="h5", sets=[], json_out=False, quiet=True, plot=False)


@examples("forecast")
# regressions found by this suite (fixed): NaN/inf --context-ms/--horizon-ms were tracebacks; --out naming
# the input replaced it; data.split=[0,0,0] was a traceback in the loader
@example(**FORECAST | {"window": ["--context-ms", "nan", "--horizon", "2"]})
@example(**FORECAST | {"window": ["--context", "3", "--horizon-ms", "inf"]})
@example(**FORECAST | {"out": OutSpec("input", overwrite=True)})
@example(**FORECAST | {"sets": ["data.split=[0,0,0]"]})
@given(case=run_cases(), out=out_specs, window=windows(),
       samples=mostly(["3", "2", "1"], ["0", "-3", "x"], 10), mode=mostly(["filter"], ["smoother", "bogus"], 20),
       split=SPLITS, save_samples=st.booleans(), fmt=FORMATS, sets=data_sets, json_out=st.booleans(),
       quiet=st.booleans(), plot=chance(4))
def test_forecast(world, case, out, window, samples, mode, split, save_samples, fmt, sets, json_out, quiet, plot):
    count("forecast")

    def args_for(run, rec, dest):
        args = ["forecast", run, rec, "--out", dest, *window, "--mode", mode, "--split", split, "--format", fmt,
                "--threads", "1", "--samples", samples, *set_args(sets)]
        args += flag("--save-samples", save_samples) + flag("--overwrite", out.overwrite)
        return args + flag("--json", json_out) + flag("--quiet", quiet) + flag("--plot", plot)

    check_run_command(world, case, out, fmt, json_out, "xfads_forecast", args_for)


# --------------------------------------------------------------------------------------------------
# embed and adapt: the shared meta run


embed_files = mostly([1, 2, 2], [3], 20).flatmap(lambda n: st.lists(
    weighted((75, st.sampled_from(["s0", "s1"])), (10, h5_specs(neurons=3)), (15, any_recording)), min_size=n, max_size=n))


EMBED = dict(files=["s0", "s1"], which="meta", out=OutSpec(), sets=[], json_out=False, quiet=True, plot=False)


@examples("embed")
# regressions found by this suite (fixed): --out naming an input recording or the checkpoint replaced it
@example(**EMBED | {"out": OutSpec("input", overwrite=True)})
@example(**EMBED | {"which": "copy_pt", "out": OutSpec("checkpoint", ".pt", True)})
@given(files=embed_files, which=mostly(["meta"], ["h5", "missing", "copy_pt"], 15), out=out_specs,
       sets=data_sets, json_out=st.booleans(), quiet=st.booleans(), plot=chance(5))
def test_embed(world, files, which, out, sets, json_out, quiet, plot):
    count("embed")
    with workdir() as name:
        tmp = Path(name)
        folder = layout(tmp)
        paths = []
        for i, spec in enumerate(files):
            if spec in ("s0", "s1"):
                sub = folder / f"copy{i}"
                sub.mkdir()
                paths.append(Path(shutil.copyfile(world.files[spec], sub / world.files[spec].name)))
            else:
                paths.append(write_recording(folder, spec, f"rec{i}"))
        if which == "copy_pt":
            run = Path(shutil.copyfile(world.runs["meta"] / "best.pt", folder / "meta.pt"))
        else:
            run = world.runs[which] if which != "missing" else tmp / "no_run"
        dest = out_path(tmp, out, paths[0], run if which == "copy_pt" else None)
        args = ["embed", run, *paths, "--out", dest, "--threads", "1", *set_args(sets)]
        args += flag("--overwrite", out.overwrite) + flag("--json", json_out) + flag("--quiet", quiet)
        args += flag("--plot", plot)
        before = snapshot(tmp) | world.snapshot()
        res = xfads(*args)
        check(res, before, [tmp, world.root], [folder, world.root], json_out)
        if res.code == 0:
            with h5py.File(dest, "r") as f:
                assert f["embed_mean"].shape[0] == len(paths)


@dataclass(frozen=True)
class AdaptOut:
    state: str = "absent"  # absent | missing_parents | run | file | source_run
    overwrite: bool = False


adapt_outs = st.builds(AdaptOut, mostly(["absent"], ["missing_parents", "run", "file", "source_run"], 30), chance(30))


ADAPT = dict(new=H5Spec(neurons=5), which="meta", out=AdaptOut(), trials="2", max_epochs="1", time_limit=None,
             refine=True, sets=[], json_out=False, quiet=True, plot=False)


@examples("adapt")
# regressions found by this suite (fixed): --max-epochs 0 wrote a run directory before failing; --time-limit
# nan/0 was accepted; --out naming the run being adapted (with --overwrite) deleted its checkpoints;
# train.batch_size left unset by --set was a traceback after the run was written
@example(**ADAPT | {"max_epochs": "0"})
@example(**ADAPT | {"time_limit": "nan"})
@example(**ADAPT | {"out": AdaptOut("source_run", True)})
@example(**ADAPT | {"sets": ["train={lr: 0.1}"]})
@example(**ADAPT | {"sets": ["train.batch_size=null"], "refine": False})
@given(new=weighted((55, h5_specs(clean=60)), (20, nwb_specs(clean=60)), (10, st.sampled_from(["s0", "s1"])),
                   (15, any_recording)),
       which=mostly(["meta"], ["h5"], 10), out=adapt_outs, trials=mostly(["2", "3", "1", "4"], ["0", "-1", "100", "x"], 15),
       max_epochs=mostly(["1"], ["2", "0", "-1"], 15), time_limit=mostly([None], ["1", "0", "-1", "nan", "inf"], 20),
       refine=st.booleans(), sets=data_sets, json_out=st.booleans(), quiet=st.booleans(), plot=chance(4))
def test_adapt(world, new, which, out, trials, max_epochs, time_limit, refine, sets, json_out, quiet, plot):
    count("adapt")
    with workdir() as name:
        tmp = Path(name)
        folder = layout(tmp)
        if new in ("s0", "s1"):
            rec = Path(shutil.copyfile(world.files[new], folder / world.files[new].name))
        else:
            rec = write_recording(folder, new, "new")
        source = world.runs[which]
        dest = tmp / "out" / "adapted"
        if out.state == "missing_parents":
            dest = tmp / "missing" / "deeper" / "adapted"
        elif out.state == "run":
            shutil.copytree(world.runs["meta"], dest)
        elif out.state == "file":
            dest.write_text("not a run\n")
        elif out.state == "source_run":  # a copy of the run being adapted, given as both run and --out
            shutil.copytree(source, dest)
            source = dest
        args = ["adapt", source, rec, "--out", dest, "--trials", trials, "--max-epochs", max_epochs, "--threads", "1",
                "--refine-embedding" if refine else "--encoder-embedding", *set_args(sets)]
        if time_limit is not None:
            args += ["--time-limit", time_limit]
        args += flag("--overwrite", out.overwrite) + flag("--json", json_out) + flag("--quiet", quiet)
        args += flag("--plot", plot)
        before = snapshot(tmp) | world.snapshot()
        res = xfads(*args)
        inputs = [folder, world.root] + ([source] if out.state == "source_run" else [])
        check(res, before, [tmp, world.root], inputs, json_out)
        if res.code == 0:
            check_run_dir(dest)


# --------------------------------------------------------------------------------------------------
# Range errors (config.py) and the example count


@pytest.mark.parametrize("item", ["train.lr=nan", "train.lr=inf", "train.lr=1e300", "train.grad_clip=nan",
                                  "eval.behavior_lag_ms=nan", "model.dynamics_hidden=1000000000000000",
                                  "train.time_limit_min=nan", "data.heldout_fraction=nan", "model.read_dims=3"])
def test_config_values_out_of_range_exit_2(world, item, tmp_path):
    data = Path(shutil.copyfile(world.files["h5"], tmp_path / "base.h5"))
    res = xfads("fit", data, "--out", tmp_path / "run", "--max-epochs", 1, "--quiet", "--threads", 1, *FAST,
                "--set", item)
    assert res.error is None and "Traceback" not in res.stdout + res.stderr, res.describe()
    assert res.code == 2 and res.stderr.startswith("error: "), res.describe()
    assert not (tmp_path / "run").exists()


FUZZ_TESTS = ("test_inspect", "test_simulate", "test_fit", "test_smooth", "test_forecast", "test_embed", "test_adapt")


def test_examples_ran(request):
    """At least 500 generated cases ran in this session (when every property test above ran)."""
    selected = {item.name for item in request.session.items}
    if not set(FUZZ_TESTS) <= selected:
        pytest.skip("not every property test was selected in this session")
    if SCALE < 1:
        pytest.skip(f"XFADS_FUZZ_SCALE={SCALE:g}: a reduced local run")
    total = sum(EXAMPLES.values())
    print(f"property examples run: {total} {EXAMPLES}")
    assert set(EXAMPLES) == set(MAX_EXAMPLES), EXAMPLES
    assert total >= 500, EXAMPLES
