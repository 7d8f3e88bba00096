from __future__ import annotations

import subprocess
import sys

import pytest

from dualvec.routing import BUCKETS, bucket, in_percent

KEYS = [f"tenant-{i}" for i in range(100_000)]


@pytest.mark.parametrize("percent", [1, 10, 33.3, 50, 90])
def test_served_share_is_within_one_point_of_the_flag(percent):
    share = sum(in_percent(k, "read:docs", percent) for k in KEYS) / len(KEYS) * 100
    assert abs(share - percent) <= 1.0


def test_ramping_up_never_moves_a_key_back_and_ramping_down_removes_newest_first():
    on = {p: {k for k in KEYS if in_percent(k, "read:docs", p)} for p in (10, 50, 100)}
    assert on[10] <= on[50] <= on[100]
    assert len(on[100]) == len(KEYS)
    # Lowering 50 -> 10 keeps exactly the keys that were on the target at 10.
    assert {k for k in on[50] if in_percent(k, "read:docs", 10)} == on[10]


def test_buckets_are_identical_in_another_interpreter():
    sample = KEYS[:50]
    here = [bucket(k, "read:docs") for k in sample]
    code = (
        "import json,sys; from dualvec.routing import bucket; "
        f"print(json.dumps([bucket(k, 'read:docs') for k in {sample!r}]))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONHASHSEED": "12345"},
    ).stdout
    assert [int(x) for x in out.strip().strip("[]").split(",")] == here
    assert all(0 <= b < BUCKETS for b in here)


def test_salts_separate_collections():
    read_docs = {k for k in KEYS if in_percent(k, "read:docs", 50)}
    read_other = {k for k in KEYS if in_percent(k, "read:other", 50)}
    # Independent halves overlap on about a quarter of all keys.
    overlap = len(read_docs & read_other) / len(KEYS)
    assert 0.24 < overlap < 0.26


def test_no_key_routes_at_random_per_request():
    decisions = [in_percent(None, "read:docs", 30) for _ in range(20_000)]
    assert abs(sum(decisions) / len(decisions) - 0.30) < 0.02


def test_edges():
    assert not any(in_percent(k, "s", 0) for k in KEYS[:1000])
    assert all(in_percent(k, "s", 100) for k in KEYS[:1000])
