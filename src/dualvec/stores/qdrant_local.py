"""Qdrant local mode (`QdrantClient(path=...)`): the store many prototypes start on.

- Ids: Qdrant takes unsigned ints or UUIDs only. Two layouts, chosen on the store URL:
  - default: a new record's point id is the uuid5 of the caller's id; the caller's id itself
    is kept in the payload under `spec.id_source` and is what every answer gives back.
    Points are found through a map caller id -> point id, built by one scroll on open and kept
    by this process's writes: it works alike on collections dualvec created and on ones it
    wraps (whose points carry the user's own ids), where a payload filter would test every
    point in Python. It stays true because the folder lock keeps other processes out and this
    process's stores share it (`qdrant_folder.SharedClient`). Opening refuses a collection
    whose id key is missing or repeated on some point: such points could be neither migrated
    nor verified.
  - ``?id=point``: the point ids are the record ids, for apps that keep no id in the payload.
    `id_type = "int"` reads them as decimal strings and writes ints; `"uuid"` as canonical
    UUID strings. Opening refuses points of the other kind, so every id a read gives back can
    be written again (and migrated) unchanged. No payload key is added and no map is needed.
    Local mode accepts negative int ids, which a Qdrant server refuses: dualvec never writes
    one.
- ``?table=NAME``: the Qdrant collection, when the app named it otherwise than the collection
  (dualvec's own bookkeeping keeps the collection's name).
- Wrapping never rewrites the app's points: opening only reads them, and an upsert keeps what
  dualvec does not manage (payload keys outside the spec, and the other vectors of a
  collection that has several).
- A payload key that is absent (or null) is a missing value: it reads back as missing, and
  `qdrant_filter` makes no condition match it.
- Scores: Cosine and Dot are similarities, turned into distances; Euclid already is one.
- Cosine collections store normalised vectors: get and scan give back the direction only.
- One process only: a process forked after opening the store (gunicorn ``--preload``) is
  refused with `StoreLockedError` on every call; the parent keeps the folder.
"""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from qdrant_client import QdrantClient, models

from dualvec.errors import ConfigError, StoreError, StoreLockedError, ValidationError
from dualvec.filters import Condition
from dualvec.records import Hit, Metadata, Record, Vector
from dualvec.spec import CollectionSpec, FieldType, Metric
from dualvec.stores.base import BaseStore
from dualvec.stores.qdrant_filter import to_qdrant_filter
from dualvec.stores.qdrant_folder import (
    IdSource,
    SharedClient,
    bind_ids,
    bind_spec,
    borrow,
    check_bound_ids,
    check_bound_spec,
    give_back,
)

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
# Local mode keeps each collection in a folder of that name: nothing that could leave the
# storage folder or hide in it (a leading '.'), and no longer than a file name may be.
_COLLECTION_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]{0,254}")
# dualvec's int ids are signed 64-bit (the target's INTEGER PRIMARY KEY); Qdrant's reach 2**64.
_MAX_INT_ID = 2**63 - 1
# What a payload value must be for each field type; bool is excluded from the numeric ones
# (Python's bool is an int).
_PAYLOAD_TYPES: dict[FieldType, tuple[type, ...]] = {
    "str": (str,),
    "int": (int,),
    "float": (float, int),
    "bool": (bool,),
}


def _fits(field_type: FieldType, value: object) -> bool:
    """Whether a payload value is of the field's type (a bool is no number here)."""
    return isinstance(value, bool) == (field_type == "bool") and isinstance(value, _PAYLOAD_TYPES[field_type])


def point_id(record_id: str) -> str:
    """The Qdrant point id dualvec gives a new record (default layout)."""
    return str(uuid.uuid5(_ID_NAMESPACE, record_id))


def collection_option(value: str) -> str:
    """A store URL's `?table=`: refused unless local mode can keep it as a folder of its own."""
    if not _COLLECTION_NAME.fullmatch(value):
        raise ConfigError(
            f"store URL option table={value!r}: a qdrant-local collection name must be 1-255 ASCII "
            "letters, digits, '_', '-' or '.', not starting with '.' (local mode keeps each "
            "collection in a folder of that name)"
        )
    return value


def ids_option(value: str | None) -> IdSource:
    """A store URL's `?id=`: only `point` (the default keeps record ids in the payload)."""
    if value is None:
        return "payload"
    if value != "point":
        raise ConfigError(
            f"store URL option id={value!r}: the only value is 'point' (record ids are the point "
            "ids); leave it out to keep record ids in the payload under id_source"
        )
    return "point"


