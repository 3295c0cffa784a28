"""`xfads stream`'s input and output lines (data/live.py, outputs/live.py): bad bins become missing
bins with an error, the stream goes on; output lines are plain JSON with null for NaN."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest

from xfads_cli.data.live import ndjson_bins, parse_bin
from xfads_cli.outputs.live import Latency, NdjsonSink, record


def test_a_good_line_gives_its_counts_and_time():
    b = parse_bin('{"counts": [1, 0, null, 2.5], "t": 3.25}', 4)
    assert b.error is None and b.t == 3.25
    np.testing.assert_array_equal(b.counts, [1, 0, np.nan, 2.5])


@pytest.mark.parametrize("line, says", [
    ("{not json", "not a JSON line"),
    ("[1, 2, 3]", "expected an object"),
    ('{"t": 1}', "expected an object"),
    ('{"counts": [1, 2]}', "list of 3 numbers (the run's units), got 2"),
    ('{"counts": 7}', "got int"),
    ('{"counts": [1, "x", 2]}', 'count 1 is "x"'),
    ('{"counts": [1, true, 2]}', "count 1 is true"),
    ('{"counts": [1, 2, "3"]}', 'count 2 is "3"'),
    ('{"counts": [[1], 2, 3]}', "count 0 is [1]"),
    ('{"counts": [1, 1e999, 2]}', "not a number or null"),  # json reads 1e999 as inf
])
def test_a_bad_line_is_an_all_missing_bin_with_its_reason(line, says):
    b = parse_bin(line, 3)
    assert says in b.error
    assert b.counts.shape == (3,) and np.isnan(b.counts).all()


def test_the_stream_goes_on_after_bad_lines_and_skips_blank_ones():
    text = '{"counts": [1, 2]}\n\ngarbage\n{"counts": [3, 4], "t": 0.02}\n'
    bins = list(ndjson_bins(io.StringIO(text), 2))
    assert [b.error is None for b in bins] == [True, False, True]
    assert bins[2].t == 0.02 and bins[2].received >= bins[0].received


def test_output_lines_are_json_with_null_for_missing_and_infinite_values():
    out = io.StringIO()
    sink = NdjsonSink(out)
    sink.write(record(0.5, np.array([0.1234567891, -1.0]), np.array([1.0, np.inf]), np.array([np.nan, 3.0]),
                      forecast=np.ones((2, 2))))
    line = json.loads(out.getvalue())
    assert line == {"t": 0.5, "latent_mean": [0.123457, -1.0], "latent_var": [1.0, None], "rates": [None, 3.0],
                    "forecast": [[1.0, 1.0], [1.0, 1.0]]}


def test_latency_percentiles():
    lat = Latency()
    assert lat.summary() == {"p50": None, "p99": None, "max": None}
    for ms in range(1, 101):
        lat.add(float(ms))
    s = lat.summary()
    assert s["p50"] == pytest.approx(50.5) and s["p99"] == pytest.approx(99.01) and s["max"] == 100.0
