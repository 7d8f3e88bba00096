from __future__ import annotations

import pytest

from dualvec import open_store
from dualvec.testing.conformance import PersistentStoreConformance


class TestSqliteVecStore(PersistentStoreConformance):
    metrics = frozenset({"cosine", "l2"})

    @pytest.fixture
    def open_collection(self, tmp_path):
        return lambda spec: open_store(f"sqlite-vec://{tmp_path}/vec.db", spec)


def test_reads_do_not_wait_behind_a_write_blocked_on_the_lock(tmp_path):
    import threading
    import time

    from helpers import sqlite_locked

    from dualvec import StoreError
    from dualvec.testing import make_records, sample_spec

    store = open_store(f"sqlite-vec://{tmp_path}/vec.db?busy_timeout=2", sample_spec(dim=16))
    records = make_records(100, 16)
    store.upsert(records)
    outcome = []

    def write() -> None:
        try:
            store.upsert(make_records(5, 16, seed=3, prefix="w-"))
        except StoreError as exc:
            outcome.append(exc)

    with sqlite_locked(tmp_path / "vec.db"):
        writer = threading.Thread(target=write)
        writer.start()
        time.sleep(0.2)  # the write is now waiting for the lock
        start = time.perf_counter()
        assert store.search(records[0].vector, k=1)[0].id == records[0].id
        assert len(store.get([records[1].id])) == 1
        assert store.count() == 100
        assert time.perf_counter() - start < 0.5
        writer.join()
    assert outcome
    store.close()
