"""`xfads fit` as a library function: data -> model -> training -> RUN_DIR (the files: runs/rundir.py).
The CLI's `fit` and the sweep's trials both call `run_fit`.

Nothing is created before the input has been loaded and validated (no partial output on bad input).
On SIGTERM/SIGUSR1 the current step finishes, last.pt gets the exact mid-epoch state and `Preempted`
is raised (exit code 75 in the CLI); `resume="auto"` continues such a run when last.pt exists and
starts afresh otherwise. Distributed (train/distributed.py): every rank trains, rank 0 alone writes.
"""

from __future__ import annotations

import math
import os
import time
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

from xfads_cli.config import Config, dump_config, load_config, resolved_config
from xfads_cli.errors import RunFailure, UsageError
from xfads_cli.runs.rundir import (
    RunWriter,
    atomic_text,
    check_out,
    create_out,
    data_provenance,
    data_summary,
)
from xfads_cli.model.spec import ModelSpec, build_model
from xfads_cli.runs import as_tensor, model_spec, bound_sessions
from xfads_cli.scoring.evaluate import evaluate
from xfads_cli.scoring.selection import selection_fp_bps, selection_note
from xfads_cli.scoring.summary import baseline_summary
from xfads_cli.runs.checkpoint import Checkpoint
from xfads_cli.runs.tracking import Target, Tracking
from xfads_cli.train.lock import RunLock


@contextmanager
def deterministic_mode(enabled: bool):
    """torch.use_deterministic_algorithms(True), cuDNN autotuning off and CUBLAS_WORKSPACE_CONFIG set
    (what deterministic cuBLAS needs) for the block; the previous settings are restored after it.
    Same seed + same device + same software => same result."""
    if not enabled:
        yield
        return
    import torch

    previous = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
                torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic)
    env = os.environ.get("CUBLAS_WORKSPACE_CONFIG")
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = False, True
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(previous[0], warn_only=previous[1])
        torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = previous[2], previous[3]
        if env is None:
            os.environ.pop("CUBLAS_WORKSPACE_CONFIG", None)


def run_fit(paths: list[Path], config: Config, out: Path, *, log=(), target: Target | None = None, **options) -> dict:
    """Fit XFADS to one recording, or the meta-dynamical model to several (model.kind: meta, or more
    than one DATA), and write RUN_DIR; returns the summary (also in summary.json).

    resume: False (a new run), True (continue from last.pt; an error without one) or "auto" (continue
    if last.pt exists, else start afresh). A resumed run keeps the checkpoint's config except
    train.time_limit_min, which is this invocation's budget. dist: this process's rank
    (train.distributed.detect()); None: one process. handle_signals: SIGTERM/SIGUSR1 during training
    save a resumable last.pt and raise train.signals.Preempted. threads: 'auto' / N / None ($XFADS_THREADS
    or auto), see train/threads.py. One process writes RUN_DIR at a time (train/lock.py). log: the
    experiment trackers (tensorboard, mlflow, csv; runs/tracking.py), target: where a sweep trial logs."""
    tracking = Tracking(log, out, target)  # an unknown or missing tracker: a UsageError here
    lock = RunLock(Path(out))
    try:
        summary = _fit(paths, config, out, lock=lock, tracking=tracking, **options)
    except BaseException as exc:
        tracking.close(exc)
        raise
    else:
        tracking.close()
        return summary
    finally:
        lock.release()


