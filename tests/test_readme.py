"""README.md's shell command blocks and ```python blocks run as written (issues 13, 29), on fixtures and with tiny budgets.

Every fenced block of shell commands in README.md (``` without a language, ```bash, ```sh, ...) runs
line by line in its own temporary directory (later lines use what earlier lines wrote) through
`bash -e -o pipefail`, with this venv's `xfads` and `python` first on PATH and XFADS_THREADS=1. Each
line must exit 0, and the outputs the README says a command writes must exist. The README's text is
changed only as the tables below say:

  PLACEHOLDERS  file names the README uses for the reader's data -> what the test puts under that very
                name in the block's directory (the command text stays as written);
  BUDGET, SIM_TRIALS
                the only text substitutions: minutes of training -> 2 epochs, simulated recordings ->
                at most 20 trials;
  URLS          remote recordings the README reads (DATA given as a URL) -> what the test serves in their
                place from tests/range_server.py on 127.0.0.1 (the URL in the command becomes the server's);
  EXCLUDED      lines that cannot run in a test, each with its reason;
  NOT_COMMANDS  no-language blocks that are not shell (the layout diagram).
The whole file takes about 55 s of CPU on one thread (the commands run one after another).

The ```yaml sessions manifest is written to a file next to placeholder recordings and read by the
manifest loader that `xfads fit` uses (xfads_cli/data/sessions.py).

Each ```python block (the Python API, docs/api.md) runs as one script in its own temporary directory with
the same environment, changed as the tables say: the file names it reads (string literals that look
like paths, before a call of the block writes them: `xfads.simulate(_, OUT)`, `xfads.fit(_, OUT)`) come
from PLACEHOLDERS; `time_limit=N` becomes PY_BUDGET and a simulation's `trials=N` at most SIM_TRIALS,
and a fit call without `time_limit` or `max_epochs` is a coverage problem.

test_every_readme_command_is_covered fails when README.md gains a block, a line, a subcommand, an option,
a placeholder file or a budget that these tables do not cover, so the README cannot escape the test.
"""

from __future__ import annotations

import ast
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np
import pytest

from conftest import FIXTURES, REAL, ROOT

README = ROOT / "README.md"

# ---------------------------------------------------------------------------------------------------
# The substitution tables (the only changes made to the README's commands)
# ---------------------------------------------------------------------------------------------------

# Simulated placeholder recordings: small, and long enough for the README's forecasts (context 40 +
# horizon 30 bins).
SIM_SIZE = "--neurons 8 --trials 16 --bins 72"

# README name -> what the test puts under that name into the block's directory. Sources: `fixture F`
# (data_fixtures/F), `real F` (../shared/data/real/F; a line that needs it is skipped when absent),
# `simulate ARGS` (`xfads simulate ARGS SIM_SIZE`), `A | B` (a folder holding A and B),
# `... + trials column C = start_time + X s` (an event column added to the trials table).
# A placeholder is provided only to a block that reads it before one of its commands writes it.
PLACEHOLDERS = {
    "recording.nwb": "fixture lorenz_small.nwb",
    "lorenz.nwb": "fixture lorenz_small.nwb",  # read by the inspect block; the pipelines simulate their own
    "mc_maze.nwb": "fixture mc_maze_2trials.nwb",
    "human_mtl_sub-4_ses-4.nwb": "real human_mtl_sub-4_ses-4.nwb",
    "rat_hc_linear_track.nwb": "real rat_hc_linear_track.nwb",  # a continuous recording (no trials)
    # trial_aligned.yaml aligns on move_onset_time and decodes hand_vel: the MC_Maze fixture has hand_vel
    # but its trials table has no event times, so one is added (1 s into each ~3.2 s trial)
    "session.nwb": "fixture mc_maze_2trials.nwb + trials column move_onset_time = start_time + 1.0 s",
    "sessions/": "simulate hopf --param -0.5 --seed 1 | simulate hopf --param 1.5 --seed 2",
    "new_session.nwb": "simulate hopf --param 0.5 --seed 3",
    # the manifest's files; its first session aligns on go_cue_time with a [-200, 800] ms window
    "mouse1_day1.nwb": "simulate hopf --param -0.5 --seed 1 + trials column go_cue_time = start_time + 0.3 s",
    "mouse1_day2.nwb": "simulate hopf --param 1.5 --seed 2",
}

# README URL -> what tests/range_server.py serves in its place (a source as in PLACEHOLDERS); the line runs
# with the server's URL for it and XFADS_CACHE in the block's directory.
URLS = {
    "https://example.org/recordings/lorenz.nwb": "fixture lorenz_small.nwb",
}

