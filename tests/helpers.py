"""Test helpers: a comparison of what two stores hold (and the real lock fault, re-exported)."""

from __future__ import annotations

import numpy as np

from dualvec.distance import same_vector
from dualvec.testing.faults import sqlite_locked

__all__ = ["assert_same_contents", "contents", "sqlite_locked"]


def contents(store) -> dict[str, tuple[np.ndarray, dict]]:
    """Every record of a store: its vector and its metadata."""
    return {
        r.id: (np.asarray(r.vector, dtype=np.float32), r.metadata) for batch in store.scan(500) for r in batch
    }


def assert_same_contents(a, b) -> None:
    """Both stores hold the same ids, metadata and vectors (in cosine collections, directions)."""
    left, right = contents(a), contents(b)
    assert left.keys() == right.keys(), (
        f"only in first: {sorted(left.keys() - right.keys())[:5]}, "
        f"only in second: {sorted(right.keys() - left.keys())[:5]}"
    )
    differing = [
        i
        for i in left
        if left[i][1] != right[i][1] or not same_vector(left[i][0], right[i][0], a.spec.metric, 1e-5)
    ]
    assert not differing, f"{len(differing)} records differ, e.g. {differing[:5]}"
