"""Input checks that run before any store is touched, so a rejected batch writes nothing anywhere.

Every error names the record (by position and id), the field and what was expected.
"""

from __future__ import annotations

import math
import re
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, SupportsFloat, SupportsInt, cast

import numpy as np

from dualvec.errors import ModelMismatchError, ValidationError
from dualvec.records import Metadata, Record, Vector
from dualvec.spec import CollectionSpec, FieldType, IdType

__all__ = [
    "MAX_BATCH",
    "MAX_ID_LENGTH",
    "MAX_K",
    "check_ids",
    "check_k",
    "check_model",
    "check_query_vector",
    "check_records",
    "check_value",
]

MAX_K = 4096  # sqlite-vec's own ceiling for k; every store honours the same one.
MAX_ID_LENGTH = 1024
MAX_BATCH = 100_000

_PY_TYPES: dict[FieldType, tuple[type, ...]] = {
    "str": (str,),
    "int": (int,),
    "float": (float, int),
    "bool": (bool,),
}


def check_model(spec: CollectionSpec, model: str | None) -> None:
    if model is not None and model != spec.model:
        raise ModelMismatchError(
            f"model {model!r} does not match collection {spec.name!r}, which holds embeddings "
            f"of {spec.model!r}; re-embed with {spec.model!r} or open another collection"
        )


def check_value(where: str, field_type: FieldType, value: Any) -> Any:
    """Return `value` as the field's Python type or raise naming `where`."""
    is_bool = isinstance(value, (bool, np.bool_))
    if field_type == "bool":
        if not is_bool:
            raise ValidationError(f"{where}: expected bool, got {type(value).__name__} {value!r}")
        return bool(value)
    if is_bool or not isinstance(value, (*_PY_TYPES[field_type], np.integer, np.floating)):
        raise ValidationError(f"{where}: expected {field_type}, got {type(value).__name__} {value!r}")
    if field_type == "int":
        if isinstance(value, (float, np.floating)):
            raise ValidationError(f"{where}: expected int, got float {value!r}")
        integer = int(cast(SupportsInt, value))
        if not -(2**63) <= integer < 2**63:
            raise ValidationError(f"{where}: int {value!r} does not fit in 64 bits")
        return integer
    if field_type == "float":
        number = float(cast(SupportsFloat, value))
        if not math.isfinite(number):
            raise ValidationError(f"{where}: expected a finite float, got {value!r}")
        return number
    text = cast(str, value)
    if "\x00" in text:
        raise ValidationError(f"{where}: strings may not contain NUL characters")
    return text


# The one spelling of each integer, so "7" and "07" can never name two records.
_DECIMAL = re.compile(r"^(0|-?[1-9][0-9]{0,18})$")


def _check_id(where: str, record_id: Any, id_type: IdType = "str") -> str:
    if not isinstance(record_id, str) or not record_id:
        raise ValidationError(f"{where}: id must be a non-empty str, got {record_id!r}")
    if len(record_id) > MAX_ID_LENGTH:
        raise ValidationError(f"{where}: id is longer than {MAX_ID_LENGTH} characters")
    try:
        record_id.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValidationError(f"{where}: id is not valid Unicode text ({exc.reason})") from exc
    if "\x00" in record_id:
        raise ValidationError(f"{where}: id may not contain NUL characters")
    if id_type == "int" and not (_DECIMAL.match(record_id) and -(2**63) <= int(record_id) < 2**63):
        raise ValidationError(
            f"{where}: id {record_id!r} is not an integer, and this collection's store keys records "
            "by 64-bit integers (id_type = 'int'); pass the id as its decimal string, e.g. '42'"
        )
    if id_type == "uuid" and not _is_canonical_uuid(record_id):
        raise ValidationError(
            f"{where}: id {record_id!r} is not a UUID in canonical form, and this collection's "
            "store keys records by UUIDs (id_type = 'uuid'); pass e.g. "
            "'1b4e28ba-2fa1-11d2-883f-0016d3cca427' (lowercase, with hyphens)"
        )
    return record_id


def _is_canonical_uuid(text: str) -> bool:
    try:
        return str(uuid.UUID(text)) == text
    except ValueError:
        return False


def _check_vector(where: str, spec: CollectionSpec, vector: Any) -> Vector:
    try:
        with np.errstate(over="ignore", invalid="ignore"):
            array = np.asarray(vector, dtype=np.float32)
    except (TypeError, ValueError) as exc:
        raise ValidationError(f"{where}: vector is not a sequence of numbers ({exc})") from exc
    if array.shape != (spec.dim,):
        raise ValidationError(
            f"{where}: vector must have {spec.dim} dimensions for collection {spec.name!r}, "
            f"got shape {array.shape}"
        )
    if not np.isfinite(array).all():
        raise ValidationError(f"{where}: vector holds NaN or infinity (or a value beyond float32's range)")
    if spec.metric == "cosine" and not np.any(array):
        raise ValidationError(f"{where}: a zero vector has no cosine distance; drop or fix it")
    return np.ascontiguousarray(array)


_EXACT_TYPES: dict[FieldType, type] = {"str": str, "int": int, "float": float, "bool": bool}


