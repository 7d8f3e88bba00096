from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from conftest import require

from dualvec import open_store
from dualvec.errors import ExtensionLoadError, StoreError
from dualvec.records import Record
from dualvec.sqlite_driver import connect
from dualvec.stores.sqlite_vss_loader import vss_load_problem
from dualvec.testing import make_records, sample_spec
from dualvec.testing.conformance import PersistentStoreConformance, reference_top

VSS_PROBLEM = vss_load_problem()
DIM = 8


@pytest.fixture
def url(tmp_path):
    require(VSS_PROBLEM is None, "libblas3")
    return f"sqlite-vss://{tmp_path}/vss.db"


class TestSqliteVssStore(PersistentStoreConformance):
    metrics = frozenset({"cosine", "l2"})

    @pytest.fixture
    def open_collection(self, url):
        return lambda spec: open_store(url, spec)


def test_stores_on_one_file_see_and_keep_each_others_writes(url):
    """vss0 loads its index once per connection and writes all of it back at each commit: without
    the adapter's data_version check, `late` would search an empty index (which aborts the
    process) and its write would erase `early`'s vectors from the index."""
    spec = sample_spec(dim=DIM)
    first, second, third = (make_records(20, DIM, seed=s, prefix=f"{s}-") for s in (1, 2, 3))
    with open_store(url, spec) as early, open_store(url, spec) as late:
        early.upsert(first)
        assert late.search(first[0].vector, k=1)[0].id == first[0].id
        late.upsert(second)
        early.upsert(third)
        early.delete([second[0].id])
    everything = first + second[1:] + third
    with open_store(url, spec) as fresh:
        for query in (first[3], second[3], third[3]):
            want = reference_top(everything, query.vector, "cosine", 5)
            assert [h.id for h in fresh.search(query.vector, k=5)] == [i for i, _ in want]
        assert fresh.count() == len(everything)


def test_a_filter_reaching_past_the_first_top_list_stays_exact(url):
    spec = sample_spec(dim=DIM, metric="l2")
    near = make_records(300, DIM, seed=4)
    far = [
        Record(f"far-{i}", r.vector + 50, {**r.metadata, "lang": "zz"})
        for i, r in enumerate(make_records(3, DIM, seed=5))
    ]
    with open_store(url, spec) as store:
        store.upsert(near + far)
        query = near[0].vector
        hits = store.search(query, k=5, filter={"lang": "zz"})
        assert [h.id for h in hits] == [i for i, _ in reference_top(far, query, "l2", 3)]


def test_cosine_keeps_the_vector_it_was_given(url):
    """The index holds normalised vectors; get and scan still return the caller's own."""
    records = make_records(5, DIM, seed=6)
    with open_store(url, sample_spec(dim=DIM)) as store:
        store.upsert(records)
        for want, got in zip(records, store.get([r.id for r in records]), strict=True):
            assert np.array_equal(got.vector, want.vector)
        scanned = {r.id: r for batch in store.scan(2) for r in batch}
        assert all(np.array_equal(scanned[r.id].vector, r.vector) for r in records)


def test_a_failed_write_leaves_the_last_commit_intact(url, tmp_path):
    """A real SQLite failure in the middle of a batch, raised by a trigger another connection
    adds: the old rows come back in both tables and the store keeps working."""
    spec = sample_spec(dim=DIM)
    records = make_records(10, DIM, seed=7)
    with open_store(url, spec) as store:
        store.upsert(records)
        saboteur = connect(tmp_path / "vss.db", vec=False)
        saboteur.execute(
            "CREATE TRIGGER refuse BEFORE INSERT ON docs WHEN NEW.id = 'boom' "
            "BEGIN SELECT RAISE(ABORT, 'refused by trigger'); END"
        )
        changed = Record(records[0].id, records[9].vector, records[0].metadata)
        boom = Record("boom", records[1].vector, records[1].metadata)
        with pytest.raises(StoreError, match="refused by trigger"):
            store.upsert([changed, boom])
        assert store.get([records[0].id]) == [records[0]]
        assert store.count() == 10
        assert store.search(records[0].vector, k=1)[0].id == records[0].id
        hits = store.search(records[9].vector, k=10)
        assert sorted(h.id for h in hits) == sorted(r.id for r in records)
        saboteur.execute("DROP TRIGGER refuse")
        saboteur.close()
        store.upsert([changed, boom])
        assert [h.id for h in store.search(records[9].vector, k=2)] in (
            [records[9].id, records[0].id],
            [records[0].id, records[9].id],
        )


