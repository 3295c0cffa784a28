"""`xfads stream`: real-time causal decoding for closed-loop experiments. Spike counts arrive one bin at
a time (NDJSON lines on stdin or from a file, or a Lab Streaming Layer inlet); each bin's latent state
q(z_t | y_{1:t}), its rates and, with a horizon, a forecast leave as one NDJSON line (or LSL sample)
before the next bin is read (runs/decoder.py).

    xfads stream RUN --describe                          # the units, in the order the input must give them
    acquisition | xfads stream RUN --horizon 5 > decoded.ndjson
    xfads stream RUN --input lsl:spikes --output lsl:xfads --stats stats.json
"""

from __future__ import annotations

import signal
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from xfads_cli.errors import UsageError


class Stopped(Exception):
    """SIGINT or SIGTERM while waiting for a bin: the stream ends cleanly, its stats written."""


def describe_run(run) -> dict:
    """What a client of `xfads stream RUN` needs: the bin width, and per session its units in input order."""
    spec = run.spec
    return {
        "run": str(run.path), "bin_ms": spec.sessions[0]["bin_ms"], "latent_dim": run.config.model.latent_dim,
        "sessions": [{"name": name, "units": list(s["unit_ids"]), "n_units": s["n_neurons"],
                      "adapted": bool(s.get("embed_trial_ids"))} for name, s in zip(spec.names, spec.sessions)],
    }


def stream(run_path: Path, *, source: str = "-", output: str = "-", horizon: int = 0, samples: int | None = None,
           session: str | None = None, data: str | None = None, stats: Path | None = None, overwrite: bool = False,
           device: str = "auto", seed: int | None = None, log=None) -> dict:
    """Decode `source` bin by bin with the run's causal filter and write each bin to `output` (see the
    module docstring); returns the stats (also written to `stats`): bins, missing (bins with at least
    one missing count, a bad line's bin included), errors (bad lines), latency_ms {p50, p99, max} from
    reading a bin to writing its line, and how the stream ended."""
    import torch

    from xfads_cli.outputs.live import Latency, record
    from xfads_cli.runs.decoder import CausalDecoder
    from xfads_cli.runs.run import load_run

    log = log or (lambda text: print(text, file=sys.stderr, flush=True))
    if horizon < 0:
        raise UsageError(f"--horizon must be >= 0 bins, got {horizon}")
    if samples is not None and samples < 1:
        raise UsageError(f"--samples must be >= 1, got {samples}")
    _check_endpoints(source, output, stats, overwrite)
    run = load_run(run_path, device)
    if run.config.model.kind not in ("xfads", "meta"):
        raise UsageError(f"{run_path} is a model.kind={run.config.model.kind} run: xfads stream decodes with XFADS's "
                         "causal filter; stream an XFADS or meta run")
    index, model = _session_model(run, session, data)
    spec = run.spec.sessions[index]
    n_units, bin_s = int(spec["n_neurons"]), float(spec["bin_ms"]) / 1000.0
    generator = torch.Generator(device=run.device).manual_seed(run.config.seed if seed is None else seed)
    decoder = CausalDecoder(model, n_samples=samples or run.config.model.samples, horizon=horizon, generator=generator)
    latency, counts = Latency(), {"bins": 0, "missing": 0, "errors": 0}
    log(f"xfads stream: session '{run.spec.names[index]}', {n_units} units, {spec['bin_ms']:g} ms bins, "
        f"reading {source}")
    stop = _Stop()
    with _sink(output, run.config.model.latent_dim, n_units, horizon) as sink, _signals(stop):
        bins = _bins(source, n_units)
        try:
            while (b := stop.next_bin(bins)) is not None:
                if b.error is not None:
                    counts["errors"] += 1
                    log(f"bin {counts['bins']}: {b.error}; treated as missing")
                counts["missing"] += int(np.isnan(b.counts).any())
                out = decoder.step(b.counts)
                t = b.t if b.t is not None else counts["bins"] * bin_s
                sink.write(record(t, out.latent_mean, out.latent_var, out.rates, out.forecast))
                latency.add((time.perf_counter() - b.received) * 1000.0)
                counts["bins"] += 1
                if stop.requested:
                    break
        except Stopped:
            pass
    ended = {"SIGINT": "interrupted (SIGINT)", "SIGTERM": "terminated (SIGTERM)"}.get(stop.requested, "input ended")
    from xfads_cli.data.provenance import package_versions

    # what reproduces the stream: the checkpoint, the seed of the draws and the software (the input is live)
    summary = counts | {"latency_ms": latency.summary(), "ended": ended, "session": run.spec.names[index],
                        "bin_ms": spec["bin_ms"], "checkpoint": str(run.path), "checkpoint_sha256": run.sha256,
                        "seed": run.config.seed if seed is None else seed, "samples": decoder.n_samples,
                        "versions": package_versions()}
    if stats is not None:
        from xfads_cli.runs.rundir import atomic_text

        atomic_text(Path(stats), _json(summary) + "\n")
    log(f"xfads stream: {counts['bins']} bins ({counts['missing']} with missing counts, {counts['errors']} bad "
        f"lines), latency p50 {_ms(summary['latency_ms']['p50'])} p99 {_ms(summary['latency_ms']['p99'])}; {ended}")
    return summary


