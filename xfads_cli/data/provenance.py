"""Where a dataset came from: file hashes recorded with every loaded container and output."""

from __future__ import annotations

import hashlib
from pathlib import Path

_CHUNK = 1 << 20  # 1 MiB: constant memory on multi-GB recordings


def file_sha256(path: str | Path) -> str:
    """Hex SHA-256 of a file's bytes, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def package_versions() -> dict[str, str]:
    """Versions of Python and the packages that shape a result, saved with every run and output."""
    import platform
    from importlib import metadata

    versions = {"python": platform.python_version()}
    for name in ("xfads", "torch", "numpy", "pynwb", "hdmf", "h5py", "typer", "pyyaml"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions
