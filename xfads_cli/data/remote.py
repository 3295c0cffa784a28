"""Remote recordings read lazily: only the byte ranges h5py asks for are fetched, and kept on disk.

    with open_hdf5(source) as f:        # h5py.File for a local Path or a RemoteSource (data/source.py)
        ...

Reader: remfile (pip install 'xfads[remote]'), a file-like object made for h5py that fetches 100 KiB
chunks with HTTP range requests and reads ahead when access is sequential. It moved the fewest bytes
of the readers measured (benchmarks/remote_reader.py, benchmarks/README.md) and needs only `requests`.
Before remfile reads, `connect` asks the server (HEAD) for the size and ETag and, for a version not
seen before, fetches the first chunk with a range request: a server that ignores ranges, or a
truncated answer, fails there in one request instead of in remfile's retry loop. The chunks are cached
per URL and ETag (data/remote_cache.py): a second load sends only the HEAD.
"""

from __future__ import annotations

import io
from contextlib import contextmanager
from dataclasses import dataclass

from xfads_cli.data.remote_cache import BlockCache
from xfads_cli.data.remote_errors import cut_short, http_error, network_error, no_ranges
from xfads_cli.data.source import RemoteSource, is_remote
from xfads_cli.errors import RemoteError, UsageError

CHUNK = 100 * 1024  # remfile's chunk size (its default), also the size of the cached blocks
TIMEOUT_S = 60
_VALIDATED: dict[str, "Connection"] = {}  # url -> the last connection made: its ETag and size for provenance


@dataclass(frozen=True)
class Connection:
    """A remote file as the server describes it. `url`: where the bytes are read (after redirects)."""

    source: RemoteSource
    url: str
    size: int
    etag: str | None
    cache: BlockCache | None  # None without an ETag or Last-Modified: nothing to validate a cache by


def http_url(source: RemoteSource) -> str:
    """The https:// (or http://) URL the bytes of `source` are read from."""
    if source.scheme in ("http", "https"):
        return source.url
    if source.scheme == "s3":  # public buckets through their virtual-hosted HTTPS endpoint
        return f"https://{source.host}.s3.amazonaws.com/{source.key}"
    from xfads_cli.data.dandi import dandi_asset_url

    return dandi_asset_url(source)


def _requests():
    try:
        import remfile  # noqa: F401 - the reader; imported here so a missing package fails before any request
        import requests
    except ImportError:
        raise UsageError("reading remote recordings (https://, s3://, dandi://) needs the remfile package;"
                         " pip install 'xfads[remote]'") from None
    return requests


def connect(source: RemoteSource) -> Connection:
    """Ask the server for the file's size and ETag; for a version not in the cache, check with one
    range request (its bytes are the first cached block) that the server answers ranges."""
    requests = _requests()
    url = http_url(source)
    try:
        head = requests.head(url, allow_redirects=True, timeout=TIMEOUT_S)
    except Exception as exc:  # noqa: BLE001 - every network failure becomes one line
        raise network_error(source.url, exc) from None
    if head.status_code >= 400:
        raise http_error(source.url, head.status_code, head.reason)
    url = head.url or url  # read where the redirects lead (e.g. a DANDI asset's S3 object)
    etag = head.headers.get("ETag") or (head.headers.get("Last-Modified") and
                                        f"{head.headers['Last-Modified']}/{head.headers.get('Content-Length')}")
    if head.headers.get("Content-Length") is None:
        raise RemoteError(f"{source.url}: the server does not tell the file's size (no Content-Length), so it"
                          " cannot be read lazily; download it and pass the local path")
    size = int(head.headers["Content-Length"])
    cache = BlockCache(source.url, etag) if etag else None
    if cache is None or not cache.verified(size):
        first = _probe(requests, source, url, size)
        if cache is not None:
            cache.set(f"{url}|{CHUNK}|0", first)
            cache.mark_verified(size)
    _VALIDATED[source.url] = Connection(source, url, size, etag, cache)
    return _VALIDATED[source.url]


def _probe(requests, source: RemoteSource, url: str, size: int) -> bytes:
    """The first chunk, fetched with a range request: UsageError-like RemoteErrors for a server that
    ignores ranges, RemoteErrors with exit code 1 for a cut-short answer."""
    end = min(CHUNK, size) - 1
    try:
        with requests.get(url, headers={"Range": f"bytes=0-{end}"}, stream=True, timeout=TIMEOUT_S) as response:
            if response.status_code == 200 and size > end + 1:
                raise no_ranges(source.url)  # closing the response leaves the rest of the body unread
            if response.status_code >= 400:
                raise http_error(source.url, response.status_code, response.reason)
            body = response.raw.read(end + 1, decode_content=True)
    except RemoteError:
        raise
    except Exception as exc:  # noqa: BLE001
        raise network_error(source.url, exc) from None
    if len(body) != end + 1:
        raise cut_short(source.url, len(body), end + 1)
    return body


def validated(source: RemoteSource) -> Connection:
    """The connection this process last made to `source` (connect's, else a new one)."""
    return _VALIDATED.get(source.url) or connect(source)


class RemoteFile(io.RawIOBase):
    """A read-only, seekable file over remfile for h5py. The first failure is kept in `failure`:
    h5py and pynwb re-raise or wrap what a read raises, `open_remote` reports it as the cause."""

    def __init__(self, conn: Connection):
        import remfile

        super().__init__()
        self.conn, self.failure, self._pos = conn, None, 0
        self.name = conn.source.url
        self._file = remfile.File(conn.url, disk_cache=conn.cache, _size=conn.size, _min_chunk_size=CHUNK)

    def __repr__(self) -> str:  # h5py names a file object by its repr (File.filename): the URL
        return self.conn.source.url

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        self._pos = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self.conn.size}[whence] + offset
        return self._pos

    def tell(self) -> int:
        return self._pos

    def readinto(self, buffer) -> int:
        n = max(0, min(len(buffer), self.conn.size - self._pos))
        if n == 0:
            return 0
        try:
            self._file.seek(self._pos)
            data = self._file.read(n)
        except Exception as exc:
            self.failure = self.failure or exc
            raise
        buffer[:n] = data
        self._pos += n
        return n


@contextmanager
def open_remote(source: RemoteSource):
    """Yield a RemoteFile. A failure of the body that follows a network failure is that failure, as
    one RemoteError (h5py and pynwb would report it as a damaged file)."""
    handle = RemoteFile(connect(source))
    try:
        yield handle
    except Exception:  # not KeyboardInterrupt: an interrupted load is the user's, whatever failed before
        if handle.failure is not None:
            raise network_error(source.url, handle.failure) from None
        raise
    if handle.failure is not None:  # swallowed by a reader that then carried on: the data are incomplete
        raise network_error(source.url, handle.failure)


@contextmanager
def open_hdf5(source):
    """h5py.File (read-only) of a local path or a RemoteSource."""
    import h5py

    if not is_remote(source):
        with h5py.File(source, "r") as f:
            yield f
        return
    with open_remote(source) as handle, h5py.File(handle, "r") as f:
        yield f
