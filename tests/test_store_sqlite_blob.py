from __future__ import annotations

import pytest

from dualvec import open_store
from dualvec.testing.conformance import PersistentStoreConformance


class TestSqliteBlobStore(PersistentStoreConformance):
    @pytest.fixture
    def open_collection(self, tmp_path):
        return lambda spec: open_store(f"sqlite-blob://{tmp_path}/app.db", spec)


WRITER = """
import sys, time
from dualvec import open_store
from dualvec.testing import make_records, sample_spec
store = open_store(sys.argv[1], sample_spec(dim=16))
deadline = time.monotonic() + float(sys.argv[2])
step = 0
print("ready", flush=True)
while time.monotonic() < deadline:
    step += 1
    batch = make_records(20, 16, seed=step, prefix=f"w{step % 30}-")
    store.upsert(batch)
    store.delete([r.id for r in batch[:5]])
store.close()
"""


def test_searches_stay_correct_while_another_process_writes(tmp_path):
    import subprocess
    import sys

    from dualvec.testing import make_records, sample_spec

    url = f"sqlite-blob://{tmp_path}/app.db"
    store = open_store(url, sample_spec(dim=16))
    store.upsert(make_records(200, 16))
    writer = subprocess.Popen([sys.executable, "-c", WRITER, url, "3"], stdout=subprocess.PIPE, text=True)
    try:
        assert writer.stdout.readline().strip() == "ready"
        queries = make_records(50, 16, seed=99)
        searches = 0
        while writer.poll() is None:
            query = queries[searches % 50].vector
            hits = store.search(query, k=10, filter={"lang": "en"} if searches % 2 else None)
            assert len(hits) == 10
            searches += 1
        assert writer.returncode == 0
        assert searches > 50
    finally:
        writer.wait(timeout=30)
        writer.stdout.close()
        store.close()