def _fit(paths: list[Path], config: Config, out: Path, *, lock, device: str = "auto", overwrite: bool = False,
         resume: bool | str = False, max_epochs: int | None = None, progress=None, plot: bool = False,
         deterministic: bool = False, dist=None, handle_signals: bool = True, threads: str | None = None,
         tracking=None) -> dict:
    import torch

    from xfads_cli.train.distributed import SINGLE, process_group, rank_device
    from xfads_cli.train.threads import configure_threads

    d = dist or SINGLE
    out = Path(out)
    resumed = check_out(out, overwrite, resume)
    ckpt = _resumable_checkpoint(out) if resumed else None
    if ckpt is not None:  # the run's own config; only the time budget is this invocation's
        limit = config.train.time_limit_min
        config = load_config(base=ckpt.config)
        config = replace(config, train=replace(config.train, time_limit_min=limit))
    if plot:
        from xfads_cli.outputs.plots import require_matplotlib

        require_matplotlib()
    config, sessions, meta = load_fit_sessions(paths, config)
    select = selection_key(config, sessions, meta)
    dev = rank_device(d, device)
    tuner = configure_threads(threads if threads is not None else config.train.threads, world=d.world,
                              tune=not deterministic and dev.type == "cpu")
    # The process group is up before rank 0 creates anything: every rank has passed the checks above
    # (under torchrun a rank failing them ends the job, so none waits here for ever).
    with deterministic_mode(deterministic), process_group(d, dev):
        torch.manual_seed(config.seed)
        model, spec = _build(config, sessions, meta, dev, resumed_spec=ckpt.spec if ckpt is not None else None)
        if progress is not None and d.is_main and not getattr(progress, "quiet", False):
            from xfads_cli.progress import log

            log(describe_inputs(model))
        trains = [as_tensor(d_.subset("train").counts, model) for d_ in sessions]
        valids = [as_tensor(d_.subset("valid").counts, model) if d_.subset("valid").n_trials else None for d_ in sessions]
        inputs = (_split_inputs(model, sessions, "train"), _split_inputs(model, sessions, "valid"))
        if ckpt is not None:
            _check_resumable(ckpt.spec, spec, out)
            model.load_state_dict(ckpt.model)
        else:
            for i, (y, u) in enumerate(zip(trains, inputs[0])):
                model.init_from_data(y, i, **({} if u is None else {"u": u}))
            if meta:
                model.init_embeddings(trains)
        # The input is loaded and valid: only now does anything appear on disk (rank 0 only).
        if d.is_main:
            _open_run_dir(out, lock, overwrite, resume, resumed, config)
        base = _base_checkpoint(config, spec, sessions, meta)
        writer = RunWriter(out, base, model, ckpt.train_state if ckpt else None, tracking) if d.is_main else None
        t0 = time.monotonic()
        result = _train(model, trains, valids, config, out, meta, inputs=inputs, select=select, resume=ckpt,
                        max_epochs=max_epochs,
                        dist=d, threads=tuner, progress=progress, writer=writer, handle_signals=handle_signals,
                        evaluate=_epoch_scores(model, sessions, config, select, meta) if d.is_main else None)
        if not d.is_main:
            return {"run_dir": str(out), "rank": d.rank, "epochs": len(result.history)}
        check = _keep_embeddings(model, writer, trains, config) if meta else None
        metrics = {}
        for view, data in zip(bound_sessions(model, sessions), sessions):
            metrics.update({_key(k, data, meta): v for k, v in evaluate(view, data, config).items()})
    note = None if meta else selection_note(result.select, result.best_score, result.best_epoch, config,
                                            sessions[0].subset("valid"))
    summary = {
        "run_dir": str(out), "kind": config.model.kind, "epochs": len(result.history),
        "best_epoch": result.best_epoch, "selected_on": result.select, "best_score": result.best_score,
        "stopped": result.stopped, "seconds": time.monotonic() - t0, "metrics": metrics,
        "data": [data_summary(s) for s in sessions] if meta else data_summary(sessions[0]),
        "task_inputs": describe_inputs(model),
        "device": str(dev), "world_size": d.world, "threads": tuner.summary(), "deterministic": deterministic,
        "versions": base.versions,
    }
    summary.update(baseline_summary(sessions, metrics, meta))
    notes = ([note] if note else []) + (check.warnings if check is not None else [])
    summary.update({"embedding": check.to_dict()} if check is not None else {})
    if notes:
        summary["notes"] = notes
    return writer.finish(summary, result.history, plot)


