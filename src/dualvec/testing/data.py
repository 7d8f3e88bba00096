"""Deterministic sample collections for tests, benchmarks and the demo."""

from __future__ import annotations

import numpy as np

from dualvec.records import Record
from dualvec.spec import CollectionSpec, FieldSpec, Metric

__all__ = ["LANGS", "SAMPLE_FIELDS", "make_records", "sample_spec"]

LANGS = ("en", "fr", "de", "es")
SAMPLE_FIELDS = {
    "lang": FieldSpec(type="str"),
    "year": FieldSpec(type="int"),
    "score": FieldSpec(type="float"),
    "public": FieldSpec(type="bool"),
    "title": FieldSpec(type="str", filterable=False),
}


def sample_spec(
    name: str = "docs", dim: int = 16, metric: Metric = "cosine", model: str = "test-embedder"
) -> CollectionSpec:
    return CollectionSpec(name=name, dim=dim, metric=metric, model=model, fields=SAMPLE_FIELDS)


def make_records(n: int, dim: int, seed: int = 0, prefix: str = "doc-") -> list[Record]:
    """`n` records with random unit-free vectors and metadata covering every field type."""
    rng = np.random.default_rng(seed)
    vectors = rng.standard_normal((n, dim)).astype(np.float32)
    return [
        Record(
            f"{prefix}{i}",
            vectors[i],
            {
                "lang": LANGS[i % len(LANGS)],
                "year": 2000 + int(rng.integers(0, 25)),
                "score": float(rng.random()),
                "public": bool(i % 3 == 0),
                "title": f"title {i}",
            },
        )
        for i in range(n)
    ]
