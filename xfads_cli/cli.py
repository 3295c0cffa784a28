"""The `xfads` command line: a thin Typer layer.

Each command parses its arguments, calls one library function and maps errors to exit codes:
0 ok, 1 runtime failure, 2 bad usage or input (one line on stderr, no traceback). Heavy modules
(torch, pynwb, h5py) are imported inside the commands so that `xfads --help` is instant.
"""

from __future__ import annotations

import functools
import json
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from xfads_cli.errors import RemoteError, RunFailure, UsageError

app = typer.Typer(
    name="xfads",
    help="Fit and forecast neural population recordings with low-rank nonlinear state-space models (XFADS).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)

ConfigOpt = Annotated[Optional[Path], typer.Option("--config", "-c", help="YAML config file (sections data, model, train).")]
SetOpt = Annotated[
    Optional[list[str]],
    typer.Option("--set", "-s", help="Override a config value, e.g. --set data.bin_ms=10 (repeatable; applied last)."),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print a machine-readable summary on stdout.")]


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def handle_errors(command):
    """Turn library errors into one-line messages and exit codes (2 usage, 1 runtime)."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except UsageError as exc:
            _stderr(f"error: {exc}")
            raise typer.Exit(2) from None
        except RunFailure as exc:
            _stderr(f"failed: {exc}")
            raise typer.Exit(1) from None
        except RemoteError as exc:  # a remote recording: 2 when the user can fix it, 1 when transient
            _stderr(f"error: {exc}")
            raise typer.Exit(exc.exit_code) from None
        except KeyboardInterrupt:
            _stderr("interrupted")
            raise typer.Exit(130) from None

    return wrapper


def _source(text: str):
    """A DATA argument as a local Path or a remote recording (data/source.py): typer's Path would
    collapse the '//' of a URL."""
    from xfads_cli.data.source import parse_source

    return parse_source(text)


def _sources(texts: list[str]) -> list:
    return [_source(text) for text in texts]


def _local_sources(texts: list[str]) -> list[Path]:
    """sweep's DATA: local files only (its workers and journal record file paths)."""
    from xfads_cli.data.source import is_remote

    sources = _sources(texts)
    remote = [s for s in sources if is_remote(s)]
    if remote:
        raise UsageError(f"xfads sweep reads local files only (its workers are given file paths), and {remote[0]}"
                         " is a URL; download the file and pass its local path")
    return sources


def _print_json(payload) -> None:
    sys.stdout.write(json.dumps(payload, indent=2, default=str) + "\n")
    sys.stdout.flush()


@app.command()
@handle_errors
def inspect(
    data: Annotated[list[str], typer.Argument(help="NWB (.nwb) or HDF5 (.h5) files, or https://, s3:// or dandi:// URLs.")],
    config: ConfigOpt = None,
    set_: SetOpt = None,
    json_out: JsonOpt = False,
):
    """Does my file work? Summarise each file and show how xfads would cut it into trials (--json: a list, one object per file)."""
    from xfads_cli.config import load_config
    from xfads_cli.commands.inspect import inspect_files, render_reports

    cfg = load_config(config, set_ or [])
    reports = inspect_files(_sources(data), cfg.data, strict=bool(config or set_), config_path=config)
    if json_out:
        _print_json(reports)  # always a list, one report per file: pipelines need not branch
    else:
        render_reports(reports)


@app.command()
@handle_errors
def simulate(
    system: Annotated[str, typer.Argument(help="lorenz | vdp | ring | duffing | hopf | task")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output file: .nwb (NWB) or .h5 (plain HDF5 layout).")],
    neurons: Annotated[int, typer.Option(help="Number of neurons.")] = 50,
    trials: Annotated[int, typer.Option(help="Number of trials.")] = 100,
    bins: Annotated[int, typer.Option(help="Bins per trial.")] = 100,
    bin_ms: Annotated[float, typer.Option(help="Bin width in ms.")] = 20.0,
    seed: Annotated[int, typer.Option(help="Random seed (same seed, same data; an .nwb file gets a new identifier each time).")] = 0,
    base_rate: Annotated[float, typer.Option(help="Typical firing rate in Hz.")] = 10.0,
    param: Annotated[Optional[float], typer.Option(help="Regime parameter (duffing alpha, hopf mu, vdp mu; task: the go cue's jitter in s, 0-0.5).")] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing output file.")] = False,
    json_out: JsonOpt = False,
):
    """Write a synthetic recording with known latents and rates (for demos, tests and benchmarks)."""
    from xfads_cli.commands.simulate import simulate as run_simulation

    summary = run_simulation(
        system, out, neurons=neurons, trials=trials, bins=bins, bin_ms=bin_ms, seed=seed,
        base_rate_hz=base_rate, param=param, overwrite=overwrite,
    )
    if json_out:
        _print_json(summary)
    else:
        _stderr(f"wrote {out} ({summary.get('trials')} trials x {summary.get('bins')} bins x {summary.get('neurons')} neurons, system {system})")


DeviceOpt = Annotated[str, typer.Option("--device", help="auto | cpu | cuda | cuda:N")]
ThreadsOpt = Annotated[Optional[str], typer.Option(
    "--threads", help="CPU threads: auto (at most the cores this job may use; training measures which count is "
                      "fastest while other jobs share them) or N (fixed: bit-identical reruns). Default: $XFADS_THREADS or auto.")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress or tables on stderr.")]
OverwriteOpt = Annotated[bool, typer.Option("--overwrite", help="Replace existing outputs.")]
PlotOpt = Annotated[bool, typer.Option("--plot", help="Also save PNG plots next to the outputs (needs matplotlib).")]
FormatOpt = Annotated[str, typer.Option("--format", help="h5 (default) or nwb (a NEW NWB file: the input plus results).")]
LogOpt = Annotated[Optional[list[str]], typer.Option("--log", help="Log losses, scores, lr, config and plot to a tracker (repeatable): "
    "tensorboard (RUN_DIR/tensorboard), mlflow ($MLFLOW_TRACKING_URI, else RUN_DIR/mlflow.db) or csv (metrics.csv, always written).")]


def _fixed_threads(spec: Optional[str]) -> None:
    """Inference runs a few large ops: a fixed thread count (--threads N, else the cores this job may use)."""
    from xfads_cli.train.threads import configure_threads

    configure_threads(spec, tune=False)


def _report(summary: dict, title: str, json_out: bool, quiet: bool) -> None:
    from xfads_cli.progress import log, print_metrics, print_verdicts

    print_metrics(title, summary.get("metrics", {}), quiet=quiet)
    if "verdicts" not in summary and any(k.endswith("_baseline_bps") for k in summary.get("metrics", {})):
        # a summary that scored baselines without judging them (e.g. adapt's): judge them here
        from xfads_cli.scoring.summary import verdicts

        summary["verdicts"] = verdicts(summary["metrics"], summary.get("baselines"))
    print_verdicts(summary.get("verdicts", []), quiet=quiet)
    if "embedding" in summary:
        check = summary["embedding"]
        log(f"embedding: separation {check['separation']:.3g}, dynamics effect {check['dynamics_effect']:.3g} over "
            f"{check['dynamics_effect_horizon_bins']} bins (docs/model.md section 6)", quiet)
    for note in summary.get("notes", []):
        log(f"note: {note}", quiet)
    for key in ("run_dir", "out"):
        if key in summary:
            log(f"wrote {summary[key]}", quiet)
    for plot in summary.get("plots", []):
        log(f"wrote {plot}", quiet)
    if json_out:
        _print_json(summary)


@app.command()
@handle_errors
def fit(
    data: Annotated[list[str], typer.Argument(help="Recording(s): NWB (.nwb) or HDF5 (.h5), paths or URLs.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Run directory to write.")],
    config: ConfigOpt = None,
    set_: SetOpt = None,
    device: DeviceOpt = "auto",
    seed: Annotated[Optional[int], typer.Option(help="Random seed (overrides the config's seed).")] = None,
    max_epochs: Annotated[Optional[int], typer.Option(
        "--max-epochs", help="Stop when the run has this many epochs (when resuming: counted from the run's start, "
                             "the epochs before the resume included).")] = None,
    time_limit: Annotated[Optional[float], typer.Option(
        "--time-limit", help="Stop after this many minutes (of this invocation; also applies when resuming).")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue the run in --out from its last.pt (an error if there is none).")] = False,
    resume_auto: Annotated[bool, typer.Option(
        "--resume-auto", help="Continue the run in --out if it has a last.pt, else start a new one (for requeued jobs).")] = False,
    deterministic: Annotated[bool, typer.Option(
        "--deterministic", help="Deterministic algorithms only: same seed + device + software => same result.")] = False,
    distributed: Annotated[Optional[bool], typer.Option(
        "--distributed/--no-distributed",
        help="Data-parallel over the ranks of torchrun (or srun); default: on when WORLD_SIZE > 1.")] = None,
    threads: ThreadsOpt = None,
    overwrite: OverwriteOpt = False,
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
    plot: PlotOpt = False,
    log: LogOpt = None,
):
    """Fit an XFADS model; writes config.yaml, last.pt, best.pt, metrics.csv and summary.json to --out.

    On SIGTERM or SIGUSR1 (e.g. SLURM's warning before the time limit) fit finishes the current step,
    saves the exact state to last.pt and exits with code 75 (EX_TEMPFAIL: rerun with --resume or
    --resume-auto to continue; bit-for-bit with a fixed --threads N). Exit codes: 0 done, 1 failure (e.g. the loss kept
    diverging; last.pt keeps the last good epoch), 2 bad usage or input, 75 preempted.
    Multi-GPU: torchrun --nproc-per-node K -m xfads_cli fit ... (train.batch_size is the global batch).
    """
    from xfads_cli.config import load_config, option_items
    from xfads_cli.progress import EpochProgress
    from xfads_cli.train.distributed import detect
    from xfads_cli.fitting import run_fit, training_line
    from xfads_cli.runs.tracking import check_loggers
    from xfads_cli.train.signals import EXIT_PREEMPTED, Preempted

    loggers = check_loggers(log)  # a missing extra: one line, before anything is loaded
    if resume and resume_auto:
        raise UsageError("--resume and --resume-auto are exclusive: --resume-auto already resumes when it can")
    dist = detect(distributed)
    quiet = quiet or not dist.is_main  # only rank 0 talks
    cfg = load_config(config, [*(set_ or []), *option_items(seed, max_epochs, time_limit)])
    try:
        with EpochProgress(cfg.train.max_epochs, quiet=quiet) as progress:
            summary = run_fit(_sources(data), cfg, out, device=device, overwrite=overwrite,
                              resume="auto" if resume_auto else resume, max_epochs=max_epochs, log=loggers,
                              progress=progress, plot=plot, deterministic=deterministic, dist=dist, threads=threads)
    except Preempted as exc:
        if dist.is_main:
            _stderr(f"preempted: {exc}")
        raise typer.Exit(EXIT_PREEMPTED) from None
    if not dist.is_main:
        return
    _report(summary, f"xfads fit: {training_line(summary)}", json_out, quiet)


@app.command()
@handle_errors
def smooth(
    run: Annotated[Path, typer.Argument(help="Run directory from 'xfads fit' (or a .pt checkpoint).")],
    data: Annotated[str, typer.Argument(help="The recording to smooth (same neurons as the run): a path or URL.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output file (.h5, or .nwb with --format nwb).")],
    split: Annotated[str, typer.Option(help="all | train | valid | test")] = "all",
    mode: Annotated[Optional[str], typer.Option(help="smoother | filter | two_filter (default: the run's mode)")] = None,
    samples: Annotated[Optional[int], typer.Option(help="Posterior samples (default: the run's).")] = None,
    fmt: FormatOpt = "h5",
    set_: SetOpt = None,
    device: DeviceOpt = "auto",
    threads: ThreadsOpt = None,
    overwrite: OverwriteOpt = False,
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
    plot: PlotOpt = False,
    windows: Annotated[bool, typer.Option(
        "--windows", help="A recording without trials: smooth the windows it is chopped into for training "
                          "instead of the whole recording (one trajectory per segment).")] = False,
):
    """Smoothed latents (mean, variance) and rates (mean, 5/50/95% quantiles) for every trial, or for the
    whole of a recording without trials (continuous, on the recording's time base)."""
    _fixed_threads(threads)
    from xfads_cli.commands.smooth import smooth as run_smooth

    summary = run_smooth(run, _source(data), out, split=split, mode=mode, samples=samples, fmt=fmt, overwrite=overwrite,
                         overrides=set_ or [], device=device, plot=plot, windows=windows)
    title = (f"xfads smooth: {summary['segments']} segment(s), {summary['bins']} bins" if summary.get("layout") == "continuous"
             else f"xfads smooth: {summary['trials']} trials")
    _report(summary, title, json_out, quiet)


@app.command()
@handle_errors
def forecast(
    run: Annotated[Path, typer.Argument(help="Run directory from 'xfads fit' (or a .pt checkpoint).")],
    data: Annotated[str, typer.Argument(help="The recording (same neurons as the run): a path or URL.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output file (.h5, or .nwb with --format nwb).")],
    context: Annotated[Optional[int], typer.Option(help="Context: the first BINS bins of each trial.")] = None,
    context_ms: Annotated[Optional[float], typer.Option("--context-ms", help="Context in ms.")] = None,
    horizon: Annotated[Optional[int], typer.Option(help="Bins to forecast after the context.")] = None,
    horizon_ms: Annotated[Optional[float], typer.Option("--horizon-ms", help="Horizon in ms.")] = None,
    samples: Annotated[int, typer.Option(help="Forecast samples per trial.")] = 100,
    mode: Annotated[str, typer.Option(help="filter (causal context, default) | smoother")] = "filter",
    split: Annotated[str, typer.Option(help="all | train | valid | test")] = "all",
    save_samples: Annotated[bool, typer.Option("--save-samples", help="Also store latent samples.")] = False,
    fmt: FormatOpt = "h5",
    set_: SetOpt = None,
    device: DeviceOpt = "auto",
    threads: ThreadsOpt = None,
    overwrite: OverwriteOpt = False,
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
    plot: PlotOpt = False,
    at_s: Annotated[Optional[str], typer.Option(
        "--at-s", help="A recording without trials: forecast from these times (seconds, e.g. 12.5,30, or a text "
                       "file of them), each after the --context bins before it.")] = None,
    grid: Annotated[bool, typer.Option(
        "--grid/--no-grid", help="Trial-aligned data: also score forecasts from contexts across the trial and just "
                                 "before each event, each next to its baseline (fp_bps@WINDOW).")] = True,
):
    """Forecast rates (mean, 5/50/95% quantiles) for the bins after a context window, with fp-bps."""
    _fixed_threads(threads)
    from xfads_cli.commands.forecast import forecast as run_forecast

    summary = run_forecast(run, _source(data), out, context=context, horizon=horizon, context_ms=context_ms,
                           horizon_ms=horizon_ms, split=split, samples=samples, mode=mode, keep_samples=save_samples,
                           fmt=fmt, overwrite=overwrite, overrides=set_ or [], device=device, plot=plot, at_s=at_s,
                           grid=grid)
    _report(summary, f"xfads forecast: {summary['trials']} trials, {summary['horizon_bins']} bins ahead", json_out, quiet)


@app.command()
@handle_errors
def embed(
    run: Annotated[Path, typer.Argument(help="A meta-dynamical run directory (or .pt checkpoint).")],
    data: Annotated[list[str], typer.Argument(help="Recordings of sessions in the run (paths or URLs).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output HDF5 file.")],
    set_: SetOpt = None,
    device: DeviceOpt = "auto",
    threads: ThreadsOpt = None,
    overwrite: OverwriteOpt = False,
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
    plot: PlotOpt = False,
):
    """Per-session embeddings q(e_i) (mean, variance) and per-trial embeddings of a meta run."""
    _fixed_threads(threads)
    from xfads_cli.commands.embed import embed as run_embed

    summary = run_embed(run, _sources(data), out, overwrite=overwrite, overrides=set_ or [], device=device, plot=plot)
    _report(summary, f"xfads embed: {len(summary['sessions'])} sessions", json_out, quiet)


@app.command()
@handle_errors
def adapt(
    run: Annotated[Path, typer.Argument(help="A meta-dynamical run directory (or .pt checkpoint).")],
    data: Annotated[str, typer.Argument(help="Recording of the NEW session (a path or URL).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="New run directory (old sessions + the new one).")],
    trials: Annotated[int, typer.Option("--trials", "-n", help="Number of training trials to adapt on.")],
    max_epochs: Annotated[Optional[int], typer.Option("--max-epochs", help="Stop after this many epochs.")] = None,
    time_limit: Annotated[Optional[float], typer.Option("--time-limit", help="Stop after this many minutes.")] = None,
    refine_embedding: Annotated[bool, typer.Option(
        "--refine-embedding/--encoder-embedding",
        help="Fit the new session's embedding mean with its read-in/readout (default), or take the frozen "
             "embedding encoder's estimate.")] = True,
    set_: SetOpt = None,
    device: DeviceOpt = "auto",
    threads: ThreadsOpt = None,
    overwrite: OverwriteOpt = False,
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
    plot: PlotOpt = False,
):
    """Few-shot: fit a new session's read-in/readout (and embedding) on N trials with the shared dynamics frozen."""
    from xfads_cli.commands.adapt import adapt as run_adapt
    from xfads_cli.progress import EpochProgress

    with EpochProgress(max_epochs or 0, quiet=quiet) as progress:
        summary = run_adapt(run, _source(data), out, trials=trials, max_epochs=max_epochs, time_limit_min=time_limit,
                            refine_embedding=refine_embedding, overwrite=overwrite, overrides=set_ or [], device=device,
                            progress=progress, plot=plot, threads=threads)
    _report(summary, f"xfads adapt: session {summary['adapted_session']} from {summary['trials']} trials, "
            f"{summary['epochs']} epochs", json_out, quiet)


@app.command()
@handle_errors
def stream(
    run: Annotated[Path, typer.Argument(help="Run directory from 'xfads fit' or 'xfads adapt' (or a .pt checkpoint).")],
    source: Annotated[str, typer.Option(
        "--input", "-i", help="- (stdin), a file of NDJSON lines {\"counts\": [...], \"t\": s}, or lsl:NAME "
                              "(a Lab Streaming Layer stream, one channel per unit; needs pylsl).")] = "-",
    output: Annotated[str, typer.Option(
        "--output", "-o", help="- (stdout), a file (complete when the stream ends), or lsl:NAME (an LSL outlet).")] = "-",
    horizon: Annotated[int, typer.Option("--horizon", help="Also forecast the rates of this many bins ahead.")] = 0,
    samples: Annotated[Optional[int], typer.Option(help="Posterior samples per bin (default: the run's).")] = None,
    session: Annotated[Optional[str], typer.Option(help="A multi-session run: the session decoded.")] = None,
    data: Annotated[Optional[str], typer.Option(
        "--data", help="A multi-session run: the session's recording, whose training trials give its embedding "
                       "(an adapted session needs none).")] = None,
    stats: Annotated[Optional[Path], typer.Option(
        "--stats", help="Write JSON stats when the stream ends: bins, missing, errors, latency_ms {p50, p99, max}.")] = None,
    describe: Annotated[bool, typer.Option(
        "--describe", help="Print the run's sessions, units (the input's order) and bin width, and exit.")] = False,
    seed: Annotated[Optional[int], typer.Option(help="Seed of the filter's draws (default: the run's).")] = None,
    device: DeviceOpt = "auto",
    threads: Annotated[Optional[str], typer.Option(
        "--threads", help="CPU threads (default 1: 2 threads gave no lower latency per bin in "
                          "benchmarks/stream_latency.py, and share the cores with the acquisition).")] = None,
    overwrite: OverwriteOpt = False,
    json_out: JsonOpt = False,
):
    """Decode a live stream causally, bin by bin: latents, rates and forecasts, one NDJSON line (or LSL
    sample) per input bin, for closed-loop experiments. Ctrl-C or SIGTERM ends it cleanly."""
    _fixed_threads(threads or "1")
    from xfads_cli.commands.stream import describe_run, stream as run_stream

    if describe:
        from xfads_cli.runs.run import load_run

        info = describe_run(load_run(run, device))
        if json_out:
            _print_json(info)
        else:
            for s in info["sessions"]:
                _stderr(f"session {s['name']}: {s['n_units']} units, {info['bin_ms']:g} ms bins")
                sys.stdout.write(" ".join(map(str, s["units"])) + "\n")
        return
    if json_out and output == "-":
        raise UsageError("--json prints the stats on stdout, where --output - writes the decoded bins; "
                         "give --output FILE or lsl:NAME, or use --stats FILE")
    summary = run_stream(run, source=source, output=output, horizon=horizon, samples=samples, session=session,
                         data=data, stats=stats, overwrite=overwrite, device=device, seed=seed)
    if json_out:
        _print_json(summary)


@app.command()
@handle_errors
def generate(
    run: Annotated[Path, typer.Argument(help="Run directory from 'xfads fit' or 'xfads adapt' (or a .pt checkpoint).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output file: .nwb (units + trials) or .h5 (plain HDF5 layout).")],
    trials: Annotated[int, typer.Option("--trials", "-n", help="Number of trials to generate.")] = 100,
    bins: Annotated[Optional[int], typer.Option(help="Bins per trial (default: the training trials' length).")] = None,
    seed: Annotated[Optional[int], typer.Option(help="Random seed (default: the run's; same seed, same data).")] = None,
    sampler: Annotated[str, typer.Option(help="ancestral (draw from the prior, bin by bin) | ldidp (a diffusion model "
                                               "over whole latent trajectories, trained first on the run's posterior draws)")] = "ancestral",
    ldidp_steps: Annotated[int, typer.Option("--ldidp-steps", help="--sampler ldidp: training steps of the diffusion model.")] = 1500,
    ddim_steps: Annotated[int, typer.Option("--ddim-steps", help="--sampler ldidp: deterministic sampling steps.")] = 50,
    session: Annotated[Optional[str], typer.Option(help="A multi-session run: the session generated.")] = None,
    conditions: Annotated[Optional[str], typer.Option(help="A run with condition inputs: generate these labels only (comma-separated).")] = None,
    compare: Annotated[Optional[str], typer.Option(
        "--compare", help="A real recording of the session (e.g. the run's training data): print a posterior-predictive "
                          "report (rates, PSTH, Fano factors, pairwise correlations, MMD).")] = None,
    device: DeviceOpt = "auto",
    threads: ThreadsOpt = None,
    overwrite: OverwriteOpt = False,
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
    plot: Annotated[bool, typer.Option("--plot", help="With --compare: FILE-stem.predictive.png (needs matplotlib).")] = False,
):
    """Sample a synthetic recording (latents, rates, spike counts) from a fitted model's generative model."""
    _fixed_threads(threads)
    from xfads_cli.commands.generate import generate as run_generate

    summary = run_generate(run, out, trials=trials, bins=bins, seed=seed, sampler=sampler, session=session,
                           compare=None if compare is None else _source(compare), plot=plot, device=device,
                           overwrite=overwrite, quiet=quiet, ldidp_steps=ldidp_steps, ddim_steps=ddim_steps, conditions=conditions)
    if json_out:
        _print_json(summary)


@app.command()
@handle_errors
def sweep(
    data: Annotated[Optional[list[str]], typer.Argument(help="Recording(s) every trial fits, as for fit.")] = None,
    space: Annotated[Optional[Path], typer.Option(
        "--space", help="YAML search space: config key -> [choices] or {uniform|log_uniform|int|log_int: [low, high]}.")] = None,
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Sweep directory (rerun the command to continue it).")] = None,
    trials: Annotated[Optional[int], typer.Option(
        "--trials", "-n", help="Trials to finish (complete, pruned or failed), over all workers and reruns.")] = None,
    workers: Annotated[int, typer.Option("--workers", help="Worker processes on this machine, each with cores / K threads unless --threads.")] = 1,
    worker: Annotated[bool, typer.Option(
        "--worker", help="Run one worker of a shared sweep (e.g. each task of a SLURM array).")] = False,
    worker_index: Annotated[Optional[int], typer.Option("--worker-index", hidden=True)] = None,
    time_limit: Annotated[Optional[float], typer.Option(
        "--time-limit", help="Stop after this many minutes; the trials in progress are saved and resumed on the next run.")] = None,
    status: Annotated[Optional[Path], typer.Option("--status", help="Show the trials of this sweep directory and exit.")] = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    seed: Annotated[Optional[int], typer.Option(help="Random seed of every trial (overrides the config's seed).")] = None,
    device: DeviceOpt = "auto",
    threads: ThreadsOpt = None,
    json_out: JsonOpt = False,
    plot: Annotated[bool, typer.Option("--plot", help="With --status: history.png and importances.png in the sweep directory.")] = False,
    log: Annotated[Optional[list[str]], typer.Option("--log", help="As fit --log, one run per trial (mlflow: SWEEP_DIR/mlflow.db).")] = None,
):
    """Hyperparameter search: N fits over a search space, each a run directory SWEEP_DIR/trials/NNNN.

    Workers (--workers K here, or --worker processes on any nodes that share SWEEP_DIR) cooperate through
    SWEEP_DIR/journal.log; bad trials are pruned early; SWEEP_DIR/best links the best run. Exit codes:
    0 done (or --time-limit), 1 failure, 2 bad usage or input, 75 preempted (rerun the same command).
    """
    from xfads_cli.sweep.status import render
    from xfads_cli.train.signals import EXIT_PREEMPTED

    if status is not None:
        from xfads_cli.sweep.command import sweep_status

        summary = sweep_status(status, plot=plot)
    else:
        from xfads_cli.sweep.command import sweep as run_sweep

        if space is None or out is None or trials is None:
            raise UsageError("xfads sweep needs DATA... --space FILE --out DIR --trials N (or --status DIR)")
        summary = run_sweep(_local_sources(data or []), space, out, trials=trials, workers=workers, worker=worker,
                            worker_index=worker_index, time_limit_min=time_limit, config_path=config,
                            overrides=set_ or [], seed=seed, device=device, threads=threads, log=log or [])
    if worker:  # one of many: one line (the table is `xfads sweep --status`)
        _stderr(f"worker stopped ({summary['stopped']}): {summary['finished']}/{summary['n_trials']} trials finished")
    else:
        render(summary)
    for line in [*summary.get("plots", []), *summary.get("notes", [])]:
        _stderr(f"wrote {line}" if line in summary.get("plots", []) else f"note: {line}")
    if json_out:
        _print_json(summary)
    if summary.get("stopped") == "preempted":
        raise typer.Exit(EXIT_PREEMPTED)


@app.command()
@handle_errors
def compare(
    data: Annotated[list[str], typer.Argument(
        help="The recording every kind fits: NWB (.nwb) or HDF5 (.h5), a path or URL (several: --kinds xfads only).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Directory to write: DIR/<kind>/ run directories and DIR/summary.json.")],
    kinds: Annotated[str, typer.Option(
        "--kinds", help="Model kinds to fit, comma-separated, in this order: xfads, dkf, dvbf, latent_sde.")] = "xfads,dkf,dvbf,latent_sde",
    time_limit: Annotated[Optional[float], typer.Option(
        "--time-limit", help="Stop each fit after this many minutes (EACH kind's budget).")] = None,
    max_epochs: Annotated[Optional[int], typer.Option("--max-epochs", help="Stop each fit after this many epochs.")] = None,
    workers: Annotated[int, typer.Option(
        "--workers", help="Fits at once, as subprocesses with cores / K threads each (unless --threads): their "
                          "timings then compete for the cores. Default 1: one after another.")] = 1,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    seed: Annotated[Optional[int], typer.Option(help="Random seed of every fit (overrides the config's seed).")] = None,
    device: DeviceOpt = "auto",
    threads: ThreadsOpt = None,
    overwrite: OverwriteOpt = False,
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
):
    """Fit XFADS and the comparison kinds (dkf, dvbf, latent_sde: the same generative model, another inference
    network) to one recording with the same config, split, seed and budget; one table of test fp-bps, co-bps,
    test-retest ratio, epochs, s/epoch and parameters next to the trivial baselines. Exit codes: 0 done,
    1 a fit failed (the others ran; summary.json says which), 2 bad usage or input, 75 preempted."""
    from xfads_cli.commands.compare import compare as run_compare, render_comparison
    from xfads_cli.train.signals import EXIT_PREEMPTED, Preempted

    try:
        summary = run_compare(_sources(data), out, kinds=kinds, config_path=config, overrides=set_ or [], seed=seed,
                              max_epochs=max_epochs, time_limit_min=time_limit, workers=workers, device=device,
                              threads=threads, overwrite=overwrite, quiet=quiet)
    except Preempted as exc:
        _stderr(f"preempted: {exc}")
        raise typer.Exit(EXIT_PREEMPTED) from None
    render_comparison(summary, quiet=quiet)
    if json_out:
        _print_json(summary)
    if summary.get("failed"):
        raise typer.Exit(1)


def _one_line_warning(message, category, filename, lineno, line=None) -> str:
    """Loader notes (warnings.warn) as one 'warning: ...' line instead of Python's two-line format."""
    text = " ".join(str(message).split())
    return f"warning: {text}\n"


def main() -> None:
    """Console entry point: the parser's own usage errors also become one line and exit code 2."""
    import warnings

    warnings.formatwarning = _one_line_warning
    command = typer.main.get_command(app)
    try:
        code = command.main(args=sys.argv[1:], prog_name="xfads", standalone_mode=False)
    except Exception as exc:  # noqa: BLE001 - typer vendors click in newer releases; match by shape
        kind = type(exc).__name__
        if kind == "Exit":
            code = exc.exit_code
        elif kind == "Abort":
            _stderr("aborted")
            code = 130
        elif hasattr(exc, "format_message") and hasattr(exc, "exit_code"):
            _stderr(f"error: {exc.format_message()} (see xfads --help)")
            code = 2 if exc.exit_code == 2 else exc.exit_code
        else:
            raise
    sys.exit(code if isinstance(code, int) else 0)
