"""Where smooth and forecast write: an HDF5 file block by block (outputs/h5.py), or a NEW NWB file
(the input plus a processing module, gathered in memory), with the provenance attributes of every output.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from xfads_cli.data.spikedata import Padding, SpikeData
from xfads_cli.errors import UsageError


def concat_parts(parts: list[dict]) -> dict[str, np.ndarray]:
    """Blocks of trials (dicts of [block, ...] arrays) -> the whole arrays [trial, ...]."""
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]} if parts else {}


def output_attrs(run, data: SpikeData, command: str, metrics: dict) -> dict:
    """The provenance attributes of an output file; run: the runs.Run it was computed with."""
    from xfads_cli.config import dump_config
    from xfads_cli.data.provenance import package_versions

    return {
        "command": command,
        "config": dump_config(run.config),
        "checkpoint": str(run.path),
        "checkpoint_sha256": run.sha256,
        "input_path": str(data.provenance.get("path", "")),
        "input_sha256": str(data.provenance.get("sha256") or ""),  # '' for a remote input: input_etag instead
        **{f"input_{k}": data.provenance[k] for k in ("etag", "size_bytes") if k in data.provenance},
        "session": data.session,
        "bin_ms": data.bin_ms,
        "versions": package_versions(),
        "metrics": metrics,
    }


def open_output(out: Path, fmt: str, rows: SpikeData, overwrite: bool, module: str, start_s: np.ndarray | None,
                 offsets: dict[str, int] | None = None, first_bin: int = 0):
    """The writer of a command's results, used as `with ... as sink:` then sink.append(block of
    trials) / sink.write(name, whole array) / sink.set_attrs(attrs): an H5Stream for --format h5, which
    writes each block as it comes; for --format nwb a NwbOutput, which gathers them in memory.
    Both record rows.lengths and blank the appended arrays past them (bin i of a block is bin
    first_bin + i of its trial; the `offsets` series are inputs, left as they are)."""
    from xfads_cli.outputs.h5 import H5Stream

    padding = Padding(rows.lengths, first_bin, skip=offsets or ())
    if fmt == "h5":
        return H5Stream(out, n_rows=rows.n_trials, overwrite=overwrite, padding=padding)
    if rows.provenance.get("url"):  # a copy of the input is all of it: what lazy reading avoids
        raise UsageError(f"--format nwb writes a copy of the input file, and {rows.provenance['url']} is remote;"
                         " use --format h5, or download the file and pass its local path")
    source = Path(rows.provenance.get("path", ""))
    if rows.provenance.get("format") != "nwb" or start_s is None:
        raise UsageError("--format nwb needs an NWB input file (trial times are taken from it); use --format h5")
    return NwbOutput(source, Path(out), module, start_s, rows.bin_ms, overwrite, offsets, padding)


class NwbOutput:
    """--format nwb, NOT streamed: pynwb writes each TimeSeries from one array, so the blocks are
    gathered in memory and the copy of the input with the module added is written when the `with`
    block ends without an exception. Series are the [trial, time, dim] arrays, in the order given."""

    def __init__(self, source: Path, out: Path, module: str, start_s: np.ndarray, bin_ms: float, overwrite: bool,
                 offsets: dict[str, int] | None = None, padding: Padding | None = None):
        self.source, self.path, self.module, self.offsets, self.padding = source, out, module, offsets, padding
        self.start_s, self.bin_ms, self.overwrite = start_s, bin_ms, overwrite
        self.parts: list[dict] = []
        self.whole: dict[str, np.ndarray] = {}
        self.attrs: dict = {}

    def __enter__(self) -> "NwbOutput":
        return self

    def append(self, part: dict) -> None:
        self.parts.append(part if self.padding is None else self.padding.blank(part))

    def write(self, name: str, value) -> None:
        self.whole[name] = np.asarray(value)

    def set_attrs(self, attrs: dict) -> None:
        self.attrs = attrs

    def arrays(self) -> dict[str, np.ndarray]:
        return concat_parts(self.parts) | self.whole

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc_type is None:
            from xfads_cli.outputs.nwb import write_nwb_copy

            series = {k: v for k, v in self.arrays().items() if v.ndim == 3}
            write_nwb_copy(self.source, self.path, self.module, series, self.start_s, self.bin_ms,
                           f"xfads {self.module}", self.attrs, self.overwrite, offsets=self.offsets,
                           lengths=None if self.padding is None else self.padding.lengths)
        return False


def whole_arrays(sink, names: list[str]) -> dict[str, np.ndarray]:
    """Whole arrays of a written output, for --plot (plots average over all trials): the NWB output
    still has them in memory, an HDF5 output is read back (so --plot costs memory in the trials)."""
    if isinstance(sink, NwbOutput):
        arrays = sink.arrays()
        return {name: arrays[name] for name in names}
    import h5py

    with h5py.File(sink.path, "r") as f:
        return {name: f[name][()] for name in names}


def check_format(out: Path, fmt: str, overwrite: bool, inputs=()) -> None:
    from xfads_cli.outputs.h5 import check_output

    if fmt not in ("h5", "nwb"):
        raise UsageError(f"--format must be h5 or nwb, got '{fmt}'")
    check_output(out, overwrite, inputs)
