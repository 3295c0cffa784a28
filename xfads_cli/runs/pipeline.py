"""The one path of every command that applies a run to a recording (smooth, forecast):

    with open_input(run_path, data_path, overrides=...) as (run, f):   # config parsed once, file opened once
        rows, model, baselines = ...                                     # the command's own: trials, or a
        with open_output(...) as sink:                                   #   recording without trials
            stream(sink, parts, inputs, scores)    # each block written beside its inputs and scored
            finish(sink, run, rows, command, metrics, index, attrs)     # index datasets and provenance

Each command supplies what is its own: which rows (trials of a split, a continuous recording, windows
at given times), the inference iterator, the inputs written beside each block and the scores.
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

import numpy as np

from xfads_cli.runs.run import Run, load_run

Score = Callable[[dict], None]  # shown each written block: the computed arrays and the inputs beside them


@contextmanager
def open_input(run_path: Path, data_path: Path, *, overrides=(), device: str = "auto") -> Iterator[tuple[Run, object]]:
    """(run, f): the run with the command's --set overrides applied in the one parse of its config
    (runs/run.py load_run), and the recording opened once for every read the command makes
    (data/opened.py; runs/binding.py read_data_for_run / read_recording_for_run)."""
    from xfads_cli.data.opened import open_file

    run = load_run(run_path, device, overrides=overrides)
    with open_file(data_path) as f:
        yield run, f


def stream(sink, parts: Iterable[dict], inputs: dict[str, np.ndarray], scores: Sequence[Score]) -> None:
    """Append each block of `parts` (dicts of [block, ...] arrays, blocks in row order) to `sink` with
    the rows of `inputs` it covers, after showing the block to every score."""
    start = 0
    for part in parts:
        stop = start + len(part["rates_mean"])
        block = part | {k: v[start:stop] for k, v in inputs.items()}
        for score in scores:
            score(block)
        sink.append(block)
        start = stop


def finish(sink, run: Run, rows, command: str, metrics: dict, index: dict, attrs: dict) -> None:
    """Write the index datasets that map rows and columns back to the recording (trial_ids, unit_ids,
    ...; None: not applicable) and the output's attributes: provenance, metrics and `attrs`."""
    from xfads_cli.outputs.sinks import output_attrs

    for name, value in index.items():
        if value is not None:
            sink.write(name, value)
    sink.set_attrs(output_attrs(run, rows, command, metrics) | attrs)


class Gather:
    """The whole [row, ...] array of one field of the streamed blocks, filled as they pass (allocated
    once: no list of blocks and second copy), for scores that need every row at once."""

    def __init__(self, field: str, shape: tuple, dtype=np.float32):
        self.field, self.array, self.filled = field, np.empty(shape, dtype=dtype), 0

    def __call__(self, block: dict) -> None:
        n = len(block[self.field])
        self.array[self.filled : self.filled + n] = block[self.field]
        self.filled += n