# Budgets. Training commands: `--time-limit N` becomes BUDGET, and BUDGET is appended to one that has
# neither --time-limit nor --max-epochs. `xfads simulate`: a larger `--trials N` becomes SIM_TRIALS, which
# is appended when --trials is not given. Other subcommands run exactly as written.
BUDGET = "--max-epochs 2"
TRAINING = ("fit", "adapt", "compare")  # compare: --time-limit is each kind's budget
SIM_TRIALS = 20
# `xfads sweep`: a larger `--trials N` becomes SWEEP_TRIALS and every trial gets SWEEP_BUDGET (its epochs);
# `xfads sweep --status` runs as written.
SWEEP_TRIALS = 2
SWEEP_BUDGET = "--set train.max_epochs=2"
AS_WRITTEN = ("inspect", "smooth", "forecast", "embed", "stream", "generate")
# ```python blocks: the budget of a fit call (`time_limit=N` -> PY_BUDGET), and the API's calls that write a
# path (xfads.NAME -> the position of that argument, also given as out=)
PY_BUDGET = "max_epochs=2"
PY_WRITERS = {"simulate": 1, "fit": 1}
OUTPUT_OPTIONS = ("out", "stats")  # path options that name what a command writes (stream's --output is text)

# README lines that cannot run in a test (the line without its trailing comment -> reason).
EXCLUDED = {
    "git clone <this repo> xfads && cd xfads": "needs the network and a real URL; the test runs inside the clone",
    "make demo": "creates a fresh .venv and installs pinned torch (network, minutes); it runs the pipeline "
                 "block's commands, which run here",
    "make test": "a fresh install, then this very test suite",
    "xfads inspect dandi://000128/sub-Jenkins/sub-Jenkins_ses-full_desc-train_behavior+ecephys.nwb":
        "needs the network (the DANDI archive) and pip install 'xfads[dandi]'",
    "tensorboard --logdir run": "TensorBoard's web server, which runs until stopped; tests/test_tracking.py reads "
                                "the event files back with TensorBoard's own reader",
}

# Blocks without a language that are not shell commands (first line -> what it is).
NOT_COMMANDS = {
    "recording (NWB / HDF5)": "the package layout diagram ('Layout')",
}

SHELL_LANGS = {"", "bash", "sh", "shell", "console", "zsh"}

# ---------------------------------------------------------------------------------------------------
# What the README says the commands write
# ---------------------------------------------------------------------------------------------------

# "### `xfads forecast ...`": Datasets: ...; "### Many sessions": `embed.h5` holds ...
FORECAST_DATASETS = {"rates_mean", "rates_q05", "rates_q50", "rates_q95", "latents_mean", "counts", "context_counts",
                     "trial_ids", "split", "unit_ids", "start_s"}
EMBED_DATASETS = {"session_names", "embed_mean", "embed_var", "trial_embed_mean", "trial_embed_var", "trial_session",
                  "trial_ids"}
# "Every output file's root attributes: ..." (smooth and forecast)
ROOT_ATTRS = {"config", "checkpoint", "checkpoint_sha256", "input_path", "input_sha256", "session", "bin_ms", "versions",
              "metrics"}
# what a line's comment promises about an output's metrics (output name -> metric names containing these)
METRIC_CLAIMS = {"s1_smooth.h5": ("co_bps", "behavior_r2")}


def _first_table_after(heading: str) -> list[list[str]]:
    """Rows (cells, header row dropped) of the first markdown table after the line starting with `heading`."""
    lines = README.read_text().splitlines()
    start = next((i for i, line in enumerate(lines) if line.startswith(heading)), None)
    assert start is not None, f"README.md has no section '{heading}' any more; update tests/test_readme.py"
    rows = []
    for line in lines[start + 1:]:
        if not line.startswith("|"):
            if rows:
                break
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if not set(cells[0]) <= set("-: "):
            rows.append(cells)
    return rows[1:]


def run_dir_files() -> tuple[set[str], set[str]]:
    """The RUN_DIR table of `xfads fit`: files always written, and files written with --plot."""
    always, plot = set(), set()
    for name, content, *_ in _first_table_after("### `xfads fit"):
        (plot if "--plot" in content else always).update(re.findall(r"`([^`]+)`", name))
    assert {"config.yaml", "last.pt", "summary.json"} <= always, "README: the RUN_DIR table moved?"
    return always, plot


def smooth_datasets(heading: str = "### `xfads smooth") -> set[str]:
    """The HDF5 datasets table of `xfads smooth` (or of the section starting `heading`)."""
    names = set()
    for cells in _first_table_after(heading):
        names.update(re.findall(r"`([^`]+)`", cells[0]))
    assert {"rates_mean", "latents_mean"} <= names, "README: the smooth datasets table moved?"
    return names


CONTINUOUS = "### Recordings without trials"  # the section with the continuous smooth table
# forecast --at-s: the trial datasets but trial_ids/split, and the times asked for
FORECAST_AT_DATASETS = FORECAST_DATASETS - {"trial_ids", "split"} | {"at_s"}


# ---------------------------------------------------------------------------------------------------
# README parsing
# ---------------------------------------------------------------------------------------------------


