"""Where a dataset came from: file hashes recorded with every loaded container and output.

A remote recording (data/source.py) cannot be hashed without downloading all of it, which lazy
reading avoids: its provenance records the URL, the server's ETag and the size instead of a sha256."""

from __future__ import annotations

import hashlib
from contextlib import nullcontext
from pathlib import Path

_CHUNK = 1 << 20  # 1 MiB: constant memory on multi-GB recordings


def file_sha256(path: str | Path, copy_to: str | Path | None = None) -> str:
    """Hex SHA-256 of a file's bytes, read in 1 MiB chunks; copy_to: also write the bytes there (one
    read of the file for both: outputs/nwb.py hashes the input it copies)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle, (open(copy_to, "wb") if copy_to is not None else nullcontext()) as copy:
        for chunk in iter(lambda: handle.read(_CHUNK), b""):
            digest.update(chunk)
            if copy is not None:
                copy.write(chunk)
    return digest.hexdigest()


def source_provenance(source) -> dict:
    """{path, sha256} of a local file; {path: URL, url, etag, size_bytes} of a remote one (no sha256)."""
    from xfads_cli.data.source import is_remote, source_text

    if not is_remote(source):
        return {"path": source_text(source), "sha256": file_sha256(source)}
    from xfads_cli.data.remote import validated

    conn = validated(source)
    return {"path": source.url, "url": source.url, "etag": conn.etag, "size_bytes": conn.size}


def content_id(provenance: dict) -> str | None:
    """What identifies a recording's content: its sha256, or a remote file's URL and ETag."""
    if provenance.get("sha256"):
        return provenance["sha256"]
    if provenance.get("url") and provenance.get("etag"):
        return f"{provenance['url']} {provenance['etag']}"
    return None


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
