"""Several recordings at once (the meta-dynamical model): files, a directory, or a manifest.

    sessions.yaml
        sessions:
          - path: mouse1_day1.nwb              # relative to the manifest
            name: m1d1                         # optional (default: file stem)
            data: {align: go_cue_time, window_ms: [-200, 800]}   # per-session data options
          - path: mouse1_day2.nwb

Per-session `data` options override the run's `data` section for that file only, strictly validated.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from xfads_cli.config import DataConfig, load_config, load_yaml, resolved_config
from xfads_cli.data.source import RemoteSource, is_remote, parse_source
from xfads_cli.errors import UsageError, closest

DATA_SUFFIXES = (".nwb", ".h5", ".hdf5")
MANIFEST_SUFFIXES = (".yaml", ".yml")


@dataclass(frozen=True)
class RecordingSource:
    path: Path | RemoteSource
    data: DataConfig


def expand_sources(paths: list[Path | str | RemoteSource], base: DataConfig) -> list[RecordingSource]:
    """Files, URLs, directories (their NWB/HDF5 files, sorted) and manifests -> one source per session."""
    sources: list[RecordingSource] = []
    for path in map(parse_source, paths):
        if is_remote(path):
            sources.append(RecordingSource(path, base))
        elif path.is_dir():
            files = sorted(p for p in path.iterdir() if p.suffix.lower() in DATA_SUFFIXES)
            if not files:
                raise UsageError(f"directory {path} holds no .nwb or .h5 files")
            sources += [RecordingSource(p, base) for p in files]
        elif path.suffix.lower() in MANIFEST_SUFFIXES:
            sources += _read_manifest(path, base)
        else:
            sources.append(RecordingSource(path, base))
    names = [s.data.session or s.path.stem for s in sources]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise UsageError(f"two sessions are named '{duplicates[0]}'; give them distinct names in a sessions.yaml manifest")
    return sources


def _read_manifest(path: Path, base: DataConfig) -> list[RecordingSource]:
    import yaml

    if not path.is_file():
        raise UsageError(f"no such manifest: {path}")
    try:
        raw = load_yaml(path.read_text(), str(path))
    except yaml.YAMLError:
        raise UsageError(f"{path} is not valid YAML; see the README for the sessions.yaml format") from None
    if isinstance(raw, dict):
        extra = set(raw) - {"sessions"}
        if extra:
            key = sorted(map(str, extra))[0]
            raise UsageError(f"unknown key '{key}' in {path.name}{closest(key, ['sessions'])}; only 'sessions' is allowed")
    if not isinstance(raw, dict) or not isinstance(raw.get("sessions"), list) or not raw["sessions"]:
        raise UsageError(f"{path} must hold a non-empty list under 'sessions:' (entries with path, name, data)")
    sources = []
    for i, entry in enumerate(raw["sessions"]):
        if isinstance(entry, str):
            entry = {"path": entry}
        if not isinstance(entry, dict) or "path" not in entry:
            raise UsageError(f"{path.name}: session {i + 1} needs a 'path'")
        unknown = set(entry) - {"path", "name", "data"}
        if unknown:
            key = sorted(unknown)[0]
            raise UsageError(f"{path.name}: unknown key '{key}' in session {i + 1}{closest(key, ['path', 'name', 'data'])}")
        overrides = entry.get("data") or {}
        if not isinstance(overrides, dict):
            raise UsageError(f"{path.name}: 'data' of session {i + 1} must be a mapping of data options")
        merged = load_config(base={"data": {**resolved_config(_wrap(base))["data"], **overrides}}).data
        if entry.get("name"):
            merged = replace(merged, session=str(entry["name"]))
        file = parse_source(str(entry["path"]))  # a path relative to the manifest, or a URL
        sources.append(RecordingSource(file if is_remote(file) or file.is_absolute() else path.parent / file, merged))
    return sources


def _wrap(data: DataConfig):
    from xfads_cli.config import Config

    return Config(data=data)


def load_sessions(paths: list[Path | str | RemoteSource], base: DataConfig):
    """Load every session (SpikeData each) in the order given."""
    from xfads_cli.data.load import load_data

    return [load_data(s.path, s.data) for s in expand_sources(paths, base)]