def _keep_embeddings(model, writer, trains: list, config: Config):
    """A meta run's end: each training session's q(e_i) stored with the best model (where `adapt` and
    `embed` place sessions), and scoring/embedding.py's check of those embeddings."""
    from xfads_cli.scoring.embedding import check_embedding, default_horizon, smoothed_states

    model.eval()
    writer.replace_entries(model.keep_fitted_embeddings(trains))
    means, variances = model.fitted_embeddings()
    z0 = smoothed_states(model, trains, means, seed=config.seed)
    horizon = default_horizon(max(y.shape[1] for y in trains), config.eval.horizon_bins)
    return check_embedding(model, means, variances, z0, horizon, seed=config.seed)


def training_line(summary: dict) -> str:
    """The line `xfads fit` ends with. Epochs are numbered from 0 there as in the progress line,
    metrics.csv, summary.json and the checkpoints, and the range says so."""
    n, best = summary["epochs"], summary["best_epoch"]
    line = "1 epoch" if n == 1 else f"{n} epochs" + (f" (0-{n - 1})" if n else "")
    if best >= 0:
        line += f", best epoch {best}"
    return f"{line}; stopped: {summary['stopped']}"


def _resumable_checkpoint(out: Path) -> Checkpoint:
    """last.pt of the run to resume, its training state carrying the best parameters so far."""
    ckpt = Checkpoint.load(out / "last.pt")
    if ckpt.train_state is None:
        raise UsageError(f"--resume: {out / 'last.pt'} holds no training state (a copy of best.pt?); "
                         "start a new run (another --out, or --overwrite)")
    ckpt.train_state["best_model"] = ckpt.best_model
    return ckpt


def load_fit_sessions(paths: list[Path], config: Config) -> tuple[Config, list, bool]:
    """The recordings, checked for this likelihood and for training trials; the config with the meta
    kind when there are several, and with the batch size resolved; whether the model is the meta one.
    Also what `xfads sweep` checks before its first trial (sweep/setup.py)."""
    from xfads_cli.data.sessions import load_sessions
    from xfads_cli.model.likelihoods import support_problem

    sessions = load_sessions(paths, config.data)
    if len(sessions) > 1 and config.model.kind not in ("xfads", "meta"):
        raise UsageError(f"model.kind={config.model.kind} fits one recording; give one DATA file, or fit several "
                         "with model.kind=meta")
    meta = config.model.kind == "meta" or len(sessions) > 1
    if meta and config.model.kind != "meta":
        config = replace(config, model=replace(config.model, kind="meta"))
    for data in sessions:
        problem = support_problem(config.model.likelihood, data.counts)
        if problem:
            raise UsageError(f"{Path(data.provenance.get('path', 'the recording')).name} {problem}")
        if data.subset("train").n_trials == 0:
            raise UsageError(f"{data.provenance.get('path')} gives no training trials; check data.split or the trial options")
    return resolve_batch_size(config, sessions), sessions, meta


def _open_run_dir(out: Path, lock, overwrite: bool, resume, resumed: bool, config: Config) -> None:
    """Take the run's lock, check nobody wrote RUN_DIR meanwhile, create it and its config.yaml."""
    lock.acquire()
    if check_out(out, overwrite, resume) != resumed:
        raise UsageError(f"{out} changed while this fit was loading its data (another process wrote it); "
                         "run the command again")
    create_out(out, fresh=not resumed)
    atomic_text(out / "config.yaml", dump_config(config))


def _base_checkpoint(config: Config, spec: dict, sessions: list, meta: bool) -> Checkpoint:
    """The checkpoint fields that stay the same all run."""
    from xfads_cli.data.provenance import package_versions

    data = [data_provenance(s) for s in sessions] if meta else data_provenance(sessions[0])
    return Checkpoint(config=resolved_config(config), spec=spec, versions=package_versions(), data=data)


