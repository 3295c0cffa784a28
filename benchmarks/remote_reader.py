"""Which range-request reader xfads uses for remote recordings: bytes transferred and time to read what
the loader reads (units table, spike times, trials) through remfile and through fsspec's HTTP file,
served by tests/range_server.py on 127.0.0.1; then xfads' own load_data(URL) (remfile + its block
cache, data/remote.py) on a cold cache and again on the warm one.

    python benchmarks/remote_reader.py [--repeats 3]

Files: data_fixtures/lorenz_small.nwb and mc_maze_2trials.nwb as they are, and lorenz_small.nwb plus a
16 MB acquisition TimeSeries that the loader never reads (the case that matters: a large file of
which only the units and trials are wanted).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from range_server import RangeServer  # noqa: E402


def _with_acquisition(src: Path, dst: Path, mbytes: int = 16) -> None:
    """Copy of `src` with a float64 acquisition series of `mbytes` MB (unread by the loader)."""
    from pynwb import NWBHDF5IO, TimeSeries

    with NWBHDF5IO(str(src), "r") as io:
        nwb = io.read()
        data = np.random.default_rng(0).standard_normal((mbytes * 2**20 // 8 // 4, 4))
        nwb.add_acquisition(TimeSeries(name="lfp", data=data, unit="V", rate=1000.0))
        with NWBHDF5IO(str(dst), "w") as out:
            out.export(src_io=io, nwbfile=nwb)


def _read(fileobj) -> int:
    """What load_nwb reads: units (ids, spike times, obs_intervals), trials; returns the spike count."""
    from pynwb import NWBHDF5IO

    with h5py.File(fileobj, "r") as f, NWBHDF5IO(file=f, mode="r") as io:
        nwb = io.read()
        spikes = sum(len(nwb.units["spike_times"][i]) for i in range(len(nwb.units)))
        if nwb.trials is not None:
            nwb.trials.to_dataframe()
    return spikes


def _open_remfile(url: str):
    import remfile

    return remfile.File(url)


def _open_remfile_sized(url: str):
    """remfile with the size from a HEAD request: no aborted whole-file GET to learn it."""
    import remfile
    import requests

    return remfile.File(url, _size=int(requests.head(url).headers["Content-Length"]))


def _open_fsspec(url: str, block_size: int):
    from fsspec.implementations.http import HTTPFileSystem

    return HTTPFileSystem().open(url, "rb", block_size=block_size, cache_type="blockcache")


def _xfads_load(url: str, cache: Path) -> None:
    """load_data(url) with the cache in `cache` (emptied by the caller for a cold load)."""
    import os

    from xfads_cli.data.load import load_data

    os.environ["XFADS_CACHE"] = str(cache)
    load_data(url)


READERS = {
    "remfile (100 KiB chunks, read-ahead)": _open_remfile,
    "remfile, size from a HEAD": _open_remfile_sized,
    "fsspec http (blockcache, 5 MiB blocks: its default)": lambda url: _open_fsspec(url, 5 * 2**20),
    "fsspec http (blockcache, 256 KiB blocks)": lambda url: _open_fsspec(url, 256 * 2**10),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for name in ("lorenz_small.nwb", "mc_maze_2trials.nwb"):
            shutil.copy(ROOT / "data_fixtures" / name, tmp / name)
        _with_acquisition(tmp / "lorenz_small.nwb", tmp / "lorenz_big.nwb")
        print(f"| file | size MB | reader | requests | MB sent | % of file | s (best of {args.repeats}) |")
        print("|---|---:|---|---:|---:|---:|---:|")
        with RangeServer(tmp) as server:
            for name in ("lorenz_small.nwb", "mc_maze_2trials.nwb", "lorenz_big.nwb"):
                size = (tmp / name).stat().st_size
                for label, opener in READERS.items():
                    best, sent, requests = float("inf"), 0, 0
                    for _ in range(args.repeats):
                        server.log.clear()
                        start = time.perf_counter()
                        _read(opener(server.url(name)))
                        best = min(best, time.perf_counter() - start)
                        sent, requests = server.bytes_sent(), len(server.log)
                    print(f"| {name} | {size / 1e6:.1f} | {label} | {requests} | {sent / 1e6:.2f} | "
                          f"{100 * sent / size:.0f} | {best:.2f} |")
                _xfads_rows(server, name, size, tmp, args.repeats)


def _xfads_rows(server, name: str, size: int, tmp: Path, repeats: int) -> None:
    import warnings

    warnings.simplefilter("ignore")  # the loaders' notes about splits
    for label, cold in (("xfads load_data, cold cache", True), ("xfads load_data, warm cache", False)):
        best = float("inf")
        for _ in range(repeats):
            if cold:
                shutil.rmtree(tmp / "cache", ignore_errors=True)
            else:
                _xfads_load(server.url(name), tmp / "cache")  # warm it
            server.log.clear()
            start = time.perf_counter()
            _xfads_load(server.url(name), tmp / "cache")
            best = min(best, time.perf_counter() - start)
        sent, requests = server.bytes_sent(), len(server.log)
        print(f"| {name} | {size / 1e6:.1f} | {label} | {requests} ({len(server.data_requests())} GET) | "
              f"{sent / 1e6:.2f} | {100 * sent / size:.0f} | {best:.2f} |")


if __name__ == "__main__":
    main()
