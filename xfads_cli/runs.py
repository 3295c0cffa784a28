"""Runs: the model of a checkpoint rebuilt from it alone, and a recording checked against it.

    run = load_run("runs/lorenz")                # Run(model, config, checkpoint, path, sha256)
    data = load_data_for_run("x.nwb", run)       # the run's data options; same neurons and bins
    model = session_model(run, data)             # XFADS, or the meta model bound to data's session
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from xfads_cli.config import Config, load_config, resolved_config
from xfads_cli.data.source import is_remote, parse_source, source_name
from xfads_cli.data.spikedata import SpikeData
from xfads_cli.errors import UsageError
from xfads_cli.model.spec import ModelSpec, build_model
from xfads_cli.train.checkpoint import Checkpoint


@dataclass
class Run:
    model: torch.nn.Module
    config: Config
    checkpoint: Checkpoint
    path: Path
    sha256: str

    @property
    def spec(self) -> ModelSpec:
        return ModelSpec.of(self.checkpoint.spec)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype


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


def load_run(run: Path, device: str = "auto", which: str = "best") -> Run:
    """The model of a run directory's checkpoint (`which`.pt, else last.pt) or of a .pt file, rebuilt
    on `device` from the checkpoint alone (older checkpoints migrated: train/checkpoint.py)."""
    from xfads_cli.data.provenance import file_sha256
    from xfads_cli.train.checkpoint import resolve_checkpoint
    from xfads_cli.train.device import resolve_device

    path = resolve_checkpoint(run, which)
    ckpt = Checkpoint.load(path)
    config = load_config(base=ckpt.config)
    model = build_model(config, ckpt.spec, resolve_device(device))
    model.load_state_dict(ckpt.model)
    model.eval()
    return Run(model, config, ckpt, path, file_sha256(path))


def load_data_for_run(path: Path, run: Run, overrides=(), window_ms=None) -> SpikeData:
    """Load `path` with the run's own data options (plus `--set` overrides) and check it is the same
    kind of recording the model was trained on: same neurons in the same order and the same bins."""
    from dataclasses import replace

    from xfads_cli.data.load import load_data

    config = load_config(overrides=overrides, base=resolved_config(run.config))
    data_cfg = config.data if window_ms is None else replace(config.data, window_ms=window_ms)
    data = load_data(path, data_cfg)
    check_same_recording(run, data, path)
    return data


def check_same_recording(run: Run, data, path: Path) -> None:
    """UsageError unless `data` (SpikeData or Recording) has the neurons and bins of its session in the run."""
    spec = session_spec(run, data)
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
        index = session_index(run, data)
        trained = trained[index] if index < len(trained) else None
    ours, theirs = data.provenance.get("sha256"), (trained or {}).get("sha256")
    if ours and theirs and ours != theirs:
        warnings.warn(f"{source_name(path)} is not the file this run was trained on ({trained.get('path')}; their "
                      "sha256 differ): the model is applied to a new recording with the same units", stacklevel=2)


def load_recording_for_run(path: Path, run: Run, overrides=()):
    """`path` as a continuous Recording (data/recording.py) with the run's data options, checked as
    load_data_for_run does; None when those options cut it into trials (or it is not an NWB file)."""
    from xfads_cli.data.load import file_format
    from xfads_cli.errors import about_file

    config = load_config(overrides=overrides, base=resolved_config(run.config))
    path = parse_source(path)
    with about_file(path):
        if file_format(path) != "nwb":
            return None
        from xfads_cli.data.nwb import load_nwb_recording

        recording = load_nwb_recording(path, config.data)
    if recording is not None:
        check_same_recording(run, recording, path)
    return recording


def recording_model(run: Run, recording, path: Path, overrides=()):
    """The model serving a Recording's session: XFADS itself; a meta model's session with its
    embedding pooled over the session's training windows (loaded as `load_data_for_run` does)."""
    if not run.spec.meta:
        return run.model.session(0)
    return session_model(run, load_data_for_run(path, run, overrides))


def session_spec(run: Run, data: SpikeData) -> dict:
    """The checkpoint's spec entry of `data`'s session (see session_index)."""
    return run.spec.sessions[session_index(run, data)]


def session_index(run: Run, data: SpikeData) -> int:
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
    """The model serving `data`'s session (`model.session`): XFADS itself, or the meta model bound to
    the session with its embedding pooled over the session's training trials (an adapted session's:
    over the shots it was adapted on)."""
    index = session_index(run, data)
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

    return features_for(getattr(model, "inputs", None), data, rows, n_time, known_until)


def as_tensor(counts: np.ndarray, like) -> torch.Tensor:
    """counts as a tensor on the device and in the dtype of `like`'s parameters: a Run, a model, or
    the model serving one session (its `.model`'s)."""
    param = next((like if isinstance(like, torch.nn.Module) else like.model).parameters())
    return torch.as_tensor(counts, dtype=param.dtype, device=param.device)


def run_inputs(run_path: Path, *data_paths: Path) -> list[Path]:
    """The files a command reading the run `run_path` (a directory or a .pt file) and `data_paths` must
    never write to: the recordings (local ones: a URL is never written) and the checkpoints."""
    run_path = Path(run_path)
    local = [Path(p) for p in data_paths if not is_remote(p)]
    return [*local, run_path, run_path / "best.pt", run_path / "last.pt"]


def require_meta(run: Run, command: str) -> None:
    if not run.spec.meta:
        raise UsageError(
            f"{run.path} is a single-session XFADS run; '{command}' needs a meta-dynamical run "
            "(fit several recordings, or --set model.kind=meta)"
        )


def session_views(model, sessions: list) -> list:
    """The model serving each session (`model.session`), a meta model's embedding pooled over the
    session's training trials (its q(e_i))."""
    def trials(data: SpikeData):
        train = data.subset("train")
        return lambda: as_tensor(train.counts if train.n_trials else data.counts, model)

    return [model.session(i, trials(data)) for i, data in enumerate(sessions)]