def _epoch_scores(model, sessions: list, config: Config, select: str, meta: bool):
    """The per-epoch validation scores (rank 0): cheap ones only, no decoder fit on the training
    trials, no baselines, and a forecast pass only when it selects the best epoch."""
    def scores(m) -> dict:
        out_metrics = {}
        for view, data in zip(bound_sessions(model, sessions), sessions):
            if data.subset("valid").n_trials:
                found = evaluate(view, data, config, splits=("valid",), forecast=False, decode=False, baselines=False)
                if select == "valid_fp_bps":
                    found["valid_fp_bps"] = selection_fp_bps(view, data.subset("valid"), config)
                out_metrics.update({_key(k, data, meta): v for k, v in found.items() if math.isfinite(v)})
        return out_metrics

    return scores


def _train(model, trains: list, valids: list, config: Config, out: Path, meta: bool, *, inputs, select: str, resume,
           max_epochs, dist, threads, progress, writer, handle_signals: bool, evaluate):
    """The training of the model's kind, RUN_DIR written as it goes (rank 0: checkpoints at every
    epoch, the exact state when preempted) and progress drawn; preemption and failures say what
    last.pt holds."""
    from xfads_cli.train.loop import EpochEnd
    from xfads_cli.train.signals import Preempted, catch_preemption

    state = resume.train_state if resume is not None else None
    if progress is not None:
        progress.resume(select, state.get("best") if state else None, total=max_epochs or config.train.max_epochs)
    common = dict(seed=config.seed, select=select, resume=state, max_epochs=max_epochs, dist=dist, threads=threads,
                  evaluate=evaluate)
    try:
        with catch_preemption() if handle_signals else _no_signals() as stop:
            from xfads_cli.train.loop import train_model

            training = train_model(model, trains, valids, config.train, should_stop=stop, inputs=inputs, **common)
            for event in training:
                if isinstance(event, EpochEnd):
                    if writer is not None:
                        writer.on_epoch(event.record, event.is_best, event.state)
                    if progress is not None and dist.is_main:
                        progress.update(event.record)
                elif writer is not None:  # Interrupted: the exact mid-epoch state
                    writer.on_interrupt(event.state)
            return training.result
    except Preempted as exc:
        raise Preempted(f"{exc}; {out / 'last.pt'} holds the exact state, continue with --resume") from None
    except RunFailure as exc:
        if (out / "last.pt").is_file():
            raise RunFailure(f"{exc} ({out / 'last.pt'} keeps the last completed epoch)") from None
        raise


def _check_resumable(saved: dict, spec: dict, out: Path) -> None:
    """UsageError when the data given to --resume are not the ones the run in `out` was trained on."""
    saved_sessions, sessions = ModelSpec.of(saved).sessions, ModelSpec.of(spec).sessions
    fix = "resume with the recording(s) and data options the run was fitted on, or start a new run (another --out, or --overwrite)"
    if len(saved_sessions) != len(sessions):
        raise UsageError(f"--resume: {len(sessions)} recording(s) given but the run in {out} was trained on "
                         f"{len(saved_sessions)}; {fix}")
    for old, new in zip(saved_sessions, sessions):
        name = f"recording '{new.get('session')}'" if len(sessions) > 1 else "the recording"
        if old["n_neurons"] != new["n_neurons"]:
            raise UsageError(f"--resume: {name} gives {new['n_neurons']} neurons but the run in {out} was trained on "
                             f"{old['n_neurons']}; {fix}")
        for key, what in (("unit_ids", "unit ids"), ("heldin", "held-out neurons (data.heldout_fraction)"),
                          ("bin_ms", "bin size (data.bin_ms)")):
            if key in old and old[key] != new.get(key):
                raise UsageError(f"--resume: the {what} of {name} differ from those the run in {out} was trained "
                                 f"with; {fix}")


def resolve_batch_size(config: Config, sessions: list) -> Config:
    """train.batch_size unset: `auto_batch_size` of the training trials (the median over sessions), so
    that the saved config records the number used."""
    if config.train.batch_size is not None:
        return config
    import statistics

    from xfads_cli.train.draws import auto_batch_size

    n = statistics.median(s.subset("train").n_trials for s in sessions)
    return replace(config, train=replace(config.train, batch_size=auto_batch_size(int(n))))


