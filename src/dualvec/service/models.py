"""The data API's JSON shapes, as pydantic models: FastAPI parses requests with them and builds
the OpenAPI schema at /openapi.json from them.

Requests are strict and closed: a string is not a number, a float is not an int, and an
unknown key is refused by name (a typo such as `"vectr"` must fail loudly, not be ignored).
What depends on the collection (dimension, metadata fields and their types, filter fields and
operators, id type, model) is checked by the library, exactly as for Python callers.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

from dualvec.service.vectors import VectorFormat
from dualvec.spec import FieldType, IdType, Metric
from dualvec.validation import MAX_ID_LENGTH, MAX_K

__all__ = [
    "CollectionInfo",
    "CollectionsResponse",
    "CountResponse",
    "DeleteResponse",
    "ErrorDetail",
    "ErrorResponse",
    "ExportResponse",
    "FieldInfo",
    "GetRequest",
    "HitOut",
    "IdsRequest",
    "RecordIn",
    "RecordOut",
    "RecordsResponse",
    "SearchRequest",
    "SearchResponse",
    "UpsertRequest",
    "UpsertResponse",
]

FiniteFloat = Annotated[float, Field(allow_inf_nan=False)]
RecordId = Annotated[str, Field(min_length=1, max_length=MAX_ID_LENGTH)]

_VECTOR = "The vector as JSON numbers (float32 range). Give this or `vector_b64`."
_VECTOR_B64 = (
    "The vector as base64 (standard alphabet, padded) of little-endian float32, 4 bytes per dimension. "
    "Give this or `vector`."
)
_METADATA = (
    "Metadata by declared field name (see GET /collections): str, int, float or bool values; "
    "a missing or null value leaves an optional field unset."
)
_MODEL = "The embedding model the vectors come from; refused (409) unless it is the collection's."
_ROUTING_KEY = (
    "Routes this read like the library's routing key (a tenant, user or request id): the same "
    "key is served by the same store while read_percent stays put. Absent: a random draw per read."
)
_VECTOR_FORMAT = (
    "How answers carry vectors: `numbers` (JSON numbers) or `b64` (base64 of little-endian float32)."
)


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class RecordIn(_Request):
    id: RecordId
    vector: list[FiniteFloat] | None = Field(default=None, description=_VECTOR)
    vector_b64: str | None = Field(default=None, description=_VECTOR_B64)
    metadata: dict[str, Any] = Field(default_factory=dict, description=_METADATA)


class UpsertRequest(_Request):
    records: list[RecordIn] = Field(
        min_length=1, description="Records to insert or replace whole, by id; each id at most once."
    )
    model: str | None = Field(default=None, description=_MODEL)


class SearchRequest(_Request):
    vector: list[FiniteFloat] | None = Field(default=None, description=_VECTOR)
    vector_b64: str | None = Field(default=None, description=_VECTOR_B64)
    k: int = Field(default=10, ge=1, le=MAX_K, description="How many hits, at most.")
    filter: dict[str, Any] | None = Field(
        default=None,
        description=(
            'Metadata filter, fields ANDed: `{"lang": "en", "year": {"$gte": 2020}, "tag": {"$in": '
            '["a", "b"]}}`; operators $eq $ne $gt $gte $lt $lte $in $nin.'
        ),
    )
    routing_key: str | None = Field(default=None, description=_ROUTING_KEY)
    model: str | None = Field(default=None, description=_MODEL)


class IdsRequest(_Request):
    ids: list[RecordId] = Field(min_length=1, description="Record ids; repeats count once.")


class GetRequest(IdsRequest):
    routing_key: str | None = Field(default=None, description=_ROUTING_KEY)
    vector_format: VectorFormat = Field(default="numbers", description=_VECTOR_FORMAT)


class FieldInfo(BaseModel):
    type: FieldType
    filterable: bool
    optional: bool


class CollectionInfo(BaseModel):
    name: str
    dim: int
    metric: Metric
    model: str
    id_type: IdType = Field(description="How the store keys records; ids always cross the API as strings.")
    fields: dict[str, FieldInfo]


class CollectionsResponse(BaseModel):
    collections: dict[str, CollectionInfo]


class UpsertResponse(BaseModel):
    upserted: int


class HitOut(BaseModel):
    id: str
    distance: float = Field(
        description="In the collection's metric, lower is closer: cosine distance in [0, 2], L2 "
        "(not squared), or the negative inner product; the same whichever store answered."
    )
    metadata: dict[str, Any]


class SearchResponse(BaseModel):
    hits: list[HitOut]


class RecordOut(BaseModel):
    """A stored record; the vector comes in the form `vector_format` asked for."""

    id: str
    vector: list[float] | None = Field(default=None, description="With vector_format=numbers.")
    vector_b64: str | None = Field(default=None, description="With vector_format=b64.")
    metadata: dict[str, Any]


class RecordsResponse(BaseModel):
    records: list[RecordOut] = Field(
        description="The records found, in the order asked; missing ids are left out."
    )


class ExportResponse(BaseModel):
    records: list[RecordOut] = Field(description="The next records of the export, in id order.")
    next_cursor: str | None = Field(
        description="Pass as `cursor` for the next page; null after the last page."
    )


class DeleteResponse(BaseModel):
    deleted: int = Field(
        description="Distinct ids deleted; an id the collection does not hold counts too "
        "(delete is idempotent)."
    )


class CountResponse(BaseModel):
    count: int = Field(description="Records in the collection's primary store.")


class ErrorDetail(BaseModel):
    type: str = Field(
        description="The dualvec error class (ValidationError, ModelMismatchError, StoreError, ...) or "
        "the service's own (MalformedJSON, NotFound, MethodNotAllowed, PayloadTooLarge, Unauthorized, "
        "NotReady, InternalError)."
    )
    message: str = Field(description="What is wrong and how to fix it.")
    field: str | None = Field(description="JSON path of the input at fault, e.g. `records[2].metadata.lang`.")


class ErrorResponse(BaseModel):
    error: ErrorDetail
