"""Remote recordings read lazily: only the byte ranges h5py asks for are fetched, and kept on disk.

    with open_hdf5(source) as f:        # h5py.File for a local Path or a RemoteSource (data/source.py)
        ...

Reader: remfile (pip install 'xfads[remote]'), a file-like object made for h5py that fetches 100 KiB
chunks with HTTP range requests and reads ahead when access is sequential. Measured against fsspec's
HTTP file (benchmarks/remote_reader.py, benchmarks/README.md), both fetch under 10% of a file that is
mostly data the loader does not read; remfile needs only `requests` and takes a disk cache.
Before remfile reads, `connect` asks the server (HEAD) for the size and ETag and, for a version not
seen before, fetches the first chunk with a range request: a server that ignores ranges, or a
truncated answer, fails there in one request instead of in remfile's retry loop (a server that
refuses HEAD, 405/501, gets only that request: its answer tells the size and ETag). The chunks are
cached per URL and ETag (data/remote_cache.py): a second load sends only the HEAD.
Once the server has answered, a connection it refuses later means it (or the network) went down
meanwhile, not a wrong URL: exit code 1, "try again" (`_lost`).
"""

from __future__ import annotations

import io
from contextlib import contextmanager
from dataclasses import dataclass

from xfads_cli.data.remote_cache import BlockCache
from xfads_cli.data.remote_errors import RETRY, cut_short, http_error, network_error, no_ranges
from xfads_cli.data.source import RemoteSource, is_remote
from xfads_cli.errors import RemoteError, UsageError

CHUNK = 100 * 1024  # remfile's chunk size (its default), also the size of the cached blocks
TIMEOUT_S = 60
CONNECT_TIMEOUT_S = 10
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
        from urllib.parse import quote

        return f"https://{source.host}.s3.amazonaws.com/{quote(source.key, safe='/')}"  # S3 reads '+' as ' '
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
    """Ask the server for the file's size and ETag (HEAD); for a version not in the cache, check with
    one range request (its bytes are the first cached block) that the server answers ranges."""
    requests = _requests()
    url = http_url(source)
    try:
        head = requests.head(url, allow_redirects=True, timeout=TIMEOUT_S)
    except Exception as exc:  # noqa: BLE001 - every network failure becomes one line
        raise (_lost if source.url in _VALIDATED else network_error)(source.url, exc) from None
    first = None
    if head.status_code in (405, 501):  # a server without HEAD: the range request tells size and ETag
        first = _probe(requests, source, url)
        url, size, etag = first.url, first.size, first.etag
    elif head.status_code >= 400:
        raise http_error(source.url, head.status_code, head.reason)
    else:
        url = head.url or url  # read where the redirects lead (e.g. a DANDI asset's S3 object)
        size = _size(source, head.headers.get("Content-Length"))
        etag = _validator(head.headers)
    cache = BlockCache(source.url, etag) if etag else None
    if cache is None or not cache.verified(size):
        first = first or _probe(requests, source, url)
        if cache is not None:
            cache.set(f"{url}|{CHUNK}|0", first.body)
            cache.mark_verified(size)
    _VALIDATED[source.url] = Connection(source, url, size, etag, cache)
    return _VALIDATED[source.url]


def _size(source: RemoteSource, text: str | None) -> int:
    if text is None or not text.isdigit():
        raise RemoteError(f"{source.url}: the server does not tell the file's size, so it cannot be read lazily;"
                          " download it and pass the local path")
    return int(text)


def _validator(headers) -> str | None:
    """What identifies this version of the file: the ETag, else Last-Modified with the size."""
    if headers.get("ETag"):
        return headers["ETag"]
    if headers.get("Last-Modified"):
        return f"{headers['Last-Modified']}/{headers.get('Content-Length')}"
    return None


@dataclass(frozen=True)
class _Probe:
    url: str
    size: int
    etag: str | None
    body: bytes  # the first min(CHUNK, size) bytes


