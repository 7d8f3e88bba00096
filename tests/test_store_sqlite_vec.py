from __future__ import annotations

import pytest

from dualvec import open_store
from dualvec.testing.conformance import PersistentStoreConformance


class TestSqliteVecStore(PersistentStoreConformance):
    metrics = frozenset({"cosine", "l2"})

    @pytest.fixture
    def open_collection(self, tmp_path):
        return lambda spec: open_store(f"sqlite-vec://{tmp_path}/vec.db", spec)
