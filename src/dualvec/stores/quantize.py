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
    "CoarseSample",
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
# Codes kept in memory per collection to bound each coarse scan (see `CoarseSample`).
SAMPLE_SIZE = 4096
# How many rows each bound should let through, as multiples of the candidates wanted, tried
# in turn. Too many costs a pass over a chunk per row kept in it; too few costs another scan.
# At 1M x 384 bits (4096-code sample): margin 4 took 55 ms with 1 search in 20 scanning
# again, margin 8 70 ms with none; the wider second bound makes a miss cost one more
# bounded scan rather than an unbounded one (5x slower at oversample 16).
_BOUND_MARGINS = (4, 32)
# Set bits of each byte value, where NumPy (1.x) has no bitwise_count.
_POPCOUNT = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint16)

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

    def codes(self, matrix: Matrix, scale: float | None = None) -> npt.NDArray[Any]:
        """The coarse code of each row of `matrix` (float32, n x dim), one row each: uint8
        (bit), int8 or float32, as vec0 stores them."""
        part: npt.NDArray[Any] = matrix[:, : self.dims]
        if self.quantize == "bit":
            return np.packbits(part > 0, axis=1, bitorder="little")
        if self.metric == "cosine":
            norms = np.linalg.norm(part, axis=1, keepdims=True)
            part = part / np.where(norms > 0, norms, 1.0)
        if self.quantize == "int8":
            step = 1.0 / _INT8_MAX if self.metric == "cosine" else (scale or 1.0)
            return np.clip(np.rint(part / step), -_INT8_MAX, _INT8_MAX).astype(np.int8)
        return np.ascontiguousarray(part, dtype=np.float32)

    def distances(self, codes: npt.NDArray[Any], code: npt.NDArray[Any]) -> npt.NDArray[np.float32]:
        """vec0's coarse distance from `code` to each row of `codes`: hamming for bits, l2 for
        int8 and float (vec0 returns the square root too)."""
        if self.quantize == "bit":
            xor = np.bitwise_xor(codes, code)
            count = getattr(np, "bitwise_count", None)
            if count is not None and xor.shape[1] % 8 == 0:
                differing: npt.NDArray[Any] = count(xor.view(np.uint64)).sum(axis=1)
            else:
                differing = _POPCOUNT[xor].sum(axis=1)
            return differing.astype(np.float32)
        diff = codes.astype(np.float32) - code.astype(np.float32)
        squared: npt.NDArray[np.float32] = np.einsum("ij,ij->i", diff, diff)
        return np.sqrt(squared)

    def encode(self, matrix: Matrix, scale: float | None = None) -> list[bytes]:
        """The coarse blob of each row of `matrix` (float32, n x dim)."""
        return [row.tobytes() for row in self.codes(matrix, scale)]


class CoarseSample:
    """Coarse codes of a few thousand rows drawn at random, to bound one coarse scan.

    vec0 picks a chunk's top k with k passes over the chunk, so a scan for k * oversample
    candidates costs about oversample times a scan for k (at 1M x 384 bits, 160 candidates
    took 348 ms, 1 took 51). A distance bound (`AND distance <= ?`) drops the rows beyond it
    before that selection: with a bound that lets a few hundred rows through, a chunk costs
    a pass or two. The bound is the distance below which the sample says about
    `_BOUND_MARGINS` times the wanted candidates lie. It only ever narrows which rows vec0
    looks at: the caller checks that it got every candidate it asked for, and scans again
    with the next bound, then unbounded, when it did not, so results never depend on the
    estimate.
    """

    def __init__(self, coarse: Coarse, codes: npt.NDArray[Any], total: int) -> None:
        self.coarse = coarse
        self.codes = codes
        self.total = total

    def bounds(self, code: npt.NDArray[Any], wanted: int) -> list[float]:
        """Distance bounds to try in turn for a scan wanting `wanted` candidates, tightest
        first; none when the sample is empty or a bound would let most rows through anyway."""
        drawn = len(self.codes)
        ranks: list[int] = []
        for margin in _BOUND_MARGINS:
            share = margin * wanted / max(self.total, 1)
            if drawn and share < 0.5:
                ranks.append(min(drawn, int(np.ceil(share * drawn))) - 1)
        if not ranks:
            return []
        ordered = np.partition(self.coarse.distances(self.codes, code), ranks)
        return sorted({float(ordered[rank]) for rank in ranks})
