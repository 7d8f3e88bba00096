"""Test helpers: a comparison of what two stores hold (and the real lock fault, re-exported)."""

from __future__ import annotations

import numpy as np

from dualvec.distance import canonical
from dualvec.testing.faults import sqlite_locked

__all__ = ["assert_same_contents", "contents", "sqlite_locked"]


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
