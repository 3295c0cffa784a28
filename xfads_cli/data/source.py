"""A DATA argument as a local path or a remote recording: `parse_source(text) -> Path | RemoteSource`.

    parse_source("runs/x.nwb")                          -> Path("runs/x.nwb")
    parse_source("https://host/data/x.nwb")             -> RemoteSource(scheme "https", name "x.nwb")
    parse_source("s3://bucket/key/x.nwb")               -> read over HTTPS from the bucket's public endpoint
    parse_source("dandi://000128/sub-Jenkins/x.nwb")    -> the asset's URL, asked of DANDI (pip install 'xfads[dandi]')
    parse_source("dandi://000128@0.220113.0408/...")    -> the same, in a published version of the dandiset

The CLI takes DATA as text and calls this once: `Path("https://host/x.nwb")` would collapse '//' and
turn the URL into a local path that does not exist. A RemoteSource offers the few attributes the
loaders use of a Path (`name`, `stem`, `suffix`, `str()`), so messages name the file the same way;
it is resolved to an http(s) URL only when read (data/remote.py), so parsing needs no network.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

SCHEMES = ("https", "http", "s3", "dandi")
_URL = re.compile(r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*)://(?P<rest>.*)$")


@dataclass(frozen=True)
class RemoteSource:
    """A recording read over the network. `url` is what the user wrote (kept in provenance)."""

    url: str
    scheme: str
    host: str  # the bucket for s3://, the dandiset id (with @version) for dandi://
    key: str  # the path on the host, in the bucket or in the dandiset

    @property
    def name(self) -> str:
        return PurePosixPath(self.key).name or self.host

    @property
    def stem(self) -> str:
        return PurePosixPath(self.name).stem

    @property
    def suffix(self) -> str:
        return PurePosixPath(self.name).suffix

    def __str__(self) -> str:
        return self.url


def parse_source(text: str | Path | RemoteSource) -> Path | RemoteSource:
    """A local Path, or a RemoteSource for an https://, http://, s3:// or dandi:// URL (UsageError for
    another scheme or a URL without a file)."""
    from xfads_cli.errors import UsageError

    if isinstance(text, (Path, RemoteSource)):
        return text
    match = _URL.match(str(text))
    if not match:
        return Path(text)
    scheme = match["scheme"].lower()
    if scheme not in SCHEMES:
        raise UsageError(f"{text}: unsupported URL scheme '{scheme}://'; use a local path or an https://, http://, "
                         "s3://BUCKET/KEY or dandi://DANDISET/PATH URL")
    host, _, key = match["rest"].split("?", 1)[0].partition("/")
    if not host or not key.strip("/"):
        form = {"s3": "s3://BUCKET/path/to/file.nwb", "dandi": "dandi://000128/sub-X/file.nwb"}.get(
            scheme, f"{scheme}://HOST/path/to/file.nwb")
        raise UsageError(f"{text} names no file; a remote recording is given as {form}")
    return RemoteSource(url=str(text), scheme=scheme, host=host, key=key)


def is_remote(source) -> bool:
    return isinstance(source, RemoteSource)


def source_name(source) -> str:
    """The file name shown in messages: the last component of a path or URL."""
    return source.name if isinstance(source, RemoteSource) else Path(source).name


def source_text(source) -> str:
    """What provenance records as the source's path: a local file's absolute path, a remote one's URL."""
    return source.url if isinstance(source, RemoteSource) else str(Path(source).resolve())