def _ms(value) -> str:
    return "-" if value is None else f"{value:.3f} ms"


def _json(value) -> str:
    import json

    return json.dumps(value, indent=2)


def _check_endpoints(source: str, output: str, stats: Path | None, overwrite: bool) -> None:
    """Every path checked before the run is loaded: an input file exists, output files can be written."""
    from xfads_cli.outputs.h5 import check_output

    # a named pipe (mkfifo) is as good as a file: an acquisition program can write into it
    if not source.startswith("lsl:") and source != "-" and (not Path(source).exists() or Path(source).is_dir()):
        raise UsageError(f"--input {source}: no such file; give '-' (stdin), a file or named pipe of NDJSON lines, "
                         "or lsl:NAME")
    for given, name in ((source, "--input"), (output, "--output")):
        if given.startswith("lsl:") and not given[4:]:
            raise UsageError(f"{name} lsl: needs a stream name, e.g. {name} lsl:spikes")
    files = [Path(p) for p in (output,) if p != "-" and not p.startswith("lsl:")] + ([Path(stats)] if stats else [])
    inputs = [] if source == "-" or source.startswith("lsl:") else [Path(source)]
    for path in files:
        check_output(path, overwrite, inputs)
    if len(set(map(str, files))) < len(files):
        raise UsageError("--output and --stats name the same file; give them different paths")


def _session_model(run, session: str | None, data: str | None):
    """(index, the model serving the session decoded): the run's one session, or a meta run's named
    one with its embedding: an adapted session's own, else pooled over the training trials of `data`."""
    from xfads_cli.runs.binding import index_in_run, load_data_for_run, session_model

    names = run.spec.names
    if session is None and len(names) > 1:
        raise UsageError(f"this run has {len(names)} sessions ({', '.join(map(str, names))}); choose one with --session")
    if session is not None and session not in names:
        raise UsageError(f"--session {session}: not a session of this run ({', '.join(map(str, names))})")
    index = 0 if session is None else names.index(session)
    if data is not None:
        recording = load_data_for_run(data, run)
        if index_in_run(run, recording) != index:  # matched by name or content, as smooth and forecast do
            raise UsageError(f"--data {data} is session '{recording.session}', not '{names[index]}'")
        return index, session_model(run, recording)
    if not run.spec.meta:
        return index, run.model.session(0)
    refined = run.model.sessions[index].embedding
    if refined is None:
        raise UsageError(f"session '{names[index]}' of a meta run takes its embedding from its training trials: "
                         "pass its recording with --data FILE (an adapted session needs none)")
    from xfads_cli.model.session import BoundSession

    return index, BoundSession(run.model, index, refined.detach())


def _bins(source: str, n_units: int):
    from xfads_cli.data.live import lsl_bins, ndjson_bins

    if source.startswith("lsl:"):
        yield from lsl_bins(source[4:], n_units)
    elif source == "-":
        yield from ndjson_bins(sys.stdin, n_units)
    else:
        with open(source) as lines:
            yield from ndjson_bins(lines, n_units)


@contextmanager
def _sink(output: str, n_latent: int, n_units: int, horizon: int):
    """The output of every decoded bin: stdout, an LSL outlet, or a file renamed into place when the
    stream ends (complete then; a live reader takes stdout or LSL)."""
    from xfads_cli.outputs.live import LslSink, NdjsonSink

    if output == "-":
        sink = NdjsonSink(sys.stdout)
        yield sink
        sink.close()
        return
    if output.startswith("lsl:"):
        from xfads_cli.data.live import import_pylsl

        sink = LslSink(output[4:], n_latent, n_units, horizon, import_pylsl())
        try:
            yield sink
        finally:
            sink.close()
        return
    from xfads_cli.atomic import atomic_path

    with atomic_path(Path(output)) as tmp, open(tmp, "w") as handle:
        sink = NdjsonSink(handle)
        yield sink
        sink.close()


class _Stop:
    """SIGINT / SIGTERM: the stream stops at once while it waits for a bin, else after the bin in hand
    is written, so that its line and the stats' counts always agree."""

    def __init__(self):
        self.waiting, self.requested = False, None

    def __call__(self, signum, frame):
        self.requested = signal.Signals(signum).name
        if self.waiting:
            raise Stopped()

    def next_bin(self, bins):
        """The next bin of the iterator `bins`, None at its end (a signal while waiting raises Stopped)."""
        self.waiting = True
        try:
            return next(bins, None)
        finally:
            self.waiting = False


@contextmanager
def _signals(handler):
    """SIGINT and SIGTERM call `handler` (restored afterwards); off the main thread nothing changes."""
    try:
        previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
