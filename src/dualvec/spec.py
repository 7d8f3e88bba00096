"""Collection specs: the one description of a collection that every store and check shares."""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic import ValidationError as PydanticValidationError

from dualvec.errors import ConfigError, ModelMismatchError

__all__ = [
    "NAME_PATTERN",
    "CollectionSpec",
    "FieldSpec",
    "FieldType",
    "IdType",
    "Metric",
    "check_name",
    "check_same_spec",
    "describe",
]

Metric = Literal["cosine", "l2", "dot"]
FieldType = Literal["str", "int", "float", "bool"]
# What a backend's ids are: any text, a 64-bit integer (SQLite INTEGER PRIMARY KEY, LanceDB
# int64, Qdrant uint point ids) or a UUID (Qdrant point ids). Callers always pass and get back
# str; an "int" id crosses the API as its decimal string, a "uuid" one in canonical form.
IdType = Literal["str", "int", "uuid"]

NAME_PATTERN = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
# Names a store uses for its own columns; a metadata field may not shadow them.
RESERVED_NAMES = frozenset({"id", "vector", "embedding", "distance", "k", "rowid", "oid", "_rowid_"})


def check_name(kind: str, name: str) -> str:
    """Refuse any identifier that is not plain ASCII, so no name can ever alter SQL or a path."""
    if not isinstance(name, str) or not NAME_PATTERN.match(name):
        raise ValueError(
            f"{kind} {name!r} is not allowed: use 1-63 ASCII letters, digits or '_', "
            "starting with a letter or '_'"
        )
    return name


class _Checked(BaseModel):
    """A frozen model whose direct construction raises `ConfigError` naming each bad value,
    not pydantic's own error: callers catch one error tree."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    def __init__(self, /, **data: Any) -> None:
        try:
            super().__init__(**data)
        except PydanticValidationError as exc:
            raise ConfigError(f"{type(self).__name__}: {describe(exc)}") from exc


def describe(exc: PydanticValidationError) -> str:
    """Each problem of a pydantic error as `where: what (got value)`, joined by '; '."""
    return "; ".join(
        f"{'.'.join(str(p) for p in error['loc']) or 'value'}: {error['msg']}"
        + (f" (got {error['input']!r})" if error["type"] != "missing" and "input" in error else "")
        for error in exc.errors()
    )


class FieldSpec(_Checked):
    """One metadata field: its type, whether filters may use it, and its name in an existing store."""

    type: FieldType
    filterable: bool = True
    # A record may lack the value (NULL, an absent payload key, an Arrow null). Filters never
    # match a missing value, in any store: $eq, $ne, $in, $nin and ranges all test set values.
    # Stored-only fields may always be missing.
    optional: bool = False
    # A filterable str/int/bool field that becomes a sqlite-vec partition key, so a search
    # filtered by it scans only its partition (a tenant, a script); other stores ignore it.
    partition: bool = False
    # The column or payload key in a store created without dualvec; defaults to the field name.
    source: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _type_alone(cls, data: Any) -> Any:
        """`{"lang": "str"}` is short for `{"lang": {"type": "str"}}`."""
        return {"type": data} if isinstance(data, str) else data

    @field_validator("source")
    @classmethod
    def _source_is_safe(cls, value: str | None) -> str | None:
        return None if value is None else check_name("field source", value)


class CollectionSpec(_Checked):
    """What a collection holds. Stores persist it and refuse to reopen with a different one."""

    name: str
    dim: int = Field(gt=0, le=65536)
    metric: Metric = "cosine"
    model: str = Field(min_length=1)
    fields: dict[str, FieldSpec] = Field(default_factory=dict)
    # Column or payload names of an existing store, for wrapping data created without dualvec.
    id_source: str = "id"
    vector_source: str = "vector"
    id_type: IdType = "str"

    @field_validator("name")
    @classmethod
    def _name_is_safe(cls, value: str) -> str:
        return check_name("collection name", value)

    @field_validator("id_source", "vector_source")
    @classmethod
    def _sources_are_safe(cls, value: str) -> str:
        return check_name("source column", value)

    @field_validator("fields")
    @classmethod
    def _field_names_are_safe(cls, value: dict[str, FieldSpec]) -> dict[str, FieldSpec]:
        for name in value:
            check_name("field name", name)
            if name.lower() in RESERVED_NAMES:
                raise ValueError(f"field name {name!r} is reserved; rename the field")
        return value

    @model_validator(mode="after")
    def _sources_are_distinct(self) -> CollectionSpec:
        sources = [self.id_source, self.vector_source, *(self.source_of(f) for f in self.fields)]
        lowered = [s.lower() for s in sources]
        if len(set(lowered)) != len(lowered):
            raise ValueError(f"id, vector and field sources must be distinct, got {sources}")
        return self

    def source_of(self, field: str) -> str:
        """The column or payload key that holds `field` in the backend."""
        return self.fields[field].source or field

    @property
    def filterable_fields(self) -> dict[str, FieldSpec]:
        return {n: f for n, f in self.fields.items() if f.filterable}

    def may_be_missing(self, field: str) -> bool:
        """Whether a record may lack `field`: optional or stored-only fields."""
        spec = self.fields[field]
        return spec.optional or not spec.filterable

    def same_layout(self, other: CollectionSpec) -> bool:
        """Whether `other` describes the same stored data (the model is checked separately)."""
        return self.model_copy(update={"model": other.model}) == other


def check_same_spec(stored: CollectionSpec, given: CollectionSpec) -> None:
    """Refuse to open data built for another embedding model or another layout."""
    if stored.model != given.model:
        raise ModelMismatchError(
            f"collection {given.name!r} holds embeddings of {stored.model!r}, "
            f"opened with model {given.model!r}; open it with the model it was built with"
        )
    if not stored.same_layout(given):
        raise ConfigError(
            f"collection {given.name!r} was created with a different spec: stored "
            f"{stored.model_dump(exclude={'model'})}, given {given.model_dump(exclude={'model'})}"
        )