def _check_metadata(position: int, record_id: str, spec: CollectionSpec, metadata: Any) -> Metadata:
    if not isinstance(metadata, dict):
        raise ValidationError(
            f"{_where(position, record_id)}: metadata must be a dict, got {type(metadata).__name__}"
        )
    if not metadata.keys() <= spec.fields.keys():
        unknown = sorted(set(metadata) - set(spec.fields))
        raise ValidationError(
            f"{_where(position, record_id)}: unknown metadata field(s) {unknown}; declare them in "
            f"the spec's fields (declared: {sorted(spec.fields)})"
        )
    clean: Metadata = {}
    for name, field in spec.fields.items():
        value = metadata.get(name)
        if value is None:
            if not spec.may_be_missing(name):
                raise ValidationError(
                    f"{_where(position, record_id)}: metadata field {name!r} is filterable and must be "
                    f"set (expected {field.type}); declare it optional = true if records may lack it"
                )
            continue
        # The common case (exactly the declared type, in range) skips the detailed checks.
        kind = type(value)
        if kind is _EXACT_TYPES[field.type] and (
            (kind is str and "\x00" not in value)
            or (kind is int and -(2**63) <= value < 2**63)
            or (kind is float and math.isfinite(value))
            or kind is bool
        ):
            clean[name] = value
        else:
            clean[name] = check_value(
                f"{_where(position, record_id)}: metadata field {name!r}", field.type, value
            )
    return clean


def _where(position: int, record_id: object = None) -> str:
    return f"record {position}" if record_id is None else f"record {position} (id {record_id!r})"


def _check_vectors(spec: CollectionSpec, batch: list[Record], ids: list[str]) -> list[Vector]:
    """All vectors at once as one matrix; on any defect, the per-record path names the record."""
    try:
        with np.errstate(over="ignore", invalid="ignore"):
            matrix = np.asarray([r.vector for r in batch], dtype=np.float32)
        sound = matrix.shape == (len(batch), spec.dim) and bool(np.isfinite(matrix).all())
        if sound and spec.metric == "cosine":
            sound = bool(matrix.any(axis=1).all())
    except (TypeError, ValueError):
        sound = False
    if not sound:
        return [
            _check_vector(_where(i, record_id), spec, r.vector)
            for i, (record_id, r) in enumerate(zip(ids, batch, strict=True))
        ]
    return list(matrix)


def check_records(spec: CollectionSpec, records: Iterable[Record]) -> list[Record]:
    """Validate a whole batch and return normalised copies (float32 vectors, typed metadata).

    Records this function already returned for a spec of the same shape pass straight through,
    so a batch the router checked is not checked again by each store."""
    if isinstance(records, Record):
        raise ValidationError("records: pass a list of Record, not a single Record")
    batch = list(records)
    if len(batch) > MAX_BATCH:
        raise ValidationError(f"records: batch of {len(batch)} exceeds {MAX_BATCH}; split it")
    shape = _shape(spec)
    if all(type(r) is _CheckedRecord and r.shape == shape for r in batch) and len(
        {r.id for r in batch}
    ) == len(batch):
        return batch
    ids: list[str] = []
    seen: set[str] = set()
    for position, record in enumerate(batch):
        if not isinstance(record, Record):
            raise ValidationError(f"{_where(position)}: expected Record, got {type(record).__name__}")
        record_id = _check_id(_where(position), record.id, spec.id_type)
        if record_id in seen:
            raise ValidationError(f"{_where(position, record_id)}: duplicate id in batch; send each id once")
        seen.add(record_id)
        ids.append(record_id)
    vectors = _check_vectors(spec, batch, ids)
    return [
        _CheckedRecord(record_id, vector, _check_metadata(position, record_id, spec, record.metadata), shape)
        for position, (record_id, vector, record) in enumerate(zip(ids, vectors, batch, strict=True))
    ]


def _shape(spec: CollectionSpec) -> tuple[object, ...]:
    """What validation depends on: not the names a backend stores things under."""
    return (
        spec.dim,
        spec.metric,
        spec.id_type,
        tuple((n, f.type, f.filterable, f.optional) for n, f in spec.fields.items()),
    )


@dataclass(frozen=True, eq=False)
class _CheckedRecord(Record):
    """A record `check_records` returned, and the spec shape it was checked against."""

    shape: tuple[object, ...] = ()


def check_ids(spec: CollectionSpec, ids: Sequence[str] | Iterable[str]) -> list[str]:
    if isinstance(ids, str):
        raise ValidationError("ids: pass a list of ids, not a single str")
    clean = [_check_id(f"ids[{position}]", i, spec.id_type) for position, i in enumerate(ids)]
    if len(clean) > MAX_BATCH:
        raise ValidationError(f"ids: {len(clean)} ids exceed {MAX_BATCH}; split the call")
    return list(dict.fromkeys(clean))


def check_query_vector(spec: CollectionSpec, vector: Any) -> Vector:
    return _check_vector("query vector", spec, vector)


def check_k(k: Any) -> int:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= MAX_K:
        raise ValidationError(f"k: expected an int from 1 to {MAX_K}, got {k!r}")
    return int(k)