@dataclass
class Block:
    lang: str
    heading: str
    lineno: int
    text: str

    ordinal: int = 1  # among the blocks under the same heading

    @property
    def id(self) -> str:
        slug = re.sub(r"[^a-z0-9]+", "-", self.heading.lower()).strip("-")[:40] or "top"
        return f"{slug}-{self.ordinal}"

    @property
    def lines(self) -> list[str]:
        """Command lines: backslash continuations joined, blank and comment-only lines dropped."""
        joined, current = [], ""
        for raw in self.text.splitlines():
            current += raw
            if current.endswith("\\"):
                current = current[:-1] + " "
                continue
            if current.strip() and not current.strip().startswith("#"):
                joined.append(current.strip())
            current = ""
        if current.strip():
            joined.append(current.strip())
        return joined


def readme_blocks() -> list[Block]:
    blocks, heading, inside = [], "", None
    for number, line in enumerate(README.read_text().splitlines(), 1):
        fence = re.match(r"^```\s*([\w+-]*)\s*$", line)
        if inside is None:
            if line.startswith("#"):
                heading = line.lstrip("#").strip().strip("`")
            elif fence:
                inside = Block(fence.group(1).lower(), heading, number, "")
        elif line.startswith("```"):
            inside.ordinal = 1 + sum(b.heading == inside.heading for b in blocks)
            blocks.append(inside)
            inside = None
        else:
            inside.text += line + "\n"
    assert inside is None, f"README.md: the block opened at line {inside.lineno} is never closed"
    return blocks


def shell_blocks() -> list[Block]:
    return [b for b in readme_blocks() if b.lang in SHELL_LANGS]


def manifest_blocks() -> list[Block]:
    import yaml

    return [b for b in readme_blocks() if b.lang in ("yaml", "yml")
            and isinstance(yaml.safe_load(b.text), dict) and "sessions" in yaml.safe_load(b.text)]


def runnable_blocks() -> list[Block]:
    """Shell blocks with at least one line that is not EXCLUDED."""
    return [b for b in shell_blocks() if not _not_commands(b) and any(split_comment(l)[0] not in EXCLUDED for l in b.lines)]


def _not_commands(block: Block) -> bool:
    first = block.text.strip().splitlines()[0].strip() if block.text.strip() else ""
    return first in NOT_COMMANDS


def _scan(text: str):
    """(index, char, quoted) over a shell line: quoted is True inside '...' or "..."."""
    quote, escaped = None, False
    for i, ch in enumerate(text):
        if escaped:
            escaped = False
            yield i, ch, True
            continue
        if ch == "\\" and quote != "'":
            escaped = True
            yield i, ch, True
            continue
        if quote:
            if ch == quote:
                quote = None
            yield i, ch, True
            continue
        if ch in "'\"":
            quote = ch
            yield i, ch, True
            continue
        yield i, ch, False


def split_comment(line: str) -> tuple[str, str]:
    """('code', '  # comment'): the code without its trailing comment, and the rest."""
    for i, ch, quoted in _scan(line):
        if ch == "#" and not quoted and (i == 0 or line[i - 1].isspace()):
            return line[:i].rstrip(), line[len(line[:i].rstrip()):]
    return line.rstrip(), ""


def split_segments(code: str) -> list[tuple[str, str]]:
    """[(command, separator after it)] split on unquoted |, ||, && and ;."""
    parts, start, skip = [], 0, 0
    for i, ch, quoted in _scan(code):
        if skip:
            skip -= 1
            continue
        if quoted or ch not in "|&;":
            continue
        sep = code[i:i + 2] if code[i:i + 2] in ("&&", "||") else ch
        if sep == "&":
            continue  # a background job or a redirection: not a separator we know
        parts.append((code[start:i], sep))
        start, skip = i + len(sep), len(sep) - 1
    parts.append((code[start:], ""))
    return parts


# ---------------------------------------------------------------------------------------------------
# Substitutions
# ---------------------------------------------------------------------------------------------------


def _with_budget(segment: str) -> str:
    words = shlex.split(segment)
    if len(words) < 2 or words[0] != "xfads":
        return segment
    body, tail = segment.rstrip(), segment[len(segment.rstrip()):]
    if words[1] in TRAINING:
        if "--time-limit" in words:
            return re.sub(r"--time-limit(\s+|=)\S+", BUDGET, body) + tail
        if "--max-epochs" not in words:
            return f"{body} {BUDGET}{tail}"
    if words[1] == "simulate":
        if "--trials" in words:
            return re.sub(r"--trials(\s+|=)(\d+)", lambda m: f"--trials {min(int(m.group(2)), SIM_TRIALS)}", body) + tail
        return f"{body} --trials {SIM_TRIALS}{tail}"
    if words[1] == "sweep" and "--trials" in words:
        trials = re.sub(r"--trials(\s+|=)(\d+)", lambda m: f"--trials {min(int(m.group(2)), SWEEP_TRIALS)}", body)
        return f"{trials} {SWEEP_BUDGET}{tail}"
    return segment


