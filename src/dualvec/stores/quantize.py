"""The coarse copy of a sqlite-vec collection's vectors: what is kept, how it is computed.

A quantized collection answers a search in two steps: vec0 scans a small copy of every vector
(`bit` signs, `int8` codes, or the first `matryoshka_dim` floats) for `k * oversample`
candidates, with the metadata filter applied during that scan, and the candidates are then
ranked by their exact float distance. Distances stay exact; only recall is approximate.

The layout (`quantize`, `matryoshka_dim`) is part of the stored data: it is recorded in
`dualvec_vec_index` when the collection is created and a store opened with another layout is
refused (or rebuilt on request). `oversample` only tunes each search and may change freely.

Coarse vectors are computed here in NumPy, one batch at a time, and bound with `vec_bit(?)`,
`vec_int8(?)` or as float32 blobs, so inserts, rebuilds and queries share one definition.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, cast

import numpy as np
import numpy.typing as npt

from dualvec.errors import ConfigError
from dualvec.spec import CollectionSpec, Metric

__all__ = [
    "DEFAULT_OVERSAMPLE",
    "INDEX_TABLE",
    "MAX_CANDIDATES",
    "QUANTIZE",
    "Coarse",
    "IndexOptions",
    "Quantize",
    "index_ddl",
    "stored_layout",
]

Quantize = Literal["none", "bit", "int8"]
QUANTIZE: tuple[Quantize, ...] = ("none", "bit", "int8")
# The README's example and the recall test's setting: recall@10 ≥ 0.9 on clustered embeddings.
DEFAULT_OVERSAMPLE = 8
# vec0's ceiling for k in one KNN query.
MAX_CANDIDATES = 4096
INDEX_TABLE = "dualvec_vec_index"
# An int8 code spans -127..127 (symmetric, so a sign flip maps a code onto a code).
_INT8_MAX = 127.0

Matrix = npt.NDArray[np.float32]


def _integer(option: str, value: str | int | None, low: int, high: int, why: str = "") -> int | None:
    if value is None:
        return None
    text = str(value).strip()
    if not text.isdigit() or not low <= int(text) <= high:
        raise ConfigError(
            f"store URL option {option}={value!r}: expected an integer from {low} to {high}{why}"
        )
    return int(text)


@dataclass(frozen=True)
class IndexOptions:
    """How a sqlite-vec collection is searched: exact (the default) or in two steps."""

    quantize: Quantize = "none"
    oversample: int = DEFAULT_OVERSAMPLE
    matryoshka_dim: int | None = None

    @property
    def exact(self) -> bool:
        """Whether vec0 scans the float vectors themselves (one step, exact KNN)."""
        return self.quantize == "none" and self.matryoshka_dim is None

    @property
    def layout(self) -> tuple[Quantize, int | None]:
        """What the stored data depends on; `oversample` is a search setting, not layout."""
        return self.quantize, self.matryoshka_dim

    def candidates(self, k: int) -> int:
        """How many candidates the coarse scan returns for a top-`k` search."""
        return min(MAX_CANDIDATES, max(k, k * self.oversample))

    def describe(self) -> str:
        return describe_layout(self.layout)

    @classmethod
    def parse(
        cls,
        spec: CollectionSpec,
        quantize: str | None = None,
        oversample: str | int | None = None,
        matryoshka_dim: str | int | None = None,
    ) -> IndexOptions:
        """Options as they come from a store URL (strings), checked against the collection."""
        if quantize is not None and quantize not in QUANTIZE:
            raise ConfigError(f"store URL option quantize={quantize!r}: expected one of {list(QUANTIZE)}")
        mode: Quantize = quantize or "none"
        dim = _integer(
            "matryoshka_dim",
            matryoshka_dim,
            1,
            spec.dim - 1,
            f" (a prefix of the collection's {spec.dim} dimensions)",
        )
        over = _integer("oversample", oversample, 1, MAX_CANDIDATES)
        if over is not None and mode == "none" and dim is None:
            raise ConfigError(
                f"store URL option oversample={oversample!r} has no effect on an exact collection; "
                "add quantize=bit or quantize=int8 (or matryoshka_dim=N), or drop oversample"
            )
        return cls(mode, DEFAULT_OVERSAMPLE if over is None else over, dim)


def describe_layout(layout: tuple[Quantize, int | None]) -> str:
    quantize, dim = layout
    return f"quantize={quantize}" + ("" if dim is None else f", matryoshka_dim={dim}")


def index_ddl(collection: str, options: IndexOptions) -> list[str]:
    """Statements that record a new collection's layout, run in the transaction that creates it
    (`bind_spec` takes plain statements: the values are a checked name, an enum and an int)."""
    quantize, dim = options.layout
    return [
        f"CREATE TABLE IF NOT EXISTS {INDEX_TABLE} (name TEXT PRIMARY KEY, quantize TEXT NOT NULL, "
        "matryoshka_dim INTEGER, int8_scale REAL)",
        f"INSERT INTO {INDEX_TABLE} (name, quantize, matryoshka_dim) "
        f"VALUES ('{collection}', '{quantize}', {'NULL' if dim is None else int(dim)})",
    ]


def stored_layout(conn: Any, collection: str) -> tuple[Quantize, int | None]:
    """The layout a collection was built with. A collection created before layouts were
    recorded has no row: it is exact."""
    exists = conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (INDEX_TABLE,))
    if exists.fetchone() is None:
        return "none", None
    row = conn.execute(
        f"SELECT quantize, matryoshka_dim FROM {INDEX_TABLE} WHERE name = ?", (collection,)
    ).fetchone()
    if row is None:
        return "none", None
    return cast(Quantize, row[0]), None if row[1] is None else int(row[1])


class Coarse:
    """The coarse copy of one collection: its vec0 column type and how vectors map onto it.

    - `bit`: one sign bit per dimension (vec0 `bit[N]`, hamming). For cosine this is the sign of
      the normalised vector, which is the sign of the vector: normalising changes nothing.
      N is padded to a multiple of 8 with bits that are 0 in every vector, so they never count.
    - `int8`: cosine collections store the normalised vector * 127; l2 collections one scale for
      the whole collection (`int8_scale`: the largest |value| of the first batch written maps to
      127, larger values are clipped, which costs recall, never correctness). Scanned with l2.
    - no quantization, `matryoshka_dim` only: the first N floats, scanned with l2.

    With `matryoshka_dim`, only the first N dimensions are kept, re-normalised for cosine. Cosine
    collections keep unit vectors in the coarse copy and scan them with l2, which ranks unit
    vectors as cosine does and never gives the NULL distance vec0's cosine gives a zero vector
    (the first N dimensions of a vector may all be 0).
    """

    def __init__(self, options: IndexOptions, metric: Metric, dim: int) -> None:
        self.quantize = options.quantize
        self.metric = metric
        self.dims = options.matryoshka_dim or dim
        if self.quantize == "bit":
            self.column_type = f"bit[{-(-self.dims // 8) * 8}]"
            self.param = "vec_bit(?)"
        elif self.quantize == "int8":
            self.column_type = f"int8[{self.dims}] distance_metric=l2"
            self.param = "vec_int8(?)"
        else:
            self.column_type = f"float[{self.dims}] distance_metric=l2"
            self.param = "?"

    @property
    def needs_scale(self) -> bool:
        """Whether codes depend on a collection-wide scale (int8 of unnormalised vectors)."""
        return self.quantize == "int8" and self.metric != "cosine"

    def scale_for(self, matrix: Matrix) -> float:
        """The int8 step that maps the largest |value| of `matrix`'s coarse part to 127."""
        peak = float(np.max(np.abs(matrix[:, : self.dims]))) if matrix.size else 0.0
        return peak / _INT8_MAX if peak > 0 else 1.0

    def encode(self, matrix: Matrix, scale: float | None = None) -> list[bytes]:
        """The coarse blob of each row of `matrix` (float32, n x dim)."""
        part: npt.NDArray[Any] = matrix[:, : self.dims]
        if self.quantize == "bit":
            bits = np.packbits(part > 0, axis=1, bitorder="little")
            return [row.tobytes() for row in bits]
        if self.metric == "cosine":
            norms = np.linalg.norm(part, axis=1, keepdims=True)
            part = part / np.where(norms > 0, norms, 1.0)
        if self.quantize == "int8":
            step = 1.0 / _INT8_MAX if self.metric == "cosine" else (scale or 1.0)
            codes = np.clip(np.rint(part / step), -_INT8_MAX, _INT8_MAX).astype(np.int8)
            return [row.tobytes() for row in codes]
        return [row.tobytes() for row in np.ascontiguousarray(part, dtype=np.float32)]
