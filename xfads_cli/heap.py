"""Keep a long streaming run's memory flat under glibc (Linux): `serve_large_blocks_by_mmap()`."""

from __future__ import annotations

import sys

M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter
THRESHOLD_BYTES = 1 << 20


def serve_large_blocks_by_mmap() -> bool:
    """Have glibc's malloc serve every block of 1 MiB or more by mmap (returned to the system when freed).
    Why: after a large mmapped block is freed, glibc raises its mmap threshold (up to 32 MiB) and serves
    later blocks of that size from the heap, where HDF5's small compression buffers, allocated between
    them, pin the freed space. Smoothing a long recording piece by piece (hundreds of pieces, each with
    arrays of a few MB to 16 MB) then grew the RSS by ~100 MB per 1000 bins of 1000 neurons, to 9 GB for
    15 minutes; with the threshold fixed it stays flat (benchmarks/README.md, full_size.py). Setting it
    once also stops the adjustment. Returns whether it was set (False off glibc)."""
    if not sys.platform.startswith("linux"):
        return False
    import ctypes

    try:
        libc = ctypes.CDLL("libc.so.6")
        return bool(libc.mallopt(M_MMAP_THRESHOLD, THRESHOLD_BYTES))
    except (OSError, AttributeError):  # not glibc (e.g. musl): nothing to do
        return False