def substitute(line: str) -> str:
    """The README line as the test runs it: budgets applied, the comment kept (bash ignores it)."""
    code, comment = split_comment(line)
    return "".join(_with_budget(segment) + sep for segment, sep in split_segments(code)) + comment


# ---------------------------------------------------------------------------------------------------
# Analysis: what each line runs, reads and writes (shared by the drift guard and the runner)
# ---------------------------------------------------------------------------------------------------

FILE_IN_CODE = re.compile(r"""['"]([\w./-]+\.(?:h5|hdf5|nwb|csv|json|yaml|yml|pt|png))['"]""")


def _cli():
    import typer

    from xfads_cli.cli import app

    return typer.main.get_command(app)


def placeholder_for(path: str) -> str | None:
    for name in PLACEHOLDERS:
        if path == name or (name.endswith("/") and (path + "/").startswith(name)):
            return name
    return None


@dataclass
class Step:
    readme: str  # the README line
    command: str  # what runs
    xfads: list = field(default_factory=list)  # (subcommand, params) per xfads command of the line
    placeholders: set = field(default_factory=set)
    urls: set = field(default_factory=set)  # URLS rows the line reads
    repo_paths: set = field(default_factory=set)
    problems: list = field(default_factory=list)


def analyse(block: Block) -> list[Step]:
    """Every line of a shell block: covered by the tables, or a problem saying what is missing."""
    cli = _cli()
    steps, written = [], []

    def produced(path: str) -> bool:
        return any(path == w or path.startswith(w.rstrip("/") + "/") for w in written)

    def classify(step: Step, path: str, what: str):
        if produced(path):
            return
        if placeholder_for(path):
            step.placeholders.add(placeholder_for(path))
        elif (ROOT / path).exists() and not Path(path).is_absolute():
            step.repo_paths.add(Path(path).parts[0])
        else:
            step.problems.append(f"{what} reads '{path}', which no earlier line of the block writes, no PLACEHOLDERS "
                                 f"row provides and the repository does not hold")

    if _not_commands(block):
        return []
    for line in block.lines:
        code, _ = split_comment(line)
        if code in EXCLUDED:
            continue
        step = Step(line, substitute(line))
        steps.append(step)
        for original, _sep in split_segments(code):
            try:
                words = shlex.split(original)
            except ValueError as exc:
                step.problems.append(f"cannot parse '{original}': {exc}")
                continue
            if not words:
                continue
            if words[0] == "python" and words[1:2] == ["-c"]:
                for path in FILE_IN_CODE.findall(" ".join(words[2:])):
                    classify(step, path, "python -c")
                continue
            if words[0] != "xfads":
                step.problems.append(f"'{original.strip()}' is neither an xfads nor a python -c command; run it or add "
                                     f"it to EXCLUDED with a reason")
                continue
            if len(words) < 2 or words[1] not in cli.commands:
                step.problems.append(f"'{original.strip()}': xfads has no subcommand '{' '.join(words[1:2])}'")
                continue
            sub = words[1]
            if sub not in TRAINING + ("simulate", "sweep") + AS_WRITTEN:
                step.problems.append(f"xfads {sub} is in no budget table (TRAINING, simulate, AS_WRITTEN)")
            budgeted = shlex.split(_with_budget(original))
            params = None
            for args, label in ((words[2:], "README"), (budgeted[2:], "substituted")):
                try:
                    params = cli.commands[sub].make_context(sub, list(args)).params
                except Exception as exc:  # unknown option, missing argument, bad value
                    step.problems.append(f"'{original.strip()}' ({label}): {exc}")
                    params = None
                    break
            if params is None:
                continue
            if sub in TRAINING and not (budgeted.count("--max-epochs") == 1 and "--time-limit" not in budgeted):
                step.problems.append(f"'{original.strip()}': training command without the test budget")
            if sub == "sweep" and params["trials"] is not None and SWEEP_BUDGET not in _with_budget(original):
                step.problems.append(f"'{original.strip()}': sweep without the test budget")
            if sub == "simulate" and params["trials"] > SIM_TRIALS:
                step.problems.append(f"'{original.strip()}': simulates {params['trials']} trials (> {SIM_TRIALS})")
            for name, value in params.items():
                values = value if isinstance(value, (list, tuple)) else [value]
                for v in values:
                    if v is None:  # an optional argument not given
                        continue
                    if name == "data" and "://" in str(v):  # DATA is text: a path or a URL
                        if str(v) in URLS:
                            step.urls.add(str(v))
                        else:
                            step.problems.append(f"xfads {sub} reads the URL '{v}', which URLS does not serve")
                    elif (isinstance(v, Path) or name == "data") and name not in OUTPUT_OPTIONS:
                        classify(step, str(Path(v)), f"xfads {sub}")
            step.xfads.append((sub, params))
            written += [str(params[name]) for name in OUTPUT_OPTIONS if isinstance(params.get(name), Path)]
    return steps