def _probe(requests, source: RemoteSource, url: str) -> _Probe:
    """The first chunk, fetched with a range request: a RemoteError (exit 2) for a server that ignores
    ranges, one with exit code 1 for a cut-short answer."""
    try:
        with requests.get(url, headers={"Range": f"bytes=0-{CHUNK - 1}"}, stream=True, timeout=TIMEOUT_S) as answer:
            if answer.status_code >= 400:
                raise http_error(source.url, answer.status_code, answer.reason)
            if answer.status_code == 206:
                size = _size(source, answer.headers.get("Content-Range", "").rpartition("/")[2])
            else:  # the whole file: fine for a file of one chunk, else no lazy reading
                size = _size(source, answer.headers.get("Content-Length"))
                if size > CHUNK:
                    raise no_ranges(source.url)  # closing the answer leaves the rest of the body unread
            expected = min(CHUNK, size)
            body = answer.raw.read(expected, decode_content=True)
            probe = _Probe(answer.url or url, size, _validator(answer.headers), body)
    except RemoteError:
        raise
    except Exception as exc:  # noqa: BLE001
        raise _lost(source.url, exc) from None
    if len(body) != expected:
        raise cut_short(source.url, len(body), expected)
    return probe


def _lost(url: str, exc: Exception) -> RemoteError:
    """network_error for a server that answered before (HEAD or a range request): a connection that
    now fails is a server or network gone down meanwhile, transient, not a wrong URL or host."""
    import requests

    error = network_error(url, exc)
    if error.exit_code == 2 and isinstance(exc, requests.ConnectionError):
        return RemoteError(f"{url}: the server answered, then stopped answering (it went down, or the network did);"
                           f" {RETRY}", exit_code=1)
    return error


def validated(source: RemoteSource) -> Connection:
    """The connection this process last made to `source` (connect's, else a new one)."""
    return _VALIDATED.get(source.url) or connect(source)


def _with_timeouts(session) -> None:
    """Give every request of a requests.Session (connect, read) timeouts unless it sets its own."""
    request = session.request

    def timed(method, url, **kwargs):
        if kwargs.get("timeout") is None:
            kwargs["timeout"] = (CONNECT_TIMEOUT_S, TIMEOUT_S)
        return request(method, url, **kwargs)

    session.request = timed


class RemoteFile(io.RawIOBase):
    """A read-only, seekable file over remfile for h5py. The first failure is kept in `failure`, as a
    RemoteError: h5py and pynwb re-raise or wrap what a read raises, `open_remote` reports it as the cause."""

    def __init__(self, conn: Connection):
        import remfile

        super().__init__()
        self.conn, self.failure, self._pos = conn, None, 0
        self.name = conn.source.url
        self._file = remfile.File(conn.url, disk_cache=conn.cache, _size=conn.size, _min_chunk_size=CHUNK)
        if getattr(self._file, "session", None) is not None:
            # remfile's range requests have no timeout: a server that stops answering would hang the
            # read forever instead of failing into remfile's retries
            _with_timeouts(self._file.session)

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
            # h5py's file access property list holds this object where the garbage collector cannot see
            # it, so nothing this object holds may reach h5py's frames (exc's traceback does, and a raised
            # error's): such a cycle is never freed, and HDF5 frees the list at exit, after Python has
            # ended: a segmentation fault. Hence an unraised RemoteError, taken out again by _failure.
            self.failure = self.failure or _lost(self.conn.source.url, exc)
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
            raise _failure(handle) from None
        raise
    if handle.failure is not None:  # swallowed by a reader that then carried on: the data are incomplete
        raise _failure(handle)


def _failure(handle: RemoteFile) -> RemoteError:
    """The handle's failure, taken out of it before it is raised (see RemoteFile.readinto)."""
    failure, handle.failure = handle.failure, None
    return failure


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
