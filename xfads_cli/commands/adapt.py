"""`xfads adapt`: a new session for a meta run from a handful of trials, the shared parts frozen."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from xfads_cli.data.source import source_name
from xfads_cli.errors import UsageError
from xfads_cli.scoring.evaluate import evaluate
from xfads_cli.runs.rundir import (
    RunWriter,
    atomic_text,
    data_provenance,
    data_summary,
    prepare_out,
)
from xfads_cli.model.spec import ModelSpec
from xfads_cli.runs import as_tensor, load_run, model_spec, require_meta


def same_values(before: list[torch.Tensor], params) -> bool:
    """Whether `params` (e.g. model.shared_parameters()) hold exactly the values `before` (copies taken
    earlier, in the same order)."""
    params = list(params)
    return len(params) == len(before) and all(torch.equal(a, p.detach()) for a, p in zip(before, params))


def adapt(run_path: Path, data_path: Path, out: Path, *, trials: int, max_epochs: int | None = None,
          time_limit_min: float | None = None, refine_embedding: bool = True, overwrite: bool = False, overrides=(),
          device: str = "auto", progress=None, plot: bool = False, threads: str | None = None) -> dict:
    """Few-shot adaptation (docs/model.md section 6): a new read-in, readout and likelihood for the new
    session, trained on its first `trials` training trials with every shared parameter frozen. The
    embedding mean is a parameter of the new session fitted with them (refine_embedding, from the
    prior mean), or the frozen embedding encoder's pooled estimate. Writes a new run directory holding the
    old sessions plus the new one, usable by smooth, forecast and embed."""
    from xfads_cli.config import dump_config
    from xfads_cli.train.loop import train_model
    from xfads_cli.train.threads import configure_threads

    _check_budget(trials, max_epochs, time_limit_min)
    run = load_run(run_path, device)
    require_meta(run, "adapt")
    if Path(out).resolve() in (Path(run_path).resolve(), run.path.parent.resolve()):
        raise UsageError(f"--out {out} is the run being adapted; xfads never modifies its input, choose a new "
                         "directory for the adapted run")
    config, train_cfg = _adapt_config(run, overrides, trials, time_limit_min)
    tuner = configure_threads(threads if threads is not None else config.train.threads, tune=run.device.type == "cpu")
    data, shots = _new_session(run, run_path, data_path, config, trials)
    out = Path(out)
    prepare_out(out, overwrite, resume=False)

    model = run.model
    before = {k: v.detach().clone() for k, v in model.state_dict().items()}
    shared_before = [p.detach().clone() for p in model.shared_parameters()]
    y = as_tensor(shots.counts, run)
    # the session's embedding is pooled over the few shots only, also later in smooth/forecast
    new_spec = model_spec(data) | {"name": data.session, "embed_trial_ids": [int(t) for t in shots.trial_ids]}
    if refine_embedding:
        # The encoder reads the new session through a read-in that starts random, so its estimate of e
        # is poor until the read-in is trained; the mean is fitted directly instead, by the ELBO with the
        # read-in/readout and then by a forecast search (benchmarks/README.md: meta_fewshot.py).
        new_spec["refine_embedding"] = True
    index = model.add_session(new_spec, y)
    start = _starting_embedding(model, y) if refine_embedding else None
    if start is not None:
        with torch.no_grad():
            model.sessions[index].embedding.copy_(start)
    model.freeze_shared()
    valid = data.subset("valid")
    base = _adapted_checkpoint(run, config, new_spec, data, trials)
    atomic_text(out / "config.yaml", dump_config(config))
    writer = RunWriter(out, base, model)
    t0 = time.monotonic()
    model.train()
    training = train_model(model, [None] * index + [y], [None] * index + [as_tensor(valid.counts, run) if valid.n_trials else None],
                   train_cfg, seed=config.seed, parameters=_trained_parameters(model, index, start),
                   max_epochs=max_epochs, threads=tuner)
    for event in training:  # EpochEnd only: adapt installs no preemption handler
        writer.on_epoch(event.record, event.is_best, event.state)
        if progress is not None:
            progress.update(event.record)
    result = training.result
    # the ELBO-fitted mean, before the search (reported: did the forecasts of the shots move it?)
    fitted_e = model.sessions[index].embedding.detach().cpu().tolist() if refine_embedding else None
    search = _search_embedding(model, index, y, writer, config.seed) if refine_embedding and y.shape[1] >= 2 else None
    shared_unchanged = same_values(shared_before, model.shared_parameters())
    changed = [k for k, v in model.state_dict().items() if k in before and not torch.equal(v, before[k])]
    if changed:  # a bug, not a user error: shared parameters must never move during adapt
        raise RuntimeError(f"adapt changed shared parameters: {changed[:3]}")
    model.eval()
    view = model.session(index, lambda: y)
    # no trivial baselines here: they would be fitted on the whole train split, the model on `trials` shots
    metrics = evaluate(view, data, config, splits=("valid", "test"), baselines=False)
    summary = {
        "run_dir": str(out), "kind": "meta", "adapted_session": data.session, "trials": trials,
        "epochs": len(result.history), "best_epoch": result.best_epoch, "stopped": result.stopped,
        "seconds": time.monotonic() - t0, "metrics": metrics, "data": data_summary(data),
        "shared_parameters_unchanged": shared_unchanged, "refined_embedding": refine_embedding,
        "embedding_mean": view.e.detach().cpu().tolist(), "threads": tuner.summary(), "versions": base.versions,
    }
    if search is not None:
        summary["embedding_search"] = {"forecast_nll": search.nll, "candidates": len(search.scores), "fitted": fitted_e,
                                       "start": None if start is None else start.cpu().tolist()}
    return writer.finish(summary, result.history, plot)


def _trained_parameters(model, index: int, start) -> list:
    """The new session's parameters adapt trains. With a starting embedding the mean stays there while
    the read-in and readout learn: the ELBO hardly depends on e, and trained with them it wandered off
    the training sessions (2.7 units on the benchmark, to the family's far end), where the forecast
    search's 2-standard-error rule then kept it. The search alone moves it (benchmarks/README.md)."""
    part = model.sessions[index]
    if start is None:
        return list(part.parameters())
    return [p for name, p in part.named_parameters() if name != "embedding"]


def _starting_embedding(model, y):
    """Where the new session's embedding starts (not at the prior mean): where its shots' signature
    places it among the training sessions (model/embedding_init.py); for runs that do not record the
    training sessions' signatures, their centroid; None when neither is known."""
    placed = model.signature_start(y)
    if placed is not None:
        return placed
    fitted = model.fitted_embeddings()
    return None if fitted is None else fitted[0].mean(0)


def _check_budget(trials: int, max_epochs: int | None, time_limit_min: float | None) -> None:
    if trials < 1:
        raise UsageError(f"--trials must be >= 1, got {trials}")
    if max_epochs is not None and max_epochs < 1:
        raise UsageError(f"--max-epochs must be >= 1, got {max_epochs}")
    if time_limit_min is not None and not time_limit_min > 0:  # also NaN
        raise UsageError(f"--time-limit must be > 0 minutes, got {time_limit_min:g}; e.g. --time-limit 5")


def _adapt_config(run, overrides, trials: int, time_limit_min: float | None):
    """The run's config with the --set overrides, and the training config of this adaptation."""
    from dataclasses import replace

    from xfads_cli.config import load_config, resolved_config

    config = load_config(overrides=overrides, base=resolved_config(run.config))
    if config.train.batch_size is None:  # e.g. --set train.batch_size=null: resolved from the shots, as fit does
        from xfads_cli.train.draws import auto_batch_size

        config = replace(config, train=replace(config.train, batch_size=auto_batch_size(trials)))
    train_cfg = config.train if time_limit_min is None else replace(config.train, time_limit_min=time_limit_min)
    return config, train_cfg


def _new_session(run, run_path: Path, data_path: Path, config, trials: int):
    """The new recording, checked, with its first `trials` training trials (in recording order) as the
    shots and the rest of its training split unused; its valid split is held out for early stopping."""
    from xfads_cli.data.load import load_data
    from xfads_cli.model.likelihoods import support_problem

    data = load_data(data_path, config.data)
    problem = support_problem(config.model.likelihood, data.counts)
    if problem:
        raise UsageError(f"{source_name(data_path)} {problem}")
    if data.session in run.spec.names:
        raise UsageError(f"session '{data.session}' is already in {run_path}; use smooth/forecast on it directly "
                         "(or --set data.session=NEW_NAME)")
    available = data.subset("train")
    if trials > available.n_trials:
        raise UsageError(f"--trials {trials} but {source_name(data_path)} has only {available.n_trials} training trials "
                         f"(of {data.n_trials}); lower --trials")
    shots = available.select(np.arange(trials))
    split = data.split.copy()
    split[np.flatnonzero(split == "train")[trials:]] = "unused"
    data.split = split
    return data, shots


def _adapted_checkpoint(run, config, new_spec: dict, data, trials: int):
    """The checkpoint fields of the adapted run: the old sessions plus the new one, and where it came from."""
    from xfads_cli.config import resolved_config
    from xfads_cli.data.provenance import package_versions
    from xfads_cli.runs.checkpoint import Checkpoint

    spec = ModelSpec(run.spec.sessions + (new_spec,), meta=True).to_dict()
    return Checkpoint(config=resolved_config(config), spec=spec, data=list(run.checkpoint.data) + [data_provenance(data)],
                      versions=package_versions(),
                      adapted_from={"checkpoint": str(run.path), "sha256": run.sha256, "trials": trials})


def _search_embedding(model, index: int, y, writer, seed: int):
    """The ELBO barely constrains e (a smoother needs little from the dynamics): keep the embedding under
    which the shots' second halves are best forecast from their first halves, searched where the
    training sessions sit (when the run records it), and rewrite the checkpoints."""
    from xfads_cli.train.embedding_search import search_embedding, training_manifold

    model.eval()
    fitted = model.fitted_embeddings()
    among = None if fitted is None else training_manifold(fitted[0])
    search = search_embedding(model, index, y, model.sessions[index].embedding.detach(), among=among, seed=seed)
    with torch.no_grad():
        model.sessions[index].embedding.copy_(search.e)
    writer.replace_model()
    return search
