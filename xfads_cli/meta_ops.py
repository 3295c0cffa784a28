"""Library entry points for the meta-dynamical model: `embed` (where each session sits in the
embedding space) and `adapt` (few-shot: a new session from a handful of trials, shared parts frozen)."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from xfads_cli.errors import UsageError
from xfads_cli.ops import Run, as_tensor, load_data_for_run, load_run, session_index


def _require_meta(run: Run, command: str) -> None:
    if run.checkpoint.spec.get("kind") != "meta":
        raise UsageError(
            f"{run.path} is a single-session XFADS run; '{command}' needs a meta-dynamical run "
            "(fit several recordings, or --set model.kind=meta)"
        )


def regime_parameter(data) -> tuple[str, float] | None:
    """(name, value) of the parameter that set a simulated session's dynamical regime, if known."""
    sim = data.provenance.get("simulation")
    if not sim:
        return None
    from xfads_cli.data.simulate import get_system

    name = get_system(sim["system"]).param_name
    value = sim.get("params", {}).get(name)
    return None if value is None else (name, float(value))


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Rank correlation (no ties expected among session-level values)."""
    rx, ry = np.argsort(np.argsort(x)), np.argsort(np.argsort(y))
    if np.std(rx) == 0 or np.std(ry) == 0:
        return float("nan")
    return float(np.corrcoef(rx, ry)[0, 1])


def embed(run_path: Path, data_paths: list[Path], out: Path, *, overwrite: bool = False, overrides=(),
          device: str = "auto", plot: bool = False) -> dict:
    """Per-session q(e_i) (mean, variance) pooled over each file's trials, and per-trial embeddings."""
    from xfads_cli.model.meta import session_embedding
    from xfads_cli.ops import _output_attrs, run_inputs
    from xfads_cli.outputs.h5 import check_output, write_h5

    check_output(out, overwrite, run_inputs(run_path, *data_paths))
    run = load_run(run_path, device)
    _require_meta(run, "embed")
    names, means, variances, params = [], [], [], []
    trial_mean, trial_var, trial_session, trial_ids = [], [], [], []
    for k, path in enumerate(data_paths):
        data = load_data_for_run(path, run, overrides)
        index = session_index(run, data)
        mu_t, var_t, mu, var = session_embedding(run.model, as_tensor(data.counts, run), index)
        names.append(data.session)
        means.append(mu.cpu().numpy())
        variances.append(var.cpu().numpy())
        trial_mean.append(mu_t.cpu().numpy())
        trial_var.append(var_t.cpu().numpy())
        trial_session.append(np.full(data.n_trials, k))
        trial_ids.append(data.trial_ids)
        params.append(regime_parameter(data))
    arrays = {
        "session_names": np.array(names), "embed_mean": np.stack(means), "embed_var": np.stack(variances),
        "trial_embed_mean": np.concatenate(trial_mean), "trial_embed_var": np.concatenate(trial_var),
        "trial_session": np.concatenate(trial_session), "trial_ids": np.concatenate(trial_ids),
    }
    metrics: dict = {}
    if all(p is not None for p in params) and len({p[0] for p in params}) == 1:
        values = np.array([p[1] for p in params])
        arrays[f"param_{params[0][0]}"] = values
        if len(values) >= 3 and np.ptp(values) > 0:
            rho = [spearman(arrays["embed_mean"][:, d], values) for d in range(arrays["embed_mean"].shape[1])]
            metrics["rank_correlation"] = max(rho, key=lambda r: abs(r) if np.isfinite(r) else -1)
            metrics["rank_correlation_dim"] = int(np.nanargmax(np.abs(rho)))
    attrs = _output_attrs(run, data, "embed", metrics) | {"input_paths": [str(p) for p in data_paths]}
    path = write_h5(out, arrays, attrs, overwrite)
    summary = {"out": str(path), "sessions": names, "embed_mean": arrays["embed_mean"].tolist(), "metrics": metrics}
    if plot:
        from xfads_cli.outputs.plots import plot_embedding

        param = next(((k, v) for k, v in arrays.items() if k.startswith("param_")), None)
        summary["plots"] = [str(plot_embedding(arrays["embed_mean"], arrays["embed_var"], names,
                                               arrays["trial_embed_mean"], arrays["trial_session"],
                                               Path(out).with_suffix(".embedding.png"), param=param))]
    return summary


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
    from dataclasses import replace

    from xfads_cli.config import dump_config, load_config, resolved_config
    from xfads_cli.data.load import load_data
    from xfads_cli.data.provenance import package_versions
    from xfads_cli.ops import evaluate, model_spec
    from xfads_cli.train.checkpoint import Checkpoint
    from xfads_cli.train.meta_loop import fit_meta
    from xfads_cli.train.run import RunWriter, _atomic_text, _data_summary, _prepare_out, data_provenance
    from xfads_cli.train.threads import configure_threads

    if trials < 1:
        raise UsageError(f"--trials must be >= 1, got {trials}")
    if max_epochs is not None and max_epochs < 1:
        raise UsageError(f"--max-epochs must be >= 1, got {max_epochs}")
    if time_limit_min is not None and not time_limit_min > 0:  # also NaN
        raise UsageError(f"--time-limit must be > 0 minutes, got {time_limit_min:g}; e.g. --time-limit 5")
    run = load_run(run_path, device)
    _require_meta(run, "adapt")
    if Path(out).resolve() in (Path(run_path).resolve(), run.path.parent.resolve()):
        raise UsageError(f"--out {out} is the run being adapted; xfads never modifies its input, choose a new "
                         "directory for the adapted run")
    config = load_config(overrides=overrides, base=resolved_config(run.config))
    if config.train.batch_size is None:  # e.g. --set train.batch_size=null: resolved from the shots, as fit does
        from xfads_cli.train.loop import auto_batch_size

        config = replace(config, train=replace(config.train, batch_size=auto_batch_size(trials)))
    tuner = configure_threads(threads if threads is not None else config.train.threads, tune=run.device.type == "cpu")
    train_cfg = config.train
    if time_limit_min is not None:
        train_cfg = replace(train_cfg, time_limit_min=time_limit_min)
    data = load_data(data_path, config.data)
    from xfads_cli.model.likelihoods import support_problem

    problem = support_problem(config.model.likelihood, data.counts)
    if problem:
        raise UsageError(f"{Path(data_path).name} {problem}")
    known = [s["name"] for s in run.checkpoint.spec["sessions"]]
    if data.session in known:
        raise UsageError(f"session '{data.session}' is already in {run_path}; use smooth/forecast on it directly "
                         "(or --set data.session=NEW_NAME)")
    available = data.subset("train")
    if trials > available.n_trials:
        raise UsageError(f"--trials {trials} but {Path(data_path).name} has only {available.n_trials} training trials "
                         f"(of {data.n_trials}); lower --trials")
    out = Path(out)
    _prepare_out(out, overwrite, resume=False)

    # The first `trials` training trials (in recording order) are the few shots; the rest of the
    # file's valid split is held out for early stopping.
    shots = available.select(np.arange(trials))
    split = data.split.copy()
    split[np.flatnonzero(split == "train")[trials:]] = "unused"
    data.split = split

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
    model.freeze_shared()
    valid = data.subset("valid")
    n_old = index
    spec = {"kind": "meta", "sessions": list(run.checkpoint.spec["sessions"]) + [new_spec]}
    base = Checkpoint(config=resolved_config(config), spec=spec, data=list(run.checkpoint.data) + [data_provenance(data)],
                      versions=package_versions(),
                      adapted_from={"checkpoint": str(run.path), "sha256": run.sha256, "trials": trials})
    _atomic_text(out / "config.yaml", dump_config(config))
    writer = RunWriter(out, base, model)
    t0 = time.monotonic()
    model.train()
    result = fit_meta(model, [None] * n_old + [y], [None] * n_old + [as_tensor(valid.counts, run) if valid.n_trials else None],
                      train_cfg, seed=config.seed, parameters=list(model.session_parameters(index)),
                      on_epoch=writer.on_epoch, max_epochs=max_epochs, threads=tuner,
                      callback=progress.update if progress is not None else None)
    search = None
    if refine_embedding and y.shape[1] >= 2:
        from xfads_cli.train.embedding_search import search_embedding

        # The ELBO barely constrains e (a smoother needs little from the dynamics); keep the embedding
        # under which the shots' second halves are best forecast from their first halves.
        model.eval()
        search = search_embedding(model, index, y, model.sessions[index].embedding.detach(), seed=config.seed)
        with torch.no_grad():
            model.sessions[index].embedding.copy_(search.e)
        writer.replace_model()
    shared_unchanged = same_values(shared_before, model.shared_parameters())
    changed = [k for k, v in model.state_dict().items() if k in before and not torch.equal(v, before[k])]
    if changed:  # a bug, not a user error: shared parameters must never move during adapt
        raise RuntimeError(f"adapt changed shared parameters: {changed[:3]}")
    model.eval()
    from xfads_cli.model.meta import SessionView

    view = SessionView.pooled(model, index, y)
    # no trivial baselines here: they would be fitted on the whole train split, the model on `trials` shots
    metrics = evaluate(view, data, config, splits=("valid", "test"), baselines=False)
    summary = {
        "run_dir": str(out), "kind": "meta", "adapted_session": data.session, "trials": trials,
        "epochs": len(result.history), "best_epoch": result.best_epoch, "stopped": result.stopped,
        "seconds": time.monotonic() - t0, "metrics": metrics, "data": _data_summary(data),
        "shared_parameters_unchanged": shared_unchanged, "refined_embedding": refine_embedding,
        "embedding_mean": view.e.detach().cpu().tolist(), "threads": tuner.summary(), "versions": base.versions,
    }
    if search is not None:
        summary["embedding_search"] = {"forecast_nll": search.nll, "candidates": len(search.scores)}
    return writer.finish(summary, result.history, plot)