SELECT_KEYS = {"elbo": "valid_loss", "co_bps": "valid_co_bps", "fp_bps": "valid_fp_bps"}


def selection_key(config: Config, sessions: list, meta: bool) -> str:
    """The epoch-record key that picks best.pt (train.select): 'auto' is co-bps when the recording has
    held-out neurons, else fp-bps (neither can be raised by fitting the noise of the counts the
    encoder reads); the multi-session model selects on its validation -ELBO."""
    select = config.train.select
    if meta:
        if select not in ("auto", "elbo"):
            raise UsageError(f"train.select={select} is not available for the multi-session model; use auto or elbo")
        return "valid_loss"
    data = sessions[0]
    if not (data.split == "valid").any():
        # No score can be computed: without this, every epoch after the first would count as "missing
        # score, no improvement" and best.pt would stay the barely trained first epoch.
        if select in ("co_bps", "fp_bps"):
            raise UsageError(f"train.select={select} needs validation trials and data.split gives none; "
                             "give data.split a validation share (e.g. [0.7, 0.1, 0.2]) or use train.select=elbo")
        import warnings

        warnings.warn("no validation trials: best.pt is the epoch with the lowest training loss, which "
                      "fitting the spikes' noise can lower; give data.split a validation share for an honest "
                      "selection")
        return "train_loss"
    if select == "auto":
        select = "co_bps" if data.heldout.any() else "fp_bps" if data.n_time >= 3 else "elbo"
    if select == "co_bps" and not data.heldout.any():
        raise UsageError("train.select=co_bps needs held-out neurons; set data.heldout_fraction (e.g. 0.2) or "
                         "use train.select=auto")
    if select == "fp_bps" and data.n_time < 3:
        raise UsageError(f"train.select=fp_bps needs trials of at least 3 bins (these have {data.n_time}); "
                         "use train.select=elbo")
    return SELECT_KEYS[select]


@contextmanager
def _no_signals():
    yield None


def _key(metric: str, data, meta: bool) -> str:
    return f"{data.session}/{metric}" if meta else metric


def _build(config: Config, sessions: list, meta: bool, device, resumed_spec: dict | None = None):
    """The model and the plain-data spec that rebuilds it (stored in every checkpoint). A single-session
    model gets the task inputs data.inputs asks for (model/task_inputs.py); the meta model has none. A
    resumed run keeps the inputs of its checkpoint (none for runs from before task inputs)."""
    from xfads_cli.model.task_inputs import choose_inputs

    spec = ModelSpec(tuple(model_spec(d) | ({"name": d.session} if meta else {}) for d in sessions), meta).to_dict()
    if not meta:
        if resumed_spec is not None:
            inputs = resumed_spec.get("inputs")
        else:
            from xfads_cli.scoring.psth import psth_gain_bps

            data = sessions[0]
            found = choose_inputs(config.data.inputs, data, psth_gain_bps(data.counts, data.split == "train",
                                                                          data.conditions))
            inputs = None if found is None else found.to_dict()
        if inputs is not None:
            spec["inputs"] = inputs
    return build_model(config, spec, device), spec


def describe_inputs(model) -> str:
    """One line: the task inputs the model uses (fit prints it; summary.json 'task_inputs')."""
    inputs = model.inputs
    if inputs is None:
        return ("task inputs: none (the autonomous model: data.inputs [auto] adds them on trial-aligned data whose "
                "trial average predicts held-out trials; --set data.inputs=[clock] forces the clock)")
    return "task inputs: " + ", ".join(inputs.names()) + " (--set data.inputs=[] for none)"


def _split_inputs(model, sessions: list, split: str) -> list:
    """Each session's task inputs of `split` as tensors [trial, time, input] (None without inputs)."""
    from xfads_cli.runs import model_inputs

    out = []
    for data in sessions:
        sub = data.subset(split)
        u = model_inputs(model, sub) if sub.n_trials else None
        out.append(None if u is None else as_tensor(u, model))
    return out
