"""User-facing errors.

Anything the user can fix (a wrong path, a bad option, a malformed file) raises `UsageError` with a
one-line message that names the problem and the fix. The CLI prints it and exits with code 2,
without a traceback. Everything else is a bug or a runtime failure (exit code 1).
"""

from __future__ import annotations

from contextlib import contextmanager


class UsageError(Exception):
    """Bad input or usage: printed as one line, exit code 2."""

    exit_code = 2

    def __init__(self, message: str):
        # One line only: a multi-line message breaks log parsers on clusters.
        super().__init__(" ".join(str(message).split()))


class BadFile(UsageError):
    """The file's content is broken (corrupt, truncated, impossible values), as opposed to options that
    do not fit it: no option can fix it, so even `xfads inspect` without options rejects the file."""


class RunFailure(Exception):
    """The job itself failed (e.g. the loss diverged): exit code 1."""

    exit_code = 1


class RemoteError(Exception):
    """A remote recording could not be read (data/remote.py): one line naming the URL and the fix.
    Exit code 2 when the user can fix it (a wrong URL, 404, a server without range requests), 1 for
    a transient failure (a server error, a reset connection). Not a UsageError, so that no command
    that tolerates a file's UsageErrors (e.g. `xfads inspect` reporting a failed load) hides it."""

    def __init__(self, message: str, exit_code: int = 2):
        super().__init__(" ".join(str(message).split()))
        self.exit_code = exit_code


@contextmanager
def about_file(path):
    """Prefix UsageErrors raised inside with the file's name (unless they name it already), so that a
    command reading several files says which one is at fault."""
    try:
        yield
    except UsageError as exc:
        name = getattr(path, "name", str(path))
        if name in str(exc):
            raise
        raise type(exc)(f"{name}: {exc}") from None


_KINDS = {"S": "text", "U": "text", "O": "text or objects", "b": "booleans", "c": "complex numbers",
          "V": "records (a compound type)", "M": "dates", "m": "time deltas"}


def dtype_kind(dtype) -> str:
    """What a dataset of `dtype` holds, for messages about non-numeric data: 'text (|S4)' etc."""
    import numpy as np

    dtype = np.dtype(dtype)
    return f"{_KINDS.get(dtype.kind, 'values')} ({dtype})"


def closest(name: str, choices) -> str:
    """A ' (did you mean X?)' hint for a misspelled `name`, or '' when nothing is close."""
    import difflib

    match = difflib.get_close_matches(str(name), [str(c) for c in choices], n=1, cutoff=0.5)
    return f" (did you mean '{match[0]}'?)" if match else ""


def listing(choices, limit: int = 12) -> str:
    """Comma-separated list of available names for error messages."""
    items = [str(c) for c in choices]
    if not items:
        return "none"
    more = f", ... ({len(items) - limit} more)" if len(items) > limit else ""
    return ", ".join(items[:limit]) + more


def first_line(exc: Exception, width: int = 200, sentence: bool = False) -> str:
    """An exception's text for a one-line message: its first line (with `sentence`, its first sentence:
    torch and HDF5 go on with paragraphs of advice), at most `width` characters, cut at a word."""
    import textwrap

    text = str(exc).strip()
    text = text.splitlines()[0] if text else type(exc).__name__
    if sentence:
        text = text.split(". ")[0].rstrip(".")
    return textwrap.shorten(text, width, placeholder=" ...")
