"""`xfads embed`: where each session of a meta run sits in the embedding space."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from xfads_cli.outputs.sinks import output_attrs
from xfads_cli.runs import (
    as_tensor,
    load_data_for_run,
    load_run,
    require_meta,
    run_inputs,
    index_in_run,
)


def regime_parameter(data) -> tuple[str, float] | None:
    """(name, value) of the parameter that set a simulated session's dynamical regime, if known."""
    sim = data.provenance.get("simulation")
    from xfads_cli.data.simulate import SYSTEMS, get_system

    # files from `xfads generate` carry a simulation record too, of a fitted model: no system, no parameter
    if not sim or sim.get("system") not in SYSTEMS:
        return None
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
    from xfads_cli.outputs.h5 import check_output, write_h5

    check_output(out, overwrite, run_inputs(run_path, *data_paths))
    run = load_run(run_path, device, overrides=overrides)
    require_meta(run, "embed")
    names, means, variances, params, ys, n_time = [], [], [], [], [], 0
    trial_mean, trial_var, trial_session, trial_ids = [], [], [], []
    for k, path in enumerate(data_paths):
        data = load_data_for_run(path, run)
        index = index_in_run(run, data)
        y = as_tensor(data.counts, run)
        mu_t, var_t, mu, var = run.model.session_embedding(y, index)
        ys.append((index, y))
        n_time = max(n_time, data.n_time)
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
    check, z0 = _check(run, ys, arrays, n_time)
    if check is not None:
        metrics.update({k: v for k, v in check.to_dict().items() if k != "warnings"})
    attrs = output_attrs(run, data, "embed", metrics) | {"input_paths": [str(p) for p in data_paths]}
    path = write_h5(out, arrays, attrs, overwrite)
    summary = {"out": str(path), "sessions": names, "embed_mean": arrays["embed_mean"].tolist(), "metrics": metrics}
    if check is not None:
        summary["embedding"] = check.to_dict()
        if check.warnings:
            summary["notes"] = check.warnings
    if plot:
        from xfads_cli.outputs.plots import plot_embedding

        param = next(((k, v) for k, v in arrays.items() if k.startswith("param_")), None)
        summary["plots"] = [str(plot_embedding(arrays["embed_mean"], arrays["embed_var"], names,
                                               arrays["trial_embed_mean"], arrays["trial_session"],
                                               Path(out).with_suffix(".embedding.png"), param=param))]
        if z0 is not None and arrays["embed_mean"].shape[1] <= 2:
            summary["plots"].append(str(_plot_flow(run.model, arrays, names, z0, Path(out).with_suffix(".flow.png"))))
    return summary


def _check(run, ys: list, arrays: dict, n_time: int):
    """scoring/embedding.py's check of the given sessions (None for fewer than 2): rollouts of f(.; e_i)
    from the sessions' smoothed states under their embedding means."""
    import torch

    from xfads_cli.scoring.embedding import check_embedding, default_horizon, smoothed_states

    if len(ys) < 2:
        return None, None
    model = run.model
    means = torch.as_tensor(arrays["embed_mean"]).to(model.m0)
    variances = torch.as_tensor(arrays["embed_var"]).to(model.m0)
    # smoothed_states takes the sessions by index; the means are in the order of the files given
    per_index = [None] * model.n_sessions
    e_by_index = torch.zeros(model.n_sessions, means.shape[1], dtype=means.dtype, device=means.device)
    for (index, y), e in zip(ys, means):
        per_index[index], e_by_index[index] = y, e
    z0 = smoothed_states(model, per_index, e_by_index, seed=run.config.seed)
    horizon = default_horizon(n_time, run.config.eval.horizon_bins)
    return check_embedding(model, means, variances, z0, horizon, seed=run.config.seed), z0


def _plot_flow(model, arrays: dict, names: list[str], z0, out: Path) -> Path:
    """The flow of f(.; e) at the sessions at both ends and the middle of the embedding's first axis."""
    import torch

    from xfads_cli.outputs.plots import plot_flow
    from xfads_cli.scoring.embedding import first_axis, flow_fields

    means = arrays["embed_mean"]
    order = torch.argsort(first_axis(torch.as_tensor(means))[1]).tolist()
    picks = [order[0], order[len(order) // 2], order[-1]]
    field = flow_fields(model, torch.as_tensor(means[picks]).to(model.m0), z0)
    labels = [f"{names[i]}: e = ({', '.join(f'{v:.2g}' for v in means[i])})" for i in picks]
    return plot_flow(field.grid.cpu().numpy(), [f.cpu().numpy() for f in field.flows], labels,
                     field.states.cpu().numpy(), out)
