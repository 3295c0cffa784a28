"""`xfads generate`: a synthetic recording sampled from a fitted model's generative model, optionally
checked against a real recording (a posterior-predictive report, scoring/predictive.py).

Sampler `ancestral` (the default): each trial is drawn from the prior, bin after bin, with the
session's readout and likelihood (docs/model.md section 1):

    z_1 ~ N(m0, diag(q0)),  z_t = f(z_{t-1}; e) + B u_t + eps_t,  eps_t ~ N(0, diag(q))
    rates_t = E[y_t | z_t] (e.g. dt exp(C z_t + d + D u_t)),   y_t ~ p(y_t | z_t)

capped at the session's forecast ceiling (`rate_ceiling`, as forecasts are; the fraction of capped
values is reported). Every kind with XFADS's generative model works: xfads and the comparison kinds
(dkf, dvbf, latent_sde), and one session of a meta run (`--session NAME`), whose embedding e is the
run's own: an adapted session's refined mean, else the mean of q(e_i) stored when the fit ended
(`fitted_embedding`). Task inputs: the clock is known (the bins since the trial's start) and used;
with condition inputs each generated trial gets a condition label (`trial_conditions`: the compared
recording's trials' labels in turn, else the run's labels in turn), written as the trials' `condition`
column (.nwb) or `conditions` dataset (.h5); event inputs would need event times that a generated trial
has not, so such runs are refused. Trials are drawn in blocks (memory ~ block x bins x neurons, whatever --trials).

Sampler `ldidp` (docs/model.md section 13): a diffusion model over whole latent trajectories is first
trained on posterior draws of the session's training trials (the run's own inference network), then
each block's latents come from its deterministic DDIM sampler (--ddim-steps network calls for all bins
at once), and rates and counts from the same readout and likelihood.

Files, laid out as `xfads simulate`'s (so `xfads inspect` and `xfads fit` read them back):
  .nwb       units (spike times: samples of a 30 kHz clock drawn uniformly inside their bins, the table's
             `resolution` its period; the run's unit ids, or 0..N-1 with a
             `unit_name` column when they are not integers), a trials table (trials back to back,
             TRIAL_GAP_BINS apart), and a `ground_truth` module: TimeSeries true_latents, true_rates (Hz),
             retest_counts (a second draw from the same rates). Its description is JSON: bin_ms and the
             provenance below. Spike counts only: a Gaussian-likelihood run writes .h5. NWB metadata
             as `xfads simulate` writes it (commands/simulate.py): a fresh uuid4 identifier, a Subject
             marked synthetic, keywords, experiment_description.
  .h5/.hdf5  plain layout: spikes [trial, time, neuron], trial_ids, unit_ids, truth/{latents, rates
             (expected counts per bin), retest_counts}; root attributes: bin_ms and the provenance.
Provenance: command, sampler, seed, trials, bins, session, config (resolved YAML), checkpoint and its
sha256, the run's training data (path, sha256), the embedding, versions, and with --compare the report
("predictive") and the real recording's path and sha256.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from xfads_cli.errors import RunFailure, UsageError
from xfads_cli.outputs.h5 import check_output, jsonable, to_json

SAMPLERS = ("ancestral", "ldidp")
SUFFIXES = {".nwb": "nwb", ".h5": "h5", ".hdf5": "h5"}
BLOCK_VALUES = 2_000_000  # trial x bin x max(neuron, latent) values drawn at once


@dataclass
class Target:
    """The session generated: its index and name in the run, its part of the model (readout,
    likelihood, task inputs), and e (a meta run's embedding mean, else None) with where it came from."""

    index: int
    name: str
    part: object
    e: object = None
    e_source: str | None = None
    diffusion: object = None  # --sampler ldidp: the trained TrajectoryDiffusion (model/ldidp.py)
    ddim_steps: int = 50
    conditions: object = None  # [trial] condition label of each generated trial (runs with condition inputs)


def generate(run_path: Path, out: Path, *, trials: int = 100, bins: int | None = None, seed: int | None = None,
             sampler: str = "ancestral", session: str | None = None, compare=None, plot: bool = False,
             device: str = "auto", overwrite: bool = False, quiet: bool = False, ldidp_steps: int = 1500,
             ddim_steps: int = 50, conditions: str | None = None) -> dict:
    """Sample `trials` trials of `bins` bins (default: the training trials' length) from the run's model
    and write them to `out` (.nwb or .h5); with `compare` (a recording of the session, e.g. the run's
    training data) also the posterior-predictive report. conditions: comma-separated condition labels to
    generate (a run with condition inputs; the compared trials are then those of these labels). Returns a
    plain summary; logs to stderr."""
    import torch

    from xfads_cli.data.source import source_name
    from xfads_cli.progress import log
    from xfads_cli.runs.run import load_run, run_inputs

    fmt = _check_options(out, sampler, trials, bins, compare, plot)
    if sampler == "ldidp" and min(ldidp_steps, ddim_steps) < 1:
        raise UsageError(f"--ldidp-steps and --ddim-steps must be >= 1, got {ldidp_steps} and {ddim_steps}")
    check_output(out, overwrite, run_inputs(run_path, *([compare] if compare is not None else [])))
    plot_path = Path(out).with_suffix(".predictive.png") if plot else None
    if plot_path is not None:
        from xfads_cli.outputs.plots import require_matplotlib

        require_matplotlib()
        check_output(plot_path, overwrite)
    run = load_run(run_path, device)
    target = choose_session(run, session)
    _check_generative(run, target, fmt)
    chosen = chosen_conditions(target, conditions)
    bins, bins_from = (bins, "--bins") if bins is not None else default_bins(run, target)
    seed = int(run.config.seed if seed is None else seed)
    real, window = _real_stats(run, target, compare, bins, chosen)
    target, conditions_from = trial_conditions(target, trials, None if real is None else real["conditions"], chosen)
    meta = provenance(run, target, seed=seed, sampler=sampler, trials=trials, bins=bins) | {"bins_from": bins_from}
    if conditions_from is not None:
        meta["conditions_from"] = conditions_from
    if sampler == "ldidp":
        target, meta["ldidp"] = ldidp_target(run, target, None if real is None else real["data"], bins, seed,
                                             ldidp_steps, ddim_steps,
                                             lambda text: log(text, quiet))
    t0 = time.monotonic()
    generator = torch.Generator(device=run.device).manual_seed(seed)
    result = _write(out, fmt, run, target, meta, generator, window, overwrite, real)
    summary = _summary(run, target, meta, result, out, fmt, time.monotonic() - t0)
    log(f"wrote {out} ({trials} trials x {bins} bins x {summary['neurons']} neurons, session {target.name}, "
        f"seed {seed}, {sampler} sampler; bins from {bins_from})", quiet)
    if result.get("predictive") is not None:
        from xfads_cli.scoring.predictive import report_lines

        for line in report_lines(result["predictive"]):
            log(line, quiet)
        summary["predictive"] = result["predictive"]
    if plot_path is not None:
        from xfads_cli.outputs.predictive_plots import plot_predictive

        summary["plots"] = [str(plot_predictive(result["figure"], meta["bin_ms"], plot_path,
                                                title=f"{Path(out).name} vs {source_name(compare)}"))]
        log(f"wrote {plot_path}", quiet)
    return jsonable(summary)


def _check_options(out: Path, sampler: str, trials: int, bins: int | None, compare, plot: bool) -> str:
    """The output format; UsageError for options that cannot work (before the run is loaded)."""
    if sampler not in SAMPLERS:
        raise UsageError(f"--sampler must be ancestral or ldidp, got '{sampler}'")
    if trials < 1:
        raise UsageError(f"--trials must be >= 1, got {trials}")
    if bins is not None and bins < 1:
        raise UsageError(f"--bins must be >= 1, got {bins}")
    fmt = SUFFIXES.get(Path(out).suffix.lower())
    if fmt is None:
        raise UsageError(f"cannot write '{Path(out).name}': use .nwb or .h5 as the output suffix")
    if plot and compare is None:
        raise UsageError("--plot draws the posterior-predictive report: give the real recording with --compare DATA")
    return fmt


def choose_session(run, session: str | None) -> Target:
    """The session to generate: the run's one session, or a meta run's `session` with its stored
    embedding (UsageError when it has none)."""
    names = [str(n) for n in run.spec.names]
    if session is None and len(names) > 1:
        raise UsageError(f"this run has {len(names)} sessions ({', '.join(names)}); choose one with --session NAME")
    if session is not None and session not in names:
        raise UsageError(f"--session {session}: not a session of this run ({', '.join(names)})")
    index = 0 if session is None else names.index(session)
    part = run.model.sessions[index]
    if not run.spec.meta:
        return Target(index, names[index], part)
    if part.embedding is not None:
        return Target(index, names[index], part, part.embedding.detach(), "refined (adapted session)")
    fitted = getattr(part, "fitted_embedding", None)
    if fitted is not None and bool((fitted[1] > 0).all()):
        return Target(index, names[index], part, fitted[0].detach(), "fitted (q(e_i) over the training trials)")
    raise UsageError(f"session '{names[index]}' has no stored embedding (an adapted session fitted with "
                     "--encoder-embedding, or a run from before fitted embeddings were kept); generate another "
                     "session, or adapt it again with --refine-embedding")


def _check_generative(run, target: Target, fmt: str) -> None:
    from xfads_cli.model.likelihoods import Gaussian

    inputs = target.part.inputs
    if inputs is not None and inputs.events:
        raise UsageError(f"this run uses event inputs ({', '.join(inputs.names())}) that a generated trial has no "
                         "times for; generate from a run fitted with --set data.inputs=[clock,condition] or "
                         "data.inputs=[]")
    if fmt == "nwb" and isinstance(target.part.likelihood, Gaussian):
        raise UsageError("this run's Gaussian likelihood generates continuous values, which an NWB units table "
                         "cannot hold; write .h5")


def default_bins(run, target: Target) -> tuple[int, str]:
    """(bins, where from): the training trials' length, from the clock inputs' span, else the run
    directory's summary.json (its data entry of the session); UsageError when neither records it."""
    inputs = target.part.inputs
    if inputs is not None and inputs.clock_bins:
        return int(inputs.clock_bins), "the run's clock inputs"
    summary_path = Path(run.path).parent / "summary.json"
    try:
        data = json.loads(summary_path.read_text()).get("data")
    except (OSError, ValueError, AttributeError):
        data = None
    entries = data if isinstance(data, list) else [data] if isinstance(data, dict) else []
    names = {target.name, str(run.spec.sessions[target.index].get("session"))}
    found = [e for e in entries if isinstance(e, dict) and (not run.spec.meta or str(e.get("session")) in names)]
    if found and isinstance(found[0].get("bins"), int) and found[0]["bins"] > 0:
        return int(found[0]["bins"]), str(summary_path.name)
    raise UsageError(f"{run.path} does not record the training trials' length (no summary.json entry for session "
                     f"'{target.name}' next to it); pass --bins T")


def _real_stats(run, target: Target, compare, bins: int, chosen: list[str] | None = None):
    """({stats: CountStats of the real recording over the common window, trial_aligned, psth_ceiling,
    conditions, source, data: the recording read}, window), or (None, bins) without a recording to
    compare with; chosen: only the trials of these conditions."""
    if compare is None:
        return None, bins
    from xfads_cli.data.source import source_name
    from xfads_cli.runs.binding import index_in_run, load_data_for_run
    from xfads_cli.scoring.baselines import trial_aligned
    from xfads_cli.scoring.predictive import CountStats, psth_noise_ceiling

    data = load_data_for_run(compare, run)
    if index_in_run(run, data) != target.index:
        raise UsageError(f"--compare {source_name(compare)} is session '{data.session}', not '{target.name}'; "
                         "compare with a recording of the session generated")
    window = min(bins, data.n_time)
    labels = None if data.conditions is None else [str(c) for c in data.conditions]
    counts = data.counts
    if chosen is not None and labels is not None:
        keep = [k for k, c in enumerate(labels) if c in set(chosen)]
        if not keep:
            raise UsageError(f"--compare {source_name(compare)} has no trials of --conditions {','.join(chosen)}")
        counts, labels = counts[keep], [labels[k] for k in keep]
    return {"stats": CountStats.of(counts, window), "trial_aligned": trial_aligned(data.provenance),
            "psth_ceiling": psth_noise_ceiling(counts, window), "conditions": labels,
            "source": {"path": str(data.provenance.get("path", compare)), "sha256": data.provenance.get("sha256")},
            "data": data}, window


def chosen_conditions(target: Target, text: str | None) -> list[str] | None:
    """--conditions A,B: the labels to generate, checked against the run's (UsageError otherwise)."""
    if text is None:
        return None
    inputs = target.part.inputs
    known = list(inputs.conditions) if inputs is not None else []
    if not known:
        raise UsageError("--conditions: this run's model takes no condition inputs; drop the option")
    chosen = [c.strip() for c in text.split(",") if c.strip()]
    unknown = [c for c in chosen if c not in known]
    if unknown or not chosen:
        raise UsageError(f"--conditions {text}: {', '.join(unknown) or 'no label'} not among the run's conditions "
                         f"({', '.join(known)})")
    return chosen


def trial_conditions(target: Target, trials: int, real: list | None, chosen: list[str] | None = None
                     ) -> tuple[Target, str | None]:
    """The target with each generated trial's condition label, and where the labels come from, for a run
    whose model takes condition inputs (else unchanged, None). The labels follow the compared recording's
    trials in turn (those the model knows, and among `chosen` if given), so that generated and real trials
    mix the conditions in the same proportions; without one, `chosen` or the run's labels in turn."""
    from dataclasses import replace

    inputs = target.part.inputs
    if inputs is None or not inputs.conditions:
        return target, None
    allowed = set(chosen or inputs.conditions)
    known = [c for c in (real or []) if c in allowed]
    labels, source = (known, "the compared recording's trials, in turn") if known else \
        (list(chosen or inputs.conditions), "--conditions, in turn" if chosen else "the run's condition labels, in turn")
    chosen = np.array([labels[k % len(labels)] for k in range(trials)], dtype=object)
    return replace(target, conditions=chosen), source


def provenance(run, target: Target, *, seed: int, sampler: str, trials: int, bins: int) -> dict:
    """What reproduces a generated file (module docstring)."""
    from xfads_cli.config import dump_config
    from xfads_cli.data.provenance import package_versions

    trained = run.checkpoint.data
    if isinstance(trained, list):
        trained = trained[target.index] if target.index < len(trained) else None
    spec = run.spec.sessions[target.index]
    return {
        "command": "generate", "generator": "xfads generate", "sampler": sampler, "seed": seed, "trials": trials,
        "bins": bins, "bin_ms": float(spec["bin_ms"]), "session": target.name, "kind": run.config.model.kind,
        "likelihood": run.config.model.likelihood, "config": dump_config(run.config), "checkpoint": str(run.path),
        "checkpoint_sha256": run.sha256,
        "training_data": {k: (trained or {}).get(k) for k in ("path", "sha256")},
        "embedding": None if target.e is None else target.e.cpu().tolist(), "embedding_source": target.e_source,
        "versions": package_versions(),
    }


# ------------------------------------------------------------------------------------------------
# Sampling


def iter_blocks(run, target: Target, trials: int, bins: int, generator):
    """Dicts of [block, ...] numpy arrays (spikes, truth/latents, truth/rates, truth/retest_counts) for
    `trials` trials in blocks, each with n_capped (rate values at the ceiling)."""
    import torch

    n_out = max(target.part.n_neurons, run.config.model.latent_dim)
    block = int(max(1, min(trials, BLOCK_VALUES // (bins * n_out))))
    with torch.no_grad():
        for start in range(0, trials, block):
            n = min(block, trials - start)
            labels = None if target.conditions is None else target.conditions[start : start + n]
            yield sample_block(run.model, target, n, bins, generator, _task_inputs(run, target, bins, n, labels))


def sample_block(model, target: Target, n: int, bins: int, generator, u=None) -> dict:
    """n trials of `bins` bins drawn ancestrally (module docstring) with torch.Generator `generator`."""
    import torch

    m0 = model.m0
    part = target.part
    if target.diffusion is not None:  # all bins at once, from the trajectory diffusion model
        return _observe_block(part, target.diffusion.sample(n, bins, steps=target.ddim_steps, generator=generator),
                              generator, u)
    z1 = m0 + model.q0().sqrt() * torch.randn((1, n, m0.shape[0]), generator=generator, dtype=m0.dtype,
                                              device=m0.device)
    drive = part.drive(u)
    z = z1[:, :, None]
    if bins > 1:
        f = model.transition(n, None if target.e is None else target.e.to(m0))
        rest = model.rollout_through(f, z1, bins - 1, generator, None if drive is None else drive[:, 1:])
        z = torch.cat([z, rest], dim=2)
    return _observe_block(part, z[0], generator, u)


def _observe_block(part, z, generator, u=None) -> dict:
    """Rates (capped) and two draws of the observations given latents z [trial, time, latent]."""
    import torch

    mean = part.likelihood.mean(part.eta(z, u))
    if not bool(torch.isfinite(mean).all()):
        raise RunFailure("the model's prior rollouts diverge (rates are not finite): its dynamics are unstable far "
                         "from the data; generate fewer --bins, or train the run longer")
    rates = torch.minimum(mean, part.rate_ceiling)
    draw = lambda: observe(part.likelihood, rates, generator)  # noqa: E731
    return {"spikes": draw(), "truth/latents": z.float().cpu().numpy(), "truth/rates": rates.float().cpu().numpy(),
            "truth/retest_counts": draw(), "n_capped": int((mean > part.rate_ceiling).sum())}


def ldidp_target(run, target: Target, compared, bins: int, seed: int, steps: int, ddim_steps: int, log):
    """The target with the LDIDP sampler's diffusion model (docs/model.md section 13), trained on
    posterior draws (8 per trial, the run's own inference network) of the session's training trials,
    those of `compared` (the --compare recording, already read) or else of the recording the run was
    trained on; and what to record of it."""
    from dataclasses import replace

    import torch

    from xfads_cli.runs import as_tensor
    from xfads_cli.runs.binding import load_data_for_run
    from xfads_cli.train.diffusion import fit_trajectory_diffusion

    recording = compared if compared is not None else load_data_for_run(_training_recording(run, target), run)
    train = recording.subset("train")
    if train.n_time != bins:
        raise UsageError(f"--sampler ldidp generates trials as long as the training ones ({train.n_time} bins); "
                         f"drop --bins {bins}, or use --sampler ancestral")
    y = as_tensor(train.counts, run)
    u = _task_inputs(run, target, bins, y.shape[0], train.conditions)
    draws, noise = [], torch.Generator(device=run.device).manual_seed(seed)
    with torch.no_grad():
        for start in range(0, y.shape[0], 64):
            post = run.model.posterior(y[start : start + 64], target.index, target.e, mode="smoother", n_samples=8,
                                       noise=noise, **({} if u is None else {"u": u[start : start + 64]}))
            draws.append(post.samples.transpose(0, 1).reshape(-1, bins, post.samples.shape[-1]))
    z = torch.cat(draws)
    log(f"ldidp: training the trajectory diffusion model on {z.shape[0]} posterior draws "
        f"({y.shape[0]} training trials), {steps} steps")
    fit = fit_trajectory_diffusion(z, steps=steps, seed=seed)
    record = {"training_steps": steps, "ddim_steps": ddim_steps, "trajectories": int(z.shape[0]),
              "train_seconds": fit.seconds, "final_loss": float(np.mean(fit.losses[-50:])),
              "data": str(recording.provenance.get("path", ""))}
    return replace(target, diffusion=fit.model, ddim_steps=ddim_steps), record


def _training_recording(run, target: Target):
    trained = run.checkpoint.data
    if isinstance(trained, list):
        trained = trained[target.index] if target.index < len(trained) else None
    path = Path((trained or {}).get("path") or "")
    if not path.is_file():
        raise UsageError("--sampler ldidp learns from the session's training trials and the run's recording is not "
                         f"at its recorded path ({path or 'none'}); give the recording with --compare DATA")
    return path


def _task_inputs(run, target: Target, bins: int, n: int, conditions=None):
    """The task inputs of n generated (or training) trials: the clock and, for a run with condition
    inputs, each trial's condition label in `conditions` [trial] (event inputs are refused)."""
    if target.part.inputs is None:
        return None
    import torch

    from xfads_cli.model.task_inputs import task_features

    u = task_features(target.part.inputs, bins, n, None if conditions is None else [str(c) for c in conditions])
    return torch.as_tensor(u, dtype=run.dtype, device=run.device)


def observe(likelihood, rates, generator) -> np.ndarray:
    """A draw of y given its mean `rates` [..., neuron]: counts (int32) for Poisson and Bernoulli
    likelihoods, values (float32) for a Gaussian one."""
    import torch

    from xfads_cli.model.likelihoods import Bernoulli, Gaussian

    if isinstance(likelihood, Gaussian):
        noise = torch.randn(rates.shape, generator=generator, dtype=rates.dtype, device=rates.device)
        return (rates + likelihood.variance().sqrt() * noise).float().cpu().numpy()
    if isinstance(likelihood, Bernoulli):
        return torch.bernoulli(rates, generator=generator).cpu().numpy().astype(np.int32)
    return torch.poisson(rates, generator=generator).cpu().numpy().astype(np.int32)


# ------------------------------------------------------------------------------------------------
# Writing


def _write(out: Path, fmt: str, run, target: Target, meta: dict, generator, window: int, overwrite: bool,
           real: dict | None) -> dict:
    """Draw the blocks into the output (HDF5 streamed; NWB gathered, then written) and the report."""
    from xfads_cli.outputs.h5 import H5Stream
    from xfads_cli.scoring.predictive import CountStats

    stats = CountStats(window)
    n_capped = spikes = 0
    unit_ids = np.asarray(run.spec.sessions[target.index]["unit_ids"]).astype(str)
    sink = H5Stream(out, n_rows=meta["trials"], overwrite=overwrite) if fmt == "h5" else NwbGather(out, overwrite)
    with sink:
        for block in iter_blocks(run, target, meta["trials"], meta["bins"], generator):
            n_capped += block.pop("n_capped")
            spikes += block["spikes"].sum().item()  # an int for counts
            stats.add(block["spikes"])
            sink.append(block)
        result = {"n_capped": n_capped, "spikes": spikes, "predictive": None}
        if real is not None:
            from xfads_cli.scoring.predictive import compare as compare_stats, figure_arrays

            result["predictive"] = compare_stats(stats, real["stats"], bin_ms=meta["bin_ms"],
                                                 trial_aligned=real["trial_aligned"], seed=meta["seed"],
                                                 psth_ceiling=real["psth_ceiling"])
            result["figure"] = figure_arrays(stats, real["stats"])
            # headline numbers only: an HDF5 attribute holds 64 kB, and per-neuron lists of 1000 neurons exceed it
            headline = {k: v for k, v in result["predictive"].items() if k != "per_neuron"}
            meta = meta | {"predictive": jsonable(headline), "compared_with": real["source"]}
        meta = meta | {"rate_capped_fraction": n_capped / float(meta["trials"] * meta["bins"] * len(unit_ids))}
        sink.write("trial_ids", np.arange(meta["trials"], dtype=np.int64))
        sink.write("unit_ids", unit_ids)
        if target.conditions is not None:  # read back as the file's conditions (data.condition: auto)
            sink.write("conditions", np.asarray(target.conditions).astype(str))
        sink.set_attrs(meta)
    result["rate_capped_fraction"] = meta["rate_capped_fraction"]
    return result


class NwbGather:
    """The NWB output: blocks gathered in memory (a units table holds each neuron's spikes over all trials),
    written when the block ends without an exception (to a temporary file, then renamed)."""

    def __init__(self, path: Path, overwrite: bool):
        self.path, self.overwrite = Path(path), overwrite
        self.parts: dict[str, list] = {}
        self.extra: dict = {}
        self.attrs: dict = {}

    def __enter__(self) -> "NwbGather":
        return self

    def append(self, block: dict) -> None:
        for name, value in block.items():
            self.parts.setdefault(name, []).append(value)

    def write(self, name: str, value) -> None:
        self.extra[name] = value

    def set_attrs(self, attrs: dict) -> None:
        self.attrs = attrs

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc_type is not None:
            return False
        from xfads_cli.atomic import atomic_path

        arrays = {name: np.concatenate(parts) for name, parts in self.parts.items()}
        self.parts.clear()
        if self.path.exists() and not self.overwrite:
            raise UsageError(f"{self.path} appeared while trials were generated; pass --overwrite to replace it")
        with atomic_path(self.path) as tmp:
            write_generated_nwb(tmp, arrays, self.extra["unit_ids"], self.attrs, self.extra.get("conditions"))
        return False


def write_generated_nwb(path: Path, arrays: dict, unit_ids, meta: dict, conditions=None) -> None:
    """The NWB file (module docstring) of arrays spikes, truth/latents, truth/rates, truth/retest_counts
    [trial, time, ...] (rates per bin), with `meta` (provenance, bin_ms) as the ground_truth module's JSON;
    conditions [trial]: each trial's label, in the trials table's `condition` column."""
    from hdmf.backends.hdf5.h5_utils import H5DataIO
    from pynwb import NWBHDF5IO, NWBFile, TimeSeries

    from xfads_cli.data.simulate import (
        SESSION_START,
        TRIAL_GAP_BINS,
        spike_sample_rate_hz,
        spike_times_from_counts,
        synthetic_nwb_metadata,
    )

    counts = arrays["spikes"]
    n_trial, n_time, n_neuron = counts.shape
    bin_s = meta["bin_ms"] / 1000.0
    start_s = np.arange(n_trial) * (n_time + TRIAL_GAP_BINS) * bin_s
    nwb = NWBFile(
        session_description=f"xfads generate: {n_trial} trials sampled ({meta['sampler']}) from session "
                            f"'{meta['session']}' of {meta['checkpoint']} (seed {meta['seed']})",
        session_start_time=SESSION_START, file_create_date=SESSION_START,  # fixed: same seed, same data
        trials=trials_table(start_s, start_s + n_time * bin_s, conditions),
        experiment_description=f"Trials sampled with `xfads generate` from the generative model of a fitted "
                               f"latent state-space model (checkpoint sha256 {meta['checkpoint_sha256']}); "
                               "no animal was recorded.",
        **synthetic_nwb_metadata(f"xfads-generate-{meta['checkpoint_sha256'][:12]}-seed{meta['seed']}",
                                 "not an animal: trials sampled from a fitted model (xfads generate)"),
    )
    spikes = spike_times_from_counts(counts, start_s, bin_s, np.random.default_rng([meta["seed"], 1]))
    nwb.units = units_table(spikes, unit_ids, 1.0 / spike_sample_rate_hz(bin_s))
    centres = (start_s[:, None] + (np.arange(n_time) + 0.5) * bin_s).ravel()
    flat = lambda a, dtype: H5DataIO(a.reshape(n_trial * n_time, -1).astype(dtype), compression="gzip",  # noqa: E731
                                     shuffle=True)
    module = nwb.create_processing_module(name="ground_truth", description=to_json(meta))
    latents = TimeSeries(name="true_latents", data=flat(arrays["truth/latents"], np.float32), unit="a.u.",
                         timestamps=H5DataIO(centres, compression="gzip"),
                         description="the model's latent state z at each bin centre [time, latent]")
    module.add(latents)
    module.add(TimeSeries(name="true_rates", data=flat(arrays["truth/rates"] / bin_s, np.float32), unit="Hz",
                          timestamps=latents, description="the model's firing rate of each unit in each bin [time, neuron]"))
    module.add(TimeSeries(name="retest_counts", data=flat(arrays["truth/retest_counts"], np.int32), unit="spikes",
                          timestamps=latents, description="independent second draw from true_rates, per bin [time, neuron]"))
    with NWBHDF5IO(str(path), "w") as io:
        io.write(nwb)


def trials_table(start_s: np.ndarray, stop_s: np.ndarray, conditions=None) -> object:
    """The NWB trials table, its columns built whole (as units_table's); conditions [trial]: a `condition`
    column of labels."""
    from hdmf.common import ElementIdentifiers, VectorData
    from pynwb.epoch import TimeIntervals

    columns = [VectorData(name="start_time", description="Start time of epoch, in seconds", data=np.asarray(start_s, float)),
               VectorData(name="stop_time", description="Stop time of epoch, in seconds", data=np.asarray(stop_s, float))]
    if conditions is not None:
        columns.append(VectorData(name="condition", description="the condition label the trial was generated for",
                                  data=[str(c) for c in conditions]))
    return TimeIntervals(name="trials", description="trials sampled from the model", columns=columns,
                         id=ElementIdentifiers(name="id", data=np.arange(len(start_s), dtype=np.int64)))


def units_table(spikes: list[np.ndarray], unit_ids, resolution: float) -> object:
    """The NWB units table of spike times [spike] per unit, its columns built whole (add_unit per unit
    makes hdmf convert a million spike times one by one: 40 s for 1000 trials of 50 units). Ids: the
    run's when they are integers, else 0..N-1 with the run's in a `unit_name` column. resolution: of the
    spike times (s), the smallest possible difference between two."""
    from hdmf.common import ElementIdentifiers, VectorData, VectorIndex
    from pynwb.misc import Units

    ids = [str(u) for u in unit_ids]
    numeric = all(u.isdigit() and str(int(u)) == u for u in ids) and len(set(ids)) == len(ids)
    times = VectorData(name="spike_times", description="the spike times for each unit in seconds",
                       data=np.concatenate(spikes) if spikes else np.zeros(0))
    columns = [times, VectorIndex(name="spike_times_index", target=times,
                                  data=np.cumsum([len(s) for s in spikes]).astype(np.int64))]
    if not numeric:
        columns.append(VectorData(name="unit_name", description="the unit's id in the run", data=np.array(ids, dtype=object)))
    number = np.array([int(u) for u in ids] if numeric else range(len(ids)), dtype=np.int64)
    return Units(name="units", description="units sampled from the model", columns=columns,
                 id=ElementIdentifiers(name="id", data=number), resolution=resolution)


def _summary(run, target: Target, meta: dict, result: dict, out: Path, fmt: str, seconds: float) -> dict:
    neurons = int(run.spec.sessions[target.index]["n_neurons"])
    seconds_recorded = meta["trials"] * meta["bins"] * meta["bin_ms"] / 1000.0
    keys = ("sampler", "seed", "trials", "bins", "bins_from", "bin_ms", "session", "kind", "likelihood",
            "checkpoint", "checkpoint_sha256", "embedding", "embedding_source")
    return {"out": str(out), "format": fmt, **{k: meta[k] for k in keys}, "neurons": neurons,
            "latent_dim": run.config.model.latent_dim, "spikes": result["spikes"],
            "mean_rate_hz": result["spikes"] / max(seconds_recorded * neurons, 1e-12),
            "rate_capped_fraction": result["rate_capped_fraction"], "seconds": seconds}