def _placeholder_sources(spec: str) -> list[str]:
    return [part.strip() for part in spec.split("|")]


def _needs_real(step: Step) -> list[str]:
    return [name for name in step.placeholders if any(s.startswith("real ") for s in _placeholder_sources(PLACEHOLDERS[name]))]


# ---------------------------------------------------------------------------------------------------
# Placeholders: built once per module, copied under the README's names
# ---------------------------------------------------------------------------------------------------


def add_trials_column(path: Path, column: str, offset_s: float) -> None:
    """Add an event column (start_time + offset) to an NWB file's trials table (h5py, NWB's layout)."""
    with h5py.File(path, "a") as f:
        trials = f["intervals/trials"]
        data = trials.create_dataset(column, data=trials["start_time"][()] + offset_s)
        data.attrs.update({"description": f"start_time + {offset_s} s (added by tests/test_readme.py)",
                           "namespace": "hdmf-common", "neurodata_type": "VectorData", "object_id": str(uuid.uuid4())})
        trials.attrs["colnames"] = np.array([*trials.attrs["colnames"], column], dtype=object)


class Placeholders:
    def __init__(self, cache: Path):
        self.cache = cache
        self.built: dict[str, Path] = {}

    def source(self, spec: str) -> Path:
        """One source (no '|'): a path to a read-only built file."""
        if spec in self.built:
            return self.built[spec]
        base, _, column = spec.partition(" + trials column ")
        kind, _, rest = base.partition(" ")
        if kind == "fixture":
            path = FIXTURES / rest
        elif kind == "real":
            path = REAL / rest
            if not path.is_file():
                pytest.skip(f"{path} is not available")
        elif kind == "simulate":
            from typer.testing import CliRunner

            from xfads_cli.cli import app

            path = self.cache / f"sim{len(self.built)}.nwb"
            args = ["simulate", *shlex.split(rest), "--out", str(path), *shlex.split(SIM_SIZE)]
            result = CliRunner().invoke(app, args)
            assert result.exit_code == 0, f"xfads {' '.join(args)}\n{result.output}"
        else:
            raise AssertionError(f"PLACEHOLDERS: unknown source kind in '{spec}'")
        if column:
            match = re.fullmatch(r"(\w+) = start_time \+ ([\d.]+) s", column.strip())
            assert match, f"PLACEHOLDERS: cannot read the column in '{spec}'"
            copy = self.cache / f"col{len(self.built)}_{path.name}"
            shutil.copyfile(path, copy)
            add_trials_column(copy, match.group(1), float(match.group(2)))
            path = copy
        self.built[spec] = path
        return path

    def provide(self, name: str, directory: Path) -> None:
        sources = _placeholder_sources(PLACEHOLDERS[name])
        if name.endswith("/"):
            folder = directory / name
            folder.mkdir(parents=True)
            for i, spec in enumerate(sources, 1):
                src = self.source(spec)
                shutil.copyfile(src, folder / f"session{i}{src.suffix}")
        else:
            assert len(sources) == 1, f"PLACEHOLDERS: '{name}' is a file and takes one source"
            (directory / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(self.source(sources[0]), directory / name)


@pytest.fixture(scope="module")
def placeholders(tmp_path_factory):
    return Placeholders(tmp_path_factory.mktemp("readme_placeholders"))


@pytest.fixture(scope="module")
def url_server(tmp_path_factory, placeholders):
    """URLS served by a range-request server on 127.0.0.1: README URL -> the server's URL."""
    from range_server import RangeServer

    served = tmp_path_factory.mktemp("readme_urls")
    with RangeServer(served) as server:
        urls = {}
        for i, (url, spec) in enumerate(URLS.items()):
            name = f"{i}_{url.rsplit('/', 1)[-1]}"
            shutil.copyfile(placeholders.source(spec), served / name)
            urls[url] = server.url(name)
        yield urls


# ---------------------------------------------------------------------------------------------------
# The drift guard
# ---------------------------------------------------------------------------------------------------


def test_every_readme_command_is_covered():
    """Fails when README.md gains a block, line, subcommand, option or file the tables do not cover."""
    problems = []
    blocks = readme_blocks()
    for block in blocks:
        if block.lang not in SHELL_LANGS | {"yaml", "yml", "python"}:
            problems.append(f"README.md:{block.lineno}: a ```{block.lang} block: is it shell? add its language to "
                            f"SHELL_LANGS or decide how to test it")
    for block in shell_blocks():
        for step in analyse(block):
            problems += [f"README.md:{block.lineno} ({block.heading}): {p}" for p in step.problems]
    texts = [split_comment(line)[0] for b in shell_blocks() for line in b.lines]
    problems += [f"EXCLUDED names '{line}', which README.md no longer holds" for line in EXCLUDED if line not in texts]
    firsts = [b.text.strip().splitlines()[0].strip() for b in shell_blocks() if b.text.strip()]
    problems += [f"NOT_COMMANDS names '{line}', which README.md no longer holds" for line in NOT_COMMANDS if line not in firsts]
    for block in python_blocks():
        problems += [f"README.md:{block.lineno} ({block.heading}): {p}" for p in analyse_python(block).problems]
    used = {p for b in shell_blocks() for s in analyse(b) for p in s.placeholders} | set(_manifest_files())
    used |= {p for b in python_blocks() for p in analyse_python(b).placeholders}
    problems += [f"PLACEHOLDERS row '{name}' is used by no README block" for name in PLACEHOLDERS if name not in used]
    read = {u for b in shell_blocks() for s in analyse(b) for u in s.urls}
    problems += [f"URLS row '{url}' is read by no README line" for url in URLS if url not in read]
    problems += [f"the manifest names '{path}', which PLACEHOLDERS does not provide"
                 for path in _manifest_files() if path not in PLACEHOLDERS]
    outs = {str(params.get("out")) for b in shell_blocks() for s in analyse(b) for _, params in s.xfads}
    problems += [f"METRIC_CLAIMS names '{name}', which no README command writes" for name in METRIC_CLAIMS if name not in outs]
    assert not problems, "README.md has commands this test does not cover:\n  " + "\n  ".join(problems)
    # the guard sees the blocks it should: the commands of every section, run below
    assert runnable_blocks() and manifest_blocks() and python_blocks()


def _manifest_files() -> list[str]:
    import yaml

    return [entry["path"] if isinstance(entry, dict) else entry
            for block in manifest_blocks() for entry in yaml.safe_load(block.text)["sessions"]]


def test_substitutions_are_the_tables():
    """The substitution is mechanical: budgets only, the rest of each line as written."""
    assert substitute("xfads fit a.nwb --out r --time-limit 5 --plot") == "xfads fit a.nwb --out r --max-epochs 2 --plot"
    assert substitute("xfads fit d/ --out r   # comment") == "xfads fit d/ --out r --max-epochs 2   # comment"
    assert substitute("xfads adapt r n.nwb --trials 8 --out r2") == "xfads adapt r n.nwb --trials 8 --out r2 --max-epochs 2"
    assert substitute("xfads simulate lorenz --out l.nwb --trials 150") == "xfads simulate lorenz --out l.nwb --trials 20"
    assert substitute("xfads simulate vdp --out v.h5  # x") == "xfads simulate vdp --out v.h5 --trials 20  # x"
    assert substitute("xfads sweep a.nwb --space s.yaml --out w --trials 24") == \
        "xfads sweep a.nwb --space s.yaml --out w --trials 2 --set train.max_epochs=2"
    line = "xfads inspect l.nwb --json | python -c \"import json,sys; print(1)\""
    assert substitute(line) == line
    assert split_comment("python -c \"print('#')\"  # c") == ("python -c \"print('#')\"", "  # c")


# ---------------------------------------------------------------------------------------------------
# Running the blocks
# ---------------------------------------------------------------------------------------------------


def _env() -> dict:
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["XFADS_THREADS"] = "1"
    return env


def _check_outputs(sub: str, params: dict, cwd: Path, step: Step) -> None:
    out = params.get("out")
    if not isinstance(out, Path):
        return
    path = cwd / out
    where = f"'{step.readme}' should write {out}"
    if sub == "sweep":  # a sweep directory: the study, the trials' run directories, the best one
        assert (path / "journal.log").is_file() and (path / "best" / "summary.json").is_file(), where
        return
    if sub == "compare":  # a directory of run directories, one per kind, and summary.json
        kinds = json.loads((path / "summary.json").read_text())["kinds"]
        always, _ = run_dir_files()
        missing = sorted(f"{kind}/{name}" for kind in kinds for name in always if not (path / kind / name).is_file())
        assert kinds and not missing, f"{where} holding a run directory per kind; missing {missing}"
        return
    if sub in TRAINING:
        always, with_plot = run_dir_files()
        expected = always | (with_plot if params.get("plot") else set())
        missing = sorted(name for name in expected if not (path / name).is_file())
        assert not missing, f"{where} holding {sorted(expected)}; missing {missing}"
        json.loads((path / "summary.json").read_text())
        return
    assert path.is_file(), where
    if params.get("plot"):
        assert sorted(path.parent.glob(f"{path.stem}.*.png")), f"{where} and its plots ({path.stem}.*.png)"
    if sub in ("smooth", "forecast") and params.get("fmt") == "nwb":
        with h5py.File(path, "r") as f:
            assert f"processing/xfads_{sub}" in f, f"{where} with a processing module xfads_{sub}"
    elif sub in ("smooth", "forecast", "embed"):
        expected = {"smooth": smooth_datasets(), "forecast": FORECAST_DATASETS, "embed": EMBED_DATASETS}[sub]
        with h5py.File(path, "r") as f:
            if f.attrs.get("layout") == "continuous":  # a recording without trials
                expected = smooth_datasets(CONTINUOUS) if sub == "smooth" else FORECAST_AT_DATASETS
            assert expected <= set(f), f"{where} with {sorted(expected)}; missing {sorted(expected - set(f))}"
            if sub != "embed":
                assert ROOT_ATTRS <= set(f.attrs), f"{where} with root attributes {sorted(ROOT_ATTRS - set(f.attrs))}"
            metrics = json.loads(f.attrs["metrics"])
        for claim in METRIC_CLAIMS.get(str(out), ()):
            assert any(claim in key for key in metrics), f"{where} with a {claim} metric; it has {sorted(metrics)}"


@pytest.mark.parametrize("block", runnable_blocks(), ids=lambda b: b.id)
def test_readme_block_runs(block, tmp_path, placeholders, request):
    steps = analyse(block)
    problems = [p for s in steps for p in s.problems]
    assert not problems, "not covered by the tables (see test_every_readme_command_is_covered):\n" + "\n".join(problems)
    skipped = []
    provided = set()
    env = _env()
    env["XFADS_CACHE"] = str(tmp_path / ".xfads_cache")
    started = time.monotonic()
    for step in steps:
        missing_real = [n for n in _needs_real(step) if not (REAL / PLACEHOLDERS[n].split(" ", 1)[1]).is_file()]
        if missing_real:
            skipped.append(f"'{step.readme}' ({REAL} holds no {', '.join(missing_real)})")
            continue
        for name in sorted(step.placeholders - provided):
            placeholders.provide(name, tmp_path)
            provided.add(name)
        for part in step.repo_paths:
            if not (tmp_path / part).exists():
                (tmp_path / part).symlink_to(ROOT / part)
        command = step.command
        for url in step.urls:  # the module's server is started only for a block that reads a URL
            command = command.replace(url, request.getfixturevalue("url_server")[url])
        result = subprocess.run(["bash", "-e", "-o", "pipefail", "-c", command], cwd=tmp_path, env=env,
                                stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, (
            f"README.md:{block.lineno} ({block.heading}): exit code {result.returncode}\n"
            f"README line: {step.readme}\nran:         {step.command}\n"
            f"--- stdout ---\n{result.stdout[-4000:]}\n--- stderr ---\n{result.stderr[-4000:]}")
        for sub, params in step.xfads:
            _check_outputs(sub, params, tmp_path, step)
        if step.readme.split()[0] == "python" or "| python" in step.readme:
            assert result.stdout.strip(), f"'{step.readme}' printed nothing"
    print(f"{block.id}: {len(steps) - len(skipped)} lines in {time.monotonic() - started:.1f} s")
    if skipped:
        pytest.skip(f"the other lines of the block ran and passed; skipped {'; '.join(skipped)}")


@pytest.mark.parametrize("block", manifest_blocks(), ids=lambda b: b.id)
def test_readme_manifest_loads(block, tmp_path, placeholders):
    """The ```yaml manifest, saved as sessions.yaml next to its (placeholder) recordings, loads as `fit` loads it."""
    import yaml

    from xfads_cli.config import DataConfig
    from xfads_cli.data.sessions import expand_sources, load_sessions

    manifest = tmp_path / "sessions.yaml"
    manifest.write_text(block.text)
    entries = yaml.safe_load(block.text)["sessions"]
    for path in _manifest_files():
        placeholders.provide(path, tmp_path)
    sources = expand_sources([manifest], DataConfig())
    sessions = load_sessions([manifest], DataConfig())
    assert len(sessions) == len(entries)
    for entry, source, data in zip(entries, sources, sessions):
        entry = entry if isinstance(entry, dict) else {"path": entry}
        assert source.path == tmp_path / entry["path"]
        assert data.session == (source.data.session or source.path.stem) == entry.get("name", Path(entry["path"]).stem)
        for key, value in (entry.get("data") or {}).items():
            assert getattr(source.data, key) == (tuple(value) if isinstance(value, list) else value), key
        window = (entry.get("data") or {}).get("window_ms")
        if window:
            assert data.counts.shape[1] == round((window[1] - window[0]) / source.data.bin_ms)


# ---------------------------------------------------------------------------------------------------
# ```python blocks: the Python API, one script per block
# ---------------------------------------------------------------------------------------------------

PATH_TEXT = re.compile(r"[\w.-]+(/[\w.-]*)+|[\w.-]+\.(?:h5|hdf5|nwb|csv|json|yaml|yml|pt|png)")


def python_blocks() -> list[Block]:
    return [b for b in readme_blocks() if b.lang == "python"]


def substitute_python(text: str) -> str:
    """The block as the test runs it: fit budgets and simulated trials as in the shell blocks."""
    text = re.sub(r"\btime_limit\s*=\s*[\d.]+", PY_BUDGET, text)
    return re.sub(r"\btrials\s*=\s*(\d+)", lambda m: f"trials={min(int(m.group(1)), SIM_TRIALS)}", text)


def _api_call(node) -> str | None:
    """'fit' for a call xfads.fit(...), else None."""
    func = node.func
    if isinstance(func, ast.Attribute) and getattr(func.value, "id", None) == "xfads":
        return func.attr
    return None


@dataclass
class PythonBlock:
    code: str
    placeholders: set = field(default_factory=set)
    repo_paths: set = field(default_factory=set)
    problems: list = field(default_factory=list)


def analyse_python(block: Block) -> PythonBlock:
    """The paths a ```python block reads (placeholders, repository files) and what is not covered."""
    found = PythonBlock(substitute_python(block.text))
    try:
        tree, ran = ast.parse(block.text), ast.parse(found.code)
    except SyntaxError as exc:
        found.problems.append(f"not valid Python: {exc}")
        return found
    written: list[str] = []
    calls = sorted((n for n in ast.walk(tree) if isinstance(n, ast.Call)), key=lambda n: (n.lineno, n.col_offset))
    for call in calls:
        args = list(call.args) + [k.value for k in call.keywords]
        out = None
        if _api_call(call) in PY_WRITERS:
            position = PY_WRITERS[_api_call(call)]
            given = call.args[position] if len(call.args) > position else next(
                (k.value for k in call.keywords if k.arg == "out"), None)
            out = given.value if isinstance(given, ast.Constant) and isinstance(given.value, str) else None
        for arg in args:
            if not (isinstance(arg, ast.Constant) and isinstance(arg.value, str)) or arg.value == out:
                continue
            path = arg.value
            if not PATH_TEXT.fullmatch(path) or any(path == w or path.startswith(w.rstrip("/") + "/") for w in written):
                continue
            if placeholder_for(path):
                found.placeholders.add(placeholder_for(path))
            elif (ROOT / path).exists() and not Path(path).is_absolute():
                found.repo_paths.add(Path(path).parts[0])
            else:
                found.problems.append(f"reads '{path}', which no earlier call of the block writes, no PLACEHOLDERS "
                                      "row provides and the repository does not hold")
        if out is not None:
            written.append(out)
    for call in (n for n in ast.walk(ran) if isinstance(n, ast.Call) and _api_call(n) == "fit"):
        budget = {k.arg for k in call.keywords} & {"max_epochs", "time_limit"}
        if budget != {"max_epochs"}:
            found.problems.append(f"line {call.lineno}: xfads.fit without time_limit= or max_epochs= (the test budget)")
    return found


def test_python_substitutions_are_the_tables():
    code = 'xfads.simulate("vdp", "v.nwb", trials=150)\nrun = xfads.fit("v.nwb", "runs/v", time_limit=5)\n'
    assert substitute_python(code) == code.replace("trials=150", "trials=20").replace("time_limit=5", "max_epochs=2")
    block = Block("python", "t", 1, code + 'run.smooth("v.nwb"); xfads.load_run("runs/v"); run.smooth("mc_maze.nwb")\n')
    found = analyse_python(block)
    assert found.placeholders == {"mc_maze.nwb"} and not found.problems  # v.nwb and runs/v are written first
    assert analyse_python(Block("python", "t", 1, 'xfads.load_run("runs/x")\n')).problems
    assert analyse_python(Block("python", "t", 1, 'xfads.fit("recording.nwb", "r")\n')).problems  # no budget


@pytest.mark.parametrize("block", python_blocks(), ids=lambda b: b.id)
def test_readme_python_block_runs(block, tmp_path, placeholders):
    found = analyse_python(block)
    assert not found.problems, "not covered by the tables (see test_every_readme_command_is_covered):\n" + \
        "\n".join(found.problems)
    missing_real = [n for n in found.placeholders if any(s.startswith("real ") for s in
                                                          _placeholder_sources(PLACEHOLDERS[n]))
                    and not (REAL / PLACEHOLDERS[n].split(" ", 1)[1]).is_file()]
    if missing_real:
        pytest.skip(f"{REAL} holds no {', '.join(missing_real)}")
    for name in sorted(found.placeholders):
        placeholders.provide(name, tmp_path)
    for part in found.repo_paths:
        (tmp_path / part).symlink_to(ROOT / part)
    (tmp_path / "block.py").write_text(found.code)
    env = _env() | {"MPLBACKEND": "Agg", "XFADS_CACHE": str(tmp_path / ".xfads_cache")}
    started = time.monotonic()
    result = subprocess.run([sys.executable, "block.py"], cwd=tmp_path, env=env, stdin=subprocess.DEVNULL,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, (f"README.md:{block.lineno} ({block.heading}): exit code {result.returncode}\n"
                                    f"--- ran ---\n{found.code}\n--- stdout ---\n{result.stdout[-4000:]}\n"
                                    f"--- stderr ---\n{result.stderr[-4000:]}")
    if "print(" in block.text:
        assert result.stdout.strip(), "the block prints nothing"
    print(f"{block.id}: python block in {time.monotonic() - started:.1f} s")
