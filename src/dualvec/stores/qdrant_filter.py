"""Parsed filter conditions as a Qdrant `models.Filter`, with the semantics of the SQL stores.

Two gaps in Qdrant's filters are closed here:

- `must_not` also matches points where the key is missing, while a filter matches set fields
  only (SQL's ``x != 'a'`` is not true for NULL). Negations therefore also require the key.
- `Range` takes numbers only, and exact match takes no floats. Floats match with a closed
  range; string comparisons ($gt... on a str field) cannot be expressed and are returned for
  the caller to apply to the payload itself.
"""

from __future__ import annotations

from typing import Any

from qdrant_client import models

from dualvec.filters import Condition
from dualvec.spec import CollectionSpec, FieldType

__all__ = ["to_qdrant_filter"]

_RANGE_KEYS = {"$gt": "gt", "$gte": "gte", "$lt": "lt", "$lte": "lte"}


def _equals(key: str, field_type: FieldType, value: Any) -> models.Condition:
    if field_type == "float":
        return models.FieldCondition(key=key, range=models.Range(gte=value, lte=value))
    return models.FieldCondition(key=key, match=models.MatchValue(value=value))


def _one_of(key: str, field_type: FieldType, values: tuple[Any, ...]) -> models.Condition:
    if field_type == "bool":  # MatchAny takes strings or integers only
        return models.Filter(should=[_equals(key, field_type, v) for v in values])
    return models.FieldCondition(key=key, match=models.MatchAny(any=list(values)))


def to_qdrant_filter(
    spec: CollectionSpec, conditions: list[Condition]
) -> tuple[models.Filter | None, list[Condition]]:
    """The native filter for `conditions`, and the conditions it leaves to the caller."""
    must: list[models.Condition] = []
    must_not: list[models.Condition] = []
    left: list[Condition] = []
    for c in conditions:
        key = spec.source_of(c.field)
        field_type = spec.fields[c.field].type
        if c.op == "$eq":
            must.append(_equals(key, field_type, c.value))
        elif c.op == "$in":
            must.append(_one_of(key, field_type, c.value))
        elif c.op in ("$ne", "$nin"):
            negated = (
                _equals(key, field_type, c.value) if c.op == "$ne" else _one_of(key, field_type, c.value)
            )
            must_not.append(negated)
            must_not.append(models.IsEmptyCondition(is_empty=models.PayloadField(key=key)))
        elif field_type == "str":
            left.append(c)
        else:
            must.append(models.FieldCondition(key=key, range=models.Range(**{_RANGE_KEYS[c.op]: c.value})))
    if not must and not must_not:
        return None, left
    return models.Filter(must=must or None, must_not=must_not or None), left
