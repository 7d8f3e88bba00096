"""Qdrant local mode (`QdrantClient(path=...)`): the store many prototypes start on.

- Ids: Qdrant takes unsigned ints or UUIDs only. A new record's point id is the uuid5 of the
  caller's id; the caller's id itself is kept in the payload under `spec.id_source` and is
  what every answer gives back.
- Points are found through a map caller id -> point id, built by one scroll on open and kept
  by this process's writes: it works alike on collections dualvec created and on ones it wraps
  (whose points carry the user's own ids), where a payload filter would test every point in
  Python. It stays true because the folder lock keeps other processes out and this process's
  stores share it (`qdrant_folder.SharedClient`). Opening refuses a collection whose id key is
  missing or repeated on some point: such points could be neither migrated nor verified.
- Upsert keeps what dualvec does not manage: payload keys outside the spec, and the other
  vectors of a collection that has several, survive it.
- Scores: Cosine and Dot are similarities, turned into distances; Euclid already is one.
- Cosine collections store normalised vectors: get and scan give back the direction only.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from qdrant_client import QdrantClient, models

from dualvec.errors import ConfigError, StoreError
from dualvec.filters import Condition
from dualvec.records import Hit, Metadata, Record, Vector
from dualvec.spec import CollectionSpec, Metric
from dualvec.stores.base import BaseStore
from dualvec.stores.qdrant_filter import to_qdrant_filter
from dualvec.stores.qdrant_folder import SharedClient, bind_spec, borrow, check_bound_spec, give_back

__all__ = ["QdrantLocalStore", "point_id"]

# Never change: the point ids of stored records derive from it.
_ID_NAMESPACE = uuid.UUID("5b0e8f4e-2f43-4c8e-9a51-3d0f6c1e7a29")
_DISTANCES: dict[Metric, models.Distance] = {
    "cosine": models.Distance.COSINE,
    "l2": models.Distance.EUCLID,
    "dot": models.Distance.DOT,
}
_DEFAULT_VECTOR_SOURCE = CollectionSpec.model_fields["vector_source"].default
_SCROLL_BATCH = 1024


def point_id(record_id: str) -> str:
    """The Qdrant point id dualvec gives a new record."""
    return str(uuid.uuid5(_ID_NAMESPACE, record_id))


class QdrantLocalStore(BaseStore):
    """One collection in a Qdrant local-mode folder. Exact (local mode searches by brute force)."""

    backend = "qdrant-local"

    def __init__(self, path: str | Path, spec: CollectionSpec) -> None:
        super().__init__(spec)
        self._fields = [(name, spec.source_of(name), f.type) for name, f in spec.fields.items()]
        self._keys = [spec.id_source, *(source for _, source, _ in self._fields)]
        self._shared: SharedClient | None = self._guard("open", borrow, Path(path))
        try:
            with self._shared.lock:
                bound = self._guard("open", check_bound_spec, self._shared.folder, spec)
                self._using, self._keep_vectors = self._guard("open", self._open_collection)
                self._ids = self._guard("open", self._id_map)
                # Last: an open refused for any reason above binds nothing.
                if not bound:
                    self._guard("open", bind_spec, self._shared.folder, spec)
        except BaseException:
            self._close()
            raise

    @classmethod
    def from_location(cls, location: str, spec: CollectionSpec) -> QdrantLocalStore:
        return cls(location, spec)

    @property
    def _folder(self) -> SharedClient:
        if self._shared is None:
            raise StoreError(f"the qdrant-local store of collection {self.spec.name!r} is closed")
        return self._shared

    # opening

    def _open_collection(self) -> tuple[str | None, bool]:
        """Create or check the collection; return the vector name to use (None: the unnamed
        vector) and whether points hold other vectors that a write must carry over."""
        spec, shared = self.spec, self._folder
        if shared.client.collection_exists(spec.name):
            using, keep = self._check_collection(shared.client)
        else:
            using = None if spec.vector_source == _DEFAULT_VECTOR_SOURCE else spec.vector_source
            params = models.VectorParams(size=spec.dim, distance=_DISTANCES[spec.metric])
            shared.client.create_collection(
                spec.name, vectors_config=params if using is None else {using: params}
            )
            keep = False
        return using, keep

    def _check_collection(self, client: QdrantClient) -> tuple[str | None, bool]:
        spec = self.spec
        config = client.get_collection(spec.name).config.params
        vectors, sparse = config.vectors, config.sparse_vectors or {}
        if isinstance(vectors, dict):
            if spec.vector_source not in vectors:
                raise ConfigError(
                    f"qdrant collection {spec.name!r} has the named vectors {sorted(vectors)}; "
                    "set the spec's vector_source to the one dualvec should use"
                )
            using: str | None = spec.vector_source
            params = vectors[spec.vector_source]
            keep = len(vectors) > 1 or bool(sparse)
        elif vectors is not None:
            using, params, keep = None, vectors, bool(sparse)
        else:
            raise ConfigError(f"qdrant collection {spec.name!r} has no dense vector")
        expected = _DISTANCES[spec.metric]
        if params.size != spec.dim or params.distance != expected or params.multivector_config:
            raise ConfigError(
                f"qdrant collection {spec.name!r} holds {params.size}-dimensional {params.distance.value} "
                f"vectors, but the spec asks for {spec.dim}-dimensional {spec.metric} ({expected.value})"
            )
        return using, keep

    def _id_map(self) -> dict[str, models.ExtendedPointId]:
        """The folder's map for this collection, built on the first open in this process."""
        shared, id_key = self._folder, self.spec.id_source
        known = shared.point_ids.get(self.spec.name)
        if known is not None:
            return known
        ids: dict[str, models.ExtendedPointId] = {}
        for points in self._scroll(_SCROLL_BATCH, with_payload=[id_key], with_vectors=False):
            for point in points:
                caller_id = (point.payload or {}).get(id_key)
                if not isinstance(caller_id, str) or not caller_id:
                    raise ConfigError(
                        f"point {point.id!r} of qdrant collection {self.spec.name!r} has no string "
                        f"payload {id_key!r}; set the spec's id_source to the payload key that holds "
                        "every point's id"
                    )
                if caller_id in ids:
                    raise ConfigError(
                        f"payload {id_key!r} is not unique in qdrant collection {self.spec.name!r}: "
                        f"{caller_id!r} is on points {ids[caller_id]!r} and {point.id!r}; set the "
                        "spec's id_source to a payload key that names one point"
                    )
                ids[caller_id] = point.id
        shared.point_ids[self.spec.name] = ids
        return ids

    # conversions

    def _vector(self, stored: Any) -> Vector:
        if isinstance(stored, dict):
            stored = stored[self._using or ""]
        return np.asarray(stored, dtype=np.float32)

    def _metadata(self, payload: dict[str, Any]) -> Metadata:
        metadata: Metadata = {}
        for name, source, field_type in self._fields:
            value = payload.get(source)
            if value is not None:
                # JSON keeps 2.0 as 2 in some writers' hands; the field says float.
                metadata[name] = float(value) if field_type == "float" else value
        return metadata

    def _record(self, point: models.Record) -> Record:
        payload = point.payload or {}
        return Record(payload[self.spec.id_source], self._vector(point.vector), self._metadata(payload))

    def _distance(self, score: float) -> float:
        if self.spec.metric == "cosine":
            return min(max(1.0 - score, 0.0), 2.0)
        return -score if self.spec.metric == "dot" else score

    def _point(self, record: Record, previous: models.Record | None) -> models.PointStruct:
        managed = set(self._keys)
        kept = {k: v for k, v in (previous.payload or {}).items() if k not in managed} if previous else {}
        payload = {
            **kept,
            self.spec.id_source: record.id,
            **{source: record.metadata[name] for name, source, _ in self._fields if name in record.metadata},
        }
        vector: Any = record.vector.tolist()
        if self._keep_vectors:
            others = previous.vector if previous is not None and isinstance(previous.vector, dict) else {}
            vector = {**others, self._using or "": vector}
        elif self._using is not None:
            vector = {self._using: vector}
        return models.PointStruct(
            id=self._ids.get(record.id, point_id(record.id)), vector=vector, payload=payload
        )

    # operations

    def _upsert(self, records: list[Record]) -> None:
        shared = self._folder
        with shared.lock:
            existing = {r.id: self._ids[r.id] for r in records if r.id in self._ids}
            found = (
                shared.client.retrieve(
                    self.spec.name,
                    list(existing.values()),
                    with_payload=True,
                    with_vectors=self._keep_vectors,
                )
                if existing
                else []
            )
            by_point = {p.id: p for p in found}
            points = [
                self._point(r, by_point.get(existing[r.id]) if r.id in existing else None) for r in records
            ]
            shared.client.upsert(self.spec.name, points=points)
            self._ids.update((r.id, p.id) for r, p in zip(records, points, strict=True))

    def _delete(self, ids: list[str]) -> None:
        shared = self._folder
        with shared.lock:
            points = [self._ids[i] for i in ids if i in self._ids]
            if points:
                shared.client.delete(self.spec.name, points_selector=models.PointIdsList(points=points))
                for record_id in ids:
                    self._ids.pop(record_id, None)

    def _get(self, ids: list[str]) -> list[Record]:
        shared = self._folder
        with shared.lock:
            wanted = [self._ids[i] for i in ids if i in self._ids]
            points = shared.client.retrieve(
                self.spec.name, wanted, with_payload=self._keys, with_vectors=self._with_vector
            )
        by_id = {p.id: p for p in points}
        return [self._record(by_id[p]) for p in wanted if p in by_id]

    @property
    def _with_vector(self) -> bool | list[str]:
        return True if self._using is None else [self._using]

    def _search(self, query: Vector, k: int, conditions: list[Condition]) -> list[Hit]:
        shared = self._folder
        with shared.lock:
            points = shared.client.query_points(
                self.spec.name,
                query=query.tolist(),
                using=self._using,
                query_filter=to_qdrant_filter(self.spec, conditions),
                limit=k,
                with_payload=self._keys,
            ).points
        return [
            Hit(
                (point.payload or {})[self.spec.id_source],
                self._distance(point.score),
                self._metadata(point.payload or {}),
            )
            for point in points
        ]

    def _count(self) -> int:
        shared = self._folder
        with shared.lock:
            return int(shared.client.count(self.spec.name, exact=True).count)

    def _scroll(self, batch_size: int, **options: Any) -> Iterator[list[models.Record]]:
        """Every point once, in id order; the lock is held per page, never across a yield."""
        offset = None
        while True:
            shared = self._folder
            with shared.lock:
                points, offset = shared.client.scroll(
                    self.spec.name, limit=batch_size, offset=offset, **options
                )
            yield points
            if offset is None:
                return

    def _scan(self, batch_size: int) -> Iterator[list[Record]]:
        for points in self._scroll(batch_size, with_payload=self._keys, with_vectors=self._with_vector):
            yield [self._record(p) for p in points]

    def _close(self) -> None:
        if self._shared is not None:
            shared, self._shared = self._shared, None
            give_back(shared)
