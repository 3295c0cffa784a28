"""A recording bound to a run: checked against the session it belongs to, and the model serving that
session.

    data = load_data_for_run("x.nwb", run)       # the run's data options; same neurons and bins
    with open_file("x.nwb") as f:                # or several reads of a file opened once
        data, recording = read_data_for_run(f, run), read_recording_for_run(f, run)
    model = session_model(run, data)             # the model bound to data's session
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from xfads_cli.data.source import parse_source, source_name
from xfads_cli.data.spikedata import SpikeData
from xfads_cli.errors import UsageError, about_file
from xfads_cli.runs.run import Run


def model_spec(data: SpikeData) -> dict:
    """One session's entry of a ModelSpec (plain data, stored in checkpoints)."""
    return {
        "n_neurons": data.n_neurons,
        "heldin": (~data.heldout).tolist(),
        "dt": data.dt,
        "bin_ms": data.bin_ms,
        "unit_ids": [str(u) for u in data.unit_ids],
        "session": data.session,
    }


def check_same_recording(run: Run, data, path: Path) -> None:
    """UsageError unless `data` (SpikeData or Recording) has the neurons and bins of its session in the run."""
    spec = spec_in_run(run, data)
    if data.n_neurons != spec["n_neurons"]:
        raise UsageError(
            f"{source_name(path)} gives {data.n_neurons} neurons but the checkpoint was trained on {spec['n_neurons']}; "
            "use the recording (and data options) the run was fitted on"
        )
    if [str(u) for u in data.unit_ids] != spec["unit_ids"]:
        raise UsageError(f"the unit ids of {source_name(path)} differ from the checkpoint's; use the recording the run was fitted on")
    if abs(data.bin_ms - spec["bin_ms"]) > 1e-9:
        raise UsageError(f"data.bin_ms={data.bin_ms:g} but the model was trained with {spec['bin_ms']:g} ms bins")
    _note_other_recording(run, data, path)


def _note_other_recording(run: Run, data, path: Path) -> None:
    """A warning when `data` is not the file its session was trained on (their sha256 differ, both already
    computed when loading): legitimate for a new session with the same units, a mistake otherwise."""
    import warnings

    trained = run.checkpoint.data
    if isinstance(trained, list):  # a meta run: one entry per session
        index = index_in_run(run, data)
        trained = trained[index] if index < len(trained) else None
    ours, theirs = data.provenance.get("sha256"), (trained or {}).get("sha256")
    if ours and theirs and ours != theirs:
        warnings.warn(f"{source_name(path)} is not the file this run was trained on ({trained.get('path')}; their "
                      "sha256 differ): the model is applied to a new recording with the same units", stacklevel=2)


def load_data_for_run(path: Path, run: Run) -> SpikeData:
    """`read_data_for_run` of the recording at `path` (opened for this one read)."""
    from xfads_cli.data.opened import open_file

    path = parse_source(path)
    with about_file(path), open_file(path) as f:
        return read_data_for_run(f, run)


def read_data_for_run(f, run: Run, window_ms=None) -> SpikeData:
    """The trials of the open recording `f` (data/opened.py) with the run's data options (run.config:
    the checkpoint's, with the command's --set overrides), checked to be the kind of recording the model
    was trained on: same neurons in the same order and the same bins. window_ms: another trial window."""
    from dataclasses import replace

    from xfads_cli.data.load import read_trials

    data_cfg = run.config.data if window_ms is None else replace(run.config.data, window_ms=window_ms)
    data = read_trials(f, data_cfg)
    check_same_recording(run, data, f.source)
    return data


def read_recording_for_run(f, run: Run):
    """The open recording `f` as a continuous Recording (data/recording.py) with the run's data options,
    checked as read_data_for_run does; None when those options cut it into trials (or it is not NWB)."""
    from xfads_cli.data.load import read_continuous

    recording = read_continuous(f, run.config.data)
    if recording is not None:
        check_same_recording(run, recording, f.source)
    return recording


def recording_model(run: Run, f):
    """The model serving the session of the open recording `f` without trials: session 0 of a
    single-session run; a meta model's session with its embedding pooled over the session's training
    windows (read from `f`)."""
    if not run.spec.meta:
        return run.model.session(0)
    return session_model(run, read_data_for_run(f, run))


def spec_in_run(run: Run, data: SpikeData) -> dict:
    """The checkpoint's spec entry of `data`'s session (see index_in_run)."""
    return run.spec.sessions[index_in_run(run, data)]


def index_in_run(run: Run, data: SpikeData) -> int:
    """The run's session `data` belongs to: a single-session run's one session (load_data_for_run
    checks the neurons), a meta run's session matched by name or by the file's content (its sha256; a
    remote file's URL and ETag)."""
    spec = run.spec
    if not spec.meta:
        return 0
    names = spec.names
    if data.session in names:
        return names.index(data.session)
    from xfads_cli.data.provenance import content_id

    contents = [content_id(d) for d in run.checkpoint.data or []]
    own = content_id(data.provenance)
    if own is not None and own in contents:
        return contents.index(own)
    raise UsageError(
        f"session '{data.session}' is not part of this run (sessions: {', '.join(names)}); "
        f"add it with 'xfads adapt {run.path.parent} {data.provenance.get('path', 'DATA')} --trials N --out NEW_RUN'"
    )


def session_model(run: Run, data: SpikeData):
    """The model serving `data`'s session (`model.session`): the model bound to
    the session with its embedding pooled over the session's training trials (an adapted session's:
    over the shots it was adapted on)."""
    index = index_in_run(run, data)
    shots = run.spec.sessions[index].get("embed_trial_ids")

    def trials() -> torch.Tensor:
        rows = data.select(np.isin(data.trial_ids, shots)) if shots else data.subset("train")
        return as_tensor(rows.counts if rows.n_trials else data.counts, run)

    return run.model.session(index, trials)


def model_inputs(model, data: SpikeData, rows=None, n_time: int | None = None,
                 known_until: int | None = None) -> np.ndarray | None:
    """The task inputs u [trial, time, input] of `data`'s trials `rows` for `model` (XFADS with task
    inputs; None for every other model): model/task_inputs.features_for with the model's InputSpec."""
    from xfads_cli.model.task_inputs import features_for

    return features_for(model.inputs, data, rows, n_time, known_until)


def as_tensor(counts: np.ndarray, like) -> torch.Tensor:
    """counts as a tensor on the device and in the dtype of `like`'s parameters: a Run, a model, or
    the model serving one session (its `.model`'s)."""
    param = next((like if isinstance(like, torch.nn.Module) else like.model).parameters())
    return torch.as_tensor(counts, dtype=param.dtype, device=param.device)


def bound_sessions(model, sessions: list) -> list:
    """The model serving each session (`model.session`), a meta model's embedding pooled over the
    session's training trials (its q(e_i))."""
    def trials(data: SpikeData):
        train = data.subset("train")
        return lambda: as_tensor(train.counts if train.n_trials else data.counts, model)

    return [model.session(i, trials(data)) for i, data in enumerate(sessions)]
