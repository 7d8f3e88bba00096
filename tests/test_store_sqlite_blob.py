from __future__ import annotations

import pytest

from dualvec import open_store
from dualvec.testing.conformance import PersistentStoreConformance


class TestSqliteBlobStore(PersistentStoreConformance):
    @pytest.fixture
    def open_collection(self, tmp_path):
        return lambda spec: open_store(f"sqlite-blob://{tmp_path}/app.db", spec)
