"""Shared test fixtures: paths to the bundled fixtures and (optionally) ../shared real recordings."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "data_fixtures"
SHARED = Path(os.environ.get("XFADS_SHARED", ROOT.parent / "shared"))
REAL = SHARED / "data" / "real"


@pytest.fixture
def real_dir() -> Path:
    """../shared/data/real, or a clean skip on a user's clone that has no ../shared."""
    if not REAL.is_dir():
        pytest.skip("../shared/data/real is not available")
    return REAL


@pytest.fixture
def fixtures_dir() -> Path:
    return FIXTURES

# One fixed CPU thread for every fit the tests run (in-process and in subprocesses): the thread tuner
# (train/threads.py) would otherwise choose counts from timings, and results differ in the last bits
# between thread counts, which the bit-identical resume tests would see. test_threads.py tests the tuner.
os.environ.setdefault("XFADS_THREADS", "1")