# where the extension cannot load

PROBE = textwrap.dedent(
    """
    import json, sys
    from dualvec import open_store
    from dualvec.errors import ExtensionLoadError
    from dualvec.testing import sample_spec
    try:
        open_store("sqlite-vss://" + sys.argv[1], sample_spec())
    except ExtensionLoadError as exc:
        print(json.dumps(str(exc)))
        sys.exit(3)
    """
)


@pytest.mark.skipif(sys.platform != "linux", reason="edits an ELF shared object")
def test_missing_blas_is_explained(tmp_path):
    """Real loader, real failure, nothing uninstalled: a copy of the wheel's package whose vss0
    asks for `libnone.so.3` where it asks for `libblas.so.3`, so dlopen fails exactly as it does
    on a machine without libblas3. A child process imports the copy first."""
    require(VSS_PROBLEM is None, "libblas3")  # the copy must fail on that library alone
    import sqlite_vss

    package = tmp_path / "shadow" / "sqlite_vss"
    shutil.copytree(Path(sqlite_vss.__file__).parent, package, ignore=shutil.ignore_patterns("__pycache__"))
    library = package / "vss0.so"
    original = library.read_bytes()
    if original.count(b"libblas.so.3\x00") != 1:
        pytest.skip("this sqlite-vss build does not link libblas.so.3 by that name")
    library.write_bytes(original.replace(b"libblas.so.3\x00", b"libnone.so.3\x00"))
    child = subprocess.run(
        [sys.executable, "-c", PROBE, str(tmp_path / "vss.db")],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path / "shadow"), *sys.path])},
    )
    assert child.returncode == 3, child.stderr
    message = json.loads(child.stdout)
    assert "cannot load the sqlite-vss SQLite extension" in message
    assert "libnone.so.3" in message
    assert "apt-get install libblas3 liblapack3" in message


def test_missing_package_is_explained(tmp_path, monkeypatch):
    """`None` in sys.modules makes `import sqlite_vss` fail as if the package were absent."""
    monkeypatch.setitem(sys.modules, "sqlite_vss", None)
    with pytest.raises(ExtensionLoadError, match=r"pip install 'dualvec\[vss\]'"):
        open_store(f"sqlite-vss://{tmp_path}/vss.db", sample_spec())


@pytest.mark.parametrize("metric", ["l2", "cosine"])
def test_vectors_that_look_like_a_vss_header_keep_every_dimension(tmp_path, metric):
    # sqlite-vss treats a blob starting with b"v\x01" as its own format and drops two bytes.
    require(vss_load_problem() is None, "libblas3")
    spec = sample_spec(dim=16, metric=metric)
    store = open_store(f"sqlite-vss://{tmp_path}/vss.db", spec)
    records = make_records(30, 16, seed=5)
    head = np.frombuffer(b"v\x01\x80?", "<f4")[0]
    vector = np.full(16, 0.5, dtype=np.float32)
    vector[0] = head
    odd = Record("looks-like-header", vector, records[0].metadata)
    store.upsert([odd, *records])
    assert [h.id for h in store.search(vector, k=1)] == ["looks-like-header"]
    for record in records:
        assert store.search(record.vector, k=1)[0].id == record.id
    store.close()
