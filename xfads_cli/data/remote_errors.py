"""Network failures of a remote recording as one-line RemoteErrors: what went wrong, at which URL, and
the fix. Exit code 2 for what the user can fix (a wrong URL or host, 404, 403, a server without range
requests), 1 for what may pass on a retry (5xx, 429, a timeout, a reset or cut-short connection)."""

from __future__ import annotations

import re

from xfads_cli.errors import RemoteError

RETRY = "try again later (a transient failure of the server or the network)"


def http_error(url: str, status: int, reason: str = "") -> RemoteError:
    """The RemoteError for an HTTP error status answered for `url`."""
    code = f"HTTP {status}{' ' + reason if reason else ''}"
    if status in (404, 410):
        return RemoteError(f"{url} was not found ({code}); check the URL")
    if status in (401, 403):
        return RemoteError(f"{url}: access denied ({code}); xfads reads public URLs only: check the URL, or download"
                           " the file and pass its local path")
    if status == 429 or status >= 500:
        return RemoteError(f"{url}: the server failed ({code}); {RETRY}", exit_code=1)
    return RemoteError(f"{url}: the server refused the request ({code}); check the URL")


def no_ranges(url: str) -> RemoteError:
    return RemoteError(f"{url}: the server does not answer range requests (it sent the whole file for a part of it),"
                       " so the file cannot be read lazily; download it and pass the local path")


def cut_short(url: str, got: int | None = None, expected: int | None = None) -> RemoteError:
    sizes = f" ({got:,} of {expected:,} bytes)" if got is not None and expected is not None else ""
    return RemoteError(f"{url}: the server's answer was cut short{sizes}; {RETRY}", exit_code=1)


def network_error(url: str, exc: BaseException) -> RemoteError:
    """The RemoteError for an exception raised while talking to the server (by requests or remfile)."""
    import requests

    text = " ".join(str(exc).split())
    if isinstance(exc, RemoteError):
        return exc
    if isinstance(exc, requests.Timeout):
        return RemoteError(f"{url}: the server did not answer in time; {RETRY}", exit_code=1)
    if isinstance(exc, (requests.exceptions.ChunkedEncodingError, requests.exceptions.ContentDecodingError)) or (
            "IncompleteRead" in text or "Unexpected number of bytes" in text):
        return cut_short(url)
    if isinstance(exc, (ConnectionResetError, BrokenPipeError)) or re.search(r"reset|aborted|RemoteDisconnected", text):
        return RemoteError(f"{url}: the connection was reset; {RETRY}", exit_code=1)
    if isinstance(exc, requests.ConnectionError):
        host = requests.utils.urlparse(url).netloc
        return RemoteError(f"cannot reach {host} for {url} (no such host, or nothing answers there); check the URL"
                           " and the network connection")
    status = re.search(r": ([45]\d\d)\b", text)  # remfile: 'Error fetching bytes 0-9: 500 Internal Server Error'
    if status:
        return http_error(url, int(status[1]))
    return RemoteError(f"{url}: reading failed ({type(exc).__name__}: {text[:200]}); {RETRY}", exit_code=1)
