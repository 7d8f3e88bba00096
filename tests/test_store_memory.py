from __future__ import annotations

import pytest

from dualvec import MemoryStore, open_store
from dualvec.testing.conformance import StoreConformance


class TestMemoryStore(StoreConformance):
    @pytest.fixture
    def open_collection(self):
        return lambda spec: open_store("memory://", spec)


def test_memory_store_is_public_api():
    from dualvec.testing import sample_spec

    assert isinstance(open_store("memory://", sample_spec()), MemoryStore)