class QdrantLocalStore(BaseStore):
    """One collection in a Qdrant local-mode folder. Exact (local mode searches by brute force)."""

    backend = "qdrant-local"

    def __init__(
        self,
        path: str | Path,
        spec: CollectionSpec,
        *,
        ids: IdSource = "payload",
        collection: str | None = None,
    ) -> None:
        super().__init__(spec)
        # The Qdrant collection: the app's own name for it, or the collection's.
        self.collection_name = spec.name if collection is None else collection_option(collection)
        self._by_point = ids == "point"
        if self._by_point and spec.id_type == "str":
            raise ConfigError(
                f"collection {spec.name!r}: ?id=point uses the Qdrant point ids, which are unsigned "
                "integers or UUIDs; set the collection's id_type to 'int' or 'uuid'"
            )
        self._fields = [(name, spec.source_of(name), f.type) for name, f in spec.fields.items()]
        field_keys = [source for _, source, _ in self._fields]
        self._keys = field_keys if self._by_point else [spec.id_source, *field_keys]
        self._ids: dict[str, models.ExtendedPointId] = {}
        self._opened_by = os.getpid()
        self._shared: SharedClient | None = self._guard("open", borrow, Path(path))
        self._location = self._shared.folder
        try:
            with self._shared.lock:
                bound = self._guard("open", check_bound_spec, self._shared.folder, spec)
                self._guard("open", check_bound_ids, self._shared.folder, spec, ids, bound)
                self._using, self._keep_vectors = self._guard("open", self._open_collection)
                if self._by_point:
                    self._guard("open", self._check_point_ids)
                else:
                    self._ids = self._guard("open", self._id_map)
                # Last: an open refused for any reason above binds nothing. The ids first: a
                # spec bound without them reads as the default layout.
                if not bound:
                    self._guard("open", bind_ids, self._shared.folder, spec, ids)
                    self._guard("open", bind_spec, self._shared.folder, spec)
        except BaseException:
            self._close()
            raise

    @classmethod
    def from_location(
        cls,
        location: str,
        spec: CollectionSpec,
        id: str | None = None,  # the URL option's name
        table: str | None = None,
    ) -> QdrantLocalStore:
        """`?id=point`: the point ids are the record ids (id_type int or uuid);
        `?table=NAME`: the Qdrant collection's name when it is not the collection's."""
        return cls(location, spec, ids=ids_option(id), collection=table)

    @property
    def _folder(self) -> SharedClient:
        if self._shared is None:
            raise StoreError(f"the qdrant-local store of collection {self.spec.name!r} is closed")
        return self._shared

    @property
    def _where(self) -> str:
        """The Qdrant collection, as messages name it."""
        name = self.collection_name
        same = name == self.spec.name
        return f"qdrant collection {name!r}" + ("" if same else f" (collection {self.spec.name!r})")

    # opening

    def _open_collection(self) -> tuple[str | None, bool]:
        """Create or check the collection; return the vector name to use (None: the unnamed
        vector) and whether points hold other vectors that a write must carry over."""
        spec, shared = self.spec, self._folder
        if shared.client.collection_exists(self.collection_name):
            using, keep = self._check_collection(shared.client)
        else:
            using = None if spec.vector_source == _DEFAULT_VECTOR_SOURCE else spec.vector_source
            params = models.VectorParams(size=spec.dim, distance=_DISTANCES[spec.metric])
            shared.client.create_collection(
                self.collection_name, vectors_config=params if using is None else {using: params}
            )
            keep = False
        return using, keep

    def _check_collection(self, client: QdrantClient) -> tuple[str | None, bool]:
        spec = self.spec
        config = client.get_collection(self.collection_name).config.params
        vectors, sparse = config.vectors, config.sparse_vectors or {}
        if isinstance(vectors, dict):
            if spec.vector_source not in vectors:
                raise ConfigError(
                    f"{self._where} has the named vectors {sorted(vectors)}; "
                    "set the spec's vector_source to the one dualvec should use"
                )
            using: str | None = spec.vector_source
            params = vectors[spec.vector_source]
            keep = len(vectors) > 1 or bool(sparse)
        elif vectors is not None:
            using, params, keep = None, vectors, bool(sparse)
        else:
            raise ConfigError(f"{self._where} has no dense vector")
        expected = _DISTANCES[spec.metric]
        if params.size != spec.dim or params.distance != expected or params.multivector_config:
            raise ConfigError(
                f"{self._where} holds {params.size}-dimensional {params.distance.value} "
                f"vectors, but the spec asks for {spec.dim}-dimensional {spec.metric} ({expected.value})"
            )
        return using, keep

    def _check_point_ids(self) -> None:
        """Refuse a collection whose point ids are not all of the spec's id_type: reads would
        give back ids that no write, get or migration could use."""
        want_int = self.spec.id_type == "int"
        for points in self._scroll(_SCROLL_BATCH, with_payload=False, with_vectors=False):
            for point in points:
                found = point.id
                if want_int and isinstance(found, int) and found <= _MAX_INT_ID:
                    continue
                if not want_int and isinstance(found, str):
                    continue
                if want_int and isinstance(found, int):
                    raise ConfigError(
                        f"{self._where} has point id {found}, beyond {_MAX_INT_ID}: dualvec's int ids "
                        "are signed 64-bit integers (as the target's keys are), so that point could "
                        "be neither read back by id nor migrated"
                    )
                kind = "integer" if isinstance(found, int) else "UUID"
                other = "int" if isinstance(found, int) else "uuid"
                expected = "unsigned integer" if want_int else "UUID"
                raise ConfigError(
                    f"{self._where} has {kind} point ids (e.g. {found!r}), but id_type = "
                    f"{self.spec.id_type!r} expects {expected} point ids; set id_type = {other!r} "
                    "if every point has one"
                )

    def _id_map(self) -> dict[str, models.ExtendedPointId]:
        """The folder's map for this collection, built on the first open in this process."""
        shared, id_key = self._folder, self.spec.id_source
        known = shared.point_ids.get((self.collection_name, id_key))
        if known is not None:
            return known
        ids: dict[str, models.ExtendedPointId] = {}
        for points in self._scroll(_SCROLL_BATCH, with_payload=[id_key], with_vectors=False):
            for point in points:
                caller_id = (point.payload or {}).get(id_key)
                if not isinstance(caller_id, str) or not caller_id:
                    raise ConfigError(
                        f"point {point.id!r} of {self._where} has no string payload {id_key!r}; set "
                        "the spec's id_source to the payload key that holds every point's id, or "
                        "use ?id=point on the store URL if the point ids are the record ids"
                    )
                if caller_id in ids:
                    raise ConfigError(
                        f"payload {id_key!r} is not unique in {self._where}: "
                        f"{caller_id!r} is on points {ids[caller_id]!r} and {point.id!r}; set the "
                        "spec's id_source to a payload key that names one point"
                    )
                ids[caller_id] = point.id
        shared.point_ids[(self.collection_name, id_key)] = ids
        return ids

    # conversions

    def _point_key(self, record_id: str) -> models.ExtendedPointId:
        """The point id of a (validated) record id under ?id=point."""
        return int(record_id) if self.spec.id_type == "int" else record_id

    def _record_id(self, point: models.Record | models.ScoredPoint) -> str:
        if not self._by_point:
            return str((point.payload or {})[self.spec.id_source])
        if isinstance(point.id, int):
            return str(point.id)
        return str(uuid.UUID(str(point.id)))  # canonical, whatever spelling it was written in

    def _vector(self, stored: Any) -> Vector:
        if isinstance(stored, dict):
            stored = stored[self._using or ""]
        return np.asarray(stored, dtype=np.float32)

    def _metadata(self, point: models.Record | models.ScoredPoint) -> Metadata:
        """The declared fields of a point's payload; an absent or null key is a missing value.

        A value of another type is refused, naming the point: written through, it would fail
        the target's checks far from its cause, or compare wrongly in filters."""
        payload = point.payload or {}
        metadata: Metadata = {}
        for name, source, field_type in self._fields:
            value: Any = payload.get(source)
            if value is None:
                continue
            if not _fits(field_type, value):
                raise ConfigError(
                    f"point {point.id!r} of {self._where}: payload {source!r} holds "
                    f"{type(value).__name__} {value!r}, but field {name!r} is declared {field_type}; "
                    "fix the spec's field type or the point"
                )
            # JSON keeps 2.0 as 2 in some writers' hands; the field says float.
            metadata[name] = float(value) if field_type == "float" else value
        return metadata

    def _record(self, point: models.Record) -> Record:
        return Record(self._record_id(point), self._vector(point.vector), self._metadata(point))

    def _distance(self, score: float) -> float:
        if self.spec.metric == "cosine":
            return min(max(1.0 - score, 0.0), 2.0)
        return -score if self.spec.metric == "dot" else score

    def _point(
        self, record: Record, key: models.ExtendedPointId, previous: models.Record | None
    ) -> models.PointStruct:
        # Under ?id=point the id_source key is the app's own, not dualvec's: kept like any other.
        managed = set(self._keys)
        kept = {k: v for k, v in (previous.payload or {}).items() if k not in managed} if previous else {}
        payload = {
            **kept,
            **({} if self._by_point else {self.spec.id_source: record.id}),
            **{source: record.metadata[name] for name, source, _ in self._fields if name in record.metadata},
        }
        vector: Any = record.vector.tolist()
        if self._keep_vectors:
            others = previous.vector if previous is not None and isinstance(previous.vector, dict) else {}
            vector = {**others, self._using or "": vector}
        elif self._using is not None:
            vector = {self._using: vector}
        return models.PointStruct(id=key, vector=vector, payload=payload)

    def _point_keys(self, records: list[Record]) -> list[models.ExtendedPointId]:
        """Each record's point id; under ?id=point, refuses a negative int before any write."""
        if not self._by_point:
            return [self._ids.get(r.id, point_id(r.id)) for r in records]
        keys = [self._point_key(r.id) for r in records]
        for position, key in enumerate(keys):
            if isinstance(key, int) and key < 0:
                raise ValidationError(
                    f"record {position} (id {records[position].id!r}): {self._where} keys points by "
                    "unsigned integers (?id=point, id_type = 'int'); a negative id is refused"
                )
        return keys

    # operations

    def _upsert(self, records: list[Record]) -> None:
        shared = self._folder
        with shared.lock:
            keys = self._point_keys(records)  # under the lock: the id map is shared
            # The points being replaced: their payload keys and vectors dualvec does not manage
            # survive the write. In the default layout only mapped ids can exist.
            wanted = (
                keys
                if self._by_point
                else [k for r, k in zip(records, keys, strict=True) if r.id in self._ids]
            )
            found = (
                shared.client.retrieve(
                    self.collection_name, wanted, with_payload=True, with_vectors=self._keep_vectors
                )
                if wanted
                else []
            )
            by_point = {p.id: p for p in found}
            points = [self._point(r, k, by_point.get(k)) for r, k in zip(records, keys, strict=True)]
            shared.client.upsert(self.collection_name, points=points)
            if not self._by_point:
                self._ids.update((r.id, p.id) for r, p in zip(records, points, strict=True))

    def _delete(self, ids: list[str]) -> None:
        shared = self._folder
        with shared.lock:
            if self._by_point:
                points = [self._point_key(i) for i in ids]
            else:
                points = [self._ids[i] for i in ids if i in self._ids]
            if points:
                shared.client.delete(self.collection_name, points_selector=models.PointIdsList(points=points))
                for record_id in ids:
                    self._ids.pop(record_id, None)

    def _get(self, ids: list[str]) -> list[Record]:
        shared = self._folder
        with shared.lock:
            if self._by_point:
                wanted = [self._point_key(i) for i in ids]
            else:
                wanted = [self._ids[i] for i in ids if i in self._ids]
            points = shared.client.retrieve(
                self.collection_name, wanted, with_payload=self._keys, with_vectors=self._with_vector
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
                self.collection_name,
                query=query.tolist(),
                using=self._using,
                query_filter=to_qdrant_filter(self.spec, conditions),
                limit=k,
                with_payload=self._keys,
            ).points
        return [Hit(self._record_id(p), self._distance(p.score), self._metadata(p)) for p in points]

    def _count(self) -> int:
        shared = self._folder
        with shared.lock:
            return int(shared.client.count(self.collection_name, exact=True).count)

    def _scroll(self, batch_size: int, **options: Any) -> Iterator[list[models.Record]]:
        """Every point once, in id order; the lock is held per page, never across a yield."""
        offset = None
        while True:
            shared = self._folder
            with shared.lock:
                points, offset = shared.client.scroll(
                    self.collection_name, limit=batch_size, offset=offset, **options
                )
            yield points
            if offset is None:
                return

    def _scan(self, batch_size: int) -> Iterator[list[Record]]:
        for points in self._scroll(batch_size, with_payload=self._keys, with_vectors=self._with_vector):
            yield [self._record(p) for p in points]

    def _forget_parent(self, clean: bool) -> None:
        # The parent's client: qdrant_folder disowns it in the child, never closing it.
        self._shared = None

    def _reopen(self) -> None:
        raise StoreLockedError(
            f"qdrant-local folder {self._location} was opened by process {self._opened_by}, which "
            f"this process ({os.getpid()}) was forked from; Qdrant's local mode lets one process "
            "use a folder. Open the store after forking, in one process only (gunicorn: no "
            "--preload and one worker), or move the collection to a store that processes share"
        )

    def _close(self) -> None:
        if self._shared is not None:
            shared, self._shared = self._shared, None
            give_back(shared)
