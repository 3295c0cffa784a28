"""The local cache of remote recordings: the byte blocks a load fetched, kept per URL and ETag.

    $XFADS_CACHE (default $XDG_CACHE_HOME/xfads, else ~/.cache/xfads)/
      remote/<sha256(url)[:24]>/                one folder per URL as the user wrote it
        <sha256(etag)[:16]>/meta.json           {url, etag, size, ranges: true}: the server answered a range request
        <sha256(etag)[:16]>/blocks/<S>-<I>      block I of S bytes (remfile's chunks), exactly as the server sent it

A new ETag (the file changed on the server) is another folder: the old blocks are never read again
and are removed when the new version is first seen. Every file is written to a temporary name of its own
and renamed (os.replace), so a second process (or thread) reading the same URL at the same time sees a
block whole or not at all; two processes fetching the same block both write it, and either copy is the same bytes.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path


def cache_root() -> Path:
    """$XFADS_CACHE, else $XDG_CACHE_HOME/xfads, else ~/.cache/xfads."""
    if os.environ.get("XFADS_CACHE"):
        return Path(os.environ["XFADS_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "xfads"


def _digest(text: str, n: int) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:n]


class BlockCache:
    """The blocks of one version (URL + ETag) of a remote file. `get`/`set` take remfile's disk-cache
    keys ('URL|CHUNK_SIZE|INDEX'); only the size and index name the block, the folder is the version."""

    def __init__(self, url: str, etag: str, root: Path | None = None):
        self.url_dir = (root or cache_root()) / "remote" / _digest(url, 24)
        self.dir = self.url_dir / _digest(etag, 16)
        self.url, self.etag = url, etag

    def _block(self, key: str) -> Path:
        size, index = key.rsplit("|", 2)[1:]
        return self.dir / "blocks" / f"{int(size)}-{int(index)}"

    def get(self, key: str) -> bytes | None:
        try:
            return self._block(key).read_bytes()
        except OSError:  # not cached yet (or removed by a process that saw a newer version)
            return None

    def set(self, key: str, value: bytes) -> None:
        self._write(self._block(key), bytes(value))

    def verified(self, size: int) -> bool:
        """True when this version was opened before: the server answered a range request for it."""
        try:
            meta = json.loads((self.dir / "meta.json").read_text())
        except (OSError, ValueError):
            return False
        return meta.get("ranges") is True and meta.get("size") == size

    def mark_verified(self, size: int) -> None:
        """Record that the server answers range requests for this version; drop older versions."""
        if self.url_dir.is_dir():
            for old in self.url_dir.iterdir():
                if old != self.dir:
                    shutil.rmtree(old, ignore_errors=True)
        meta = {"url": self.url, "etag": self.etag, "size": size, "ranges": True}
        self._write(self.dir / "meta.json", json.dumps(meta).encode())

    def _write(self, path: Path, data: bytes) -> None:
        """Write to a temporary file of its own (unique per process and thread) and rename it into place."""
        tmp = None
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".partial")
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
            os.replace(tmp, path)
        except OSError:  # a read-only or full cache only costs the next load a refetch
            if tmp is not None:
                Path(tmp).unlink(missing_ok=True)
