"""Test helpers that cause real conditions: a SQLite lock held by another process, and a
comparison of what two stores hold."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from dualvec.distance import canonical

LOCK_HOLDER = """
import sqlite3, sys
conn = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=30)
conn.execute("BEGIN EXCLUSIVE")
print("locked", flush=True)
sys.stdin.readline()
conn.execute("ROLLBACK")
"""


@contextmanager
def sqlite_locked(path: Path) -> Iterator[None]:
    """Another process holds an exclusive lock on the database: its writers fail for real."""
    holder = subprocess.Popen(
        [sys.executable, "-c", LOCK_HOLDER, str(path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        yield
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)
        holder.stdout.close()


def contents(store) -> dict[str, tuple[tuple[float, ...], tuple]]:
    """Every record of a store, comparable across stores (vectors rounded, cosine by direction)."""
    out = {}
    for batch in store.scan(batch_size=500):
        for record in batch:
            vector = canonical(np.asarray(record.vector, dtype=np.float32), store.spec.metric)
            out[record.id] = (tuple(np.round(vector, 5)), tuple(sorted(record.metadata.items())))
    return out


def assert_same_contents(a, b) -> None:
    left, right = contents(a), contents(b)
    assert left.keys() == right.keys(), (
        f"only in first: {sorted(left.keys() - right.keys())[:5]}, "
        f"only in second: {sorted(right.keys() - left.keys())[:5]}"
    )
    differing = [i for i in left if left[i] != right[i]]
    assert not differing, f"{len(differing)} records differ, e.g. {differing[:5]}"
