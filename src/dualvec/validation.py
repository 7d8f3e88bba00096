"""Input checks that run before any store is touched, so a rejected batch writes nothing anywhere.

Every error names the record (by position and id), the field and what was expected.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any, SupportsFloat, SupportsInt, cast

import numpy as np

from dualvec.errors import ModelMismatchError, ValidationError
from dualvec.records import Metadata, Record, Vector
from dualvec.spec import CollectionSpec, FieldType

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


def _check_id(where: str, record_id: Any) -> str:
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
    return record_id


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


def _check_metadata(where: str, spec: CollectionSpec, metadata: Any) -> Metadata:
    if not isinstance(metadata, dict):
        raise ValidationError(f"{where}: metadata must be a dict, got {type(metadata).__name__}")
    unknown = sorted(set(metadata) - set(spec.fields))
    if unknown:
        raise ValidationError(
            f"{where}: unknown metadata field(s) {unknown}; declare them in the spec's fields "
            f"(declared: {sorted(spec.fields)})"
        )
    clean: Metadata = {}
    for name, field in spec.fields.items():
        value = metadata.get(name)
        if value is None:
            if field.filterable:
                raise ValidationError(
                    f"{where}: metadata field {name!r} is filterable and must be set (expected {field.type})"
                )
            continue
        clean[name] = check_value(f"{where}: metadata field {name!r}", field.type, value)
    return clean


def check_records(spec: CollectionSpec, records: Iterable[Record]) -> list[Record]:
    """Validate a whole batch and return normalised copies (float32 vectors, typed metadata)."""
    if isinstance(records, Record):
        raise ValidationError("records: pass a list of Record, not a single Record")
    batch = list(records)
    if len(batch) > MAX_BATCH:
        raise ValidationError(f"records: batch of {len(batch)} exceeds {MAX_BATCH}; split it")
    seen: set[str] = set()
    clean: list[Record] = []
    for position, record in enumerate(batch):
        where = f"record {position}"
        if not isinstance(record, Record):
            raise ValidationError(f"{where}: expected Record, got {type(record).__name__}")
        record_id = _check_id(where, record.id)
        where = f"record {position} (id {record_id!r})"
        if record_id in seen:
            raise ValidationError(f"{where}: duplicate id in batch; send each id once")
        seen.add(record_id)
        clean.append(
            Record(
                record_id,
                _check_vector(where, spec, record.vector),
                _check_metadata(where, spec, record.metadata),
            )
        )
    return clean


def check_ids(ids: Sequence[str] | Iterable[str]) -> list[str]:
    if isinstance(ids, str):
        raise ValidationError("ids: pass a list of ids, not a single str")
    clean = [_check_id(f"ids[{position}]", i) for position, i in enumerate(ids)]
    if len(clean) > MAX_BATCH:
        raise ValidationError(f"ids: {len(clean)} ids exceed {MAX_BATCH}; split the call")
    return list(dict.fromkeys(clean))


def check_query_vector(spec: CollectionSpec, vector: Any) -> Vector:
    return _check_vector("query vector", spec, vector)


def check_k(k: Any) -> int:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= MAX_K:
        raise ValidationError(f"k: expected an int from 1 to {MAX_K}, got {k!r}")
    return int(k)
