"""The conformance suite over quantized sqlite-vec stores: bit and int8, cosine and l2.

The suite's collections have 16 dimensions: 16 sign bits tell 300 random vectors apart far
worse than 384 bits tell real embeddings apart, so the bit stores run it at oversample 24 to
meet its recall tolerance (9 of 10). What oversample 8 achieves on embedding-like data is
tested in test_quantized_search.py and measured by benchmarks/quantized.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import ClassVar

import pytest

from dualvec import open_store
from dualvec.protocol import VectorStore
from dualvec.spec import Metric
from dualvec.testing.conformance import DIM, OpenCollection, PersistentStoreConformance
from dualvec.testing.data import sample_spec


class _Quantized(PersistentStoreConformance):
    metrics = frozenset({"cosine", "l2"})
    options: ClassVar[str]
    # The metric of the suite's shared `store` fixture (the suite itself picks cosine).
    store_metric: ClassVar[Metric]

    @pytest.fixture
    def open_collection(self, tmp_path):
        return lambda spec: open_store(f"sqlite-vec://{tmp_path}/vec.db?{self.options}", spec)

    @pytest.fixture
    def store(self, open_collection: OpenCollection) -> Iterator[VectorStore]:
        store = open_collection(sample_spec(dim=DIM, metric=self.store_metric))
        assert store.exact is False
        yield store
        store.close()


class TestBitCosine(_Quantized):
    options = "quantize=bit&oversample=24"
    store_metric = "cosine"


class TestBitL2(_Quantized):
    options = "quantize=bit&oversample=24"
    store_metric = "l2"


class TestInt8Cosine(_Quantized):
    options = "quantize=int8"
    store_metric = "cosine"


class TestInt8L2(_Quantized):
    options = "quantize=int8"
    store_metric = "l2"
