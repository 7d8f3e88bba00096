"""Parsed filter conditions as a Qdrant `models.Filter`, with the semantics of the SQL stores.

Two gaps in Qdrant's filters are closed here:

- `must_not` also matches points where the key is missing, while a filter matches set fields
  only (SQL's ``x != 'a'`` is not true for NULL). Negations therefore also require the key
  (`IsEmpty` covers an absent key and a null one alike). The positive conditions (match,
  `MatchAny`, range) already never match an absent or null key, so they need nothing added;
  tests/test_layout_qdrant.py checks all of them on collections with gaps.
- Exact match takes no floats: floats match with a closed range. (Range filters on strings,
  which Qdrant cannot express, are refused for every store by `dualvec.filters`.)
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


def to_qdrant_filter(spec: CollectionSpec, conditions: list[Condition]) -> models.Filter | None:
    """The native filter for `conditions`."""
    must: list[models.Condition] = []
    must_not: list[models.Condition] = []
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
        else:
            must.append(models.FieldCondition(key=key, range=models.Range(**{_RANGE_KEYS[c.op]: c.value})))
    if not must and not must_not:
        return None
    return models.Filter(must=must or None, must_not=must_not or None)
