"""Metadata filters in the common dict style, parsed once into typed conditions.

``{"lang": "en", "year": {"$gte": 2020}, "tag": {"$in": ["a", "b"]}}``: fields are ANDed.
Every backend translates the parsed conditions into its native filter with values bound
as parameters, never pasted into query text.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from dualvec.errors import ValidationError
from dualvec.records import Metadata
from dualvec.spec import CollectionSpec
from dualvec.validation import check_value

__all__ = ["MAX_IN_VALUES", "OPERATORS", "Condition", "Filter", "matches", "parse_filter"]

Op = Literal["$eq", "$ne", "$gt", "$gte", "$lt", "$lte", "$in", "$nin"]
Filter = Mapping[str, Any]
OPERATORS: tuple[Op, ...] = ("$eq", "$ne", "$gt", "$gte", "$lt", "$lte", "$in", "$nin")
MAX_IN_VALUES = 1000
_SET_OPS = ("$in", "$nin")
_ORDER_OPS = ("$gt", "$gte", "$lt", "$lte")


@dataclass(frozen=True)
class Condition:
    """One test on one field; `value` is a tuple for $in and $nin."""

    field: str
    op: Op
    value: Any


def parse_filter(spec: CollectionSpec, filter: Filter | None) -> list[Condition]:
    """Check a filter against the spec and return its conditions; raise naming what is wrong."""
    if filter is None:
        return []
    if not isinstance(filter, Mapping):
        raise ValidationError(f"filter: expected a dict, got {type(filter).__name__}")
    conditions: list[Condition] = []
    for name, test in filter.items():
        if name not in spec.fields:
            raise ValidationError(
                f"filter: unknown field {name!r}; filterable fields: {sorted(spec.filterable_fields)}"
            )
        field = spec.fields[name]
        if not field.filterable:
            raise ValidationError(
                f"filter: field {name!r} is stored only; declare it filterable to filter on it"
            )
        tests = test if isinstance(test, Mapping) else {"$eq": test}
        if not tests:
            raise ValidationError(f"filter.{name}: empty operator dict")
        for op, value in tests.items():
            where = f"filter.{name}.{op}"
            if op not in OPERATORS:
                raise ValidationError(f"filter.{name}: unknown operator {op!r}; use one of {OPERATORS}")
            if op in _ORDER_OPS and field.type in ("bool", "str"):
                # sqlite-vec 0.1.9 compares metadata strings longer than 12 bytes wrongly (or
                # fails), so the target could not answer what the legacy store would.
                raise ValidationError(
                    f"{where}: {field.type} fields support only $eq, $ne, $in, $nin"
                    + (
                        "; order strings in your application, or store an int key to range on"
                        if field.type == "str"
                        else ""
                    )
                )
            if op in _SET_OPS:
                if field.type == "float":
                    raise ValidationError(f"{where}: float fields do not support {op}; use $gte/$lte ranges")
                if not isinstance(value, (list, tuple, set, frozenset)) or not value:
                    raise ValidationError(f"{where}: expected a non-empty list of values")
                if len(value) > MAX_IN_VALUES:
                    raise ValidationError(f"{where}: at most {MAX_IN_VALUES} values")
                items = tuple(
                    dict.fromkeys(check_value(f"{where}[{i}]", field.type, v) for i, v in enumerate(value))
                )
                conditions.append(Condition(name, op, items))
            else:
                if value is None:
                    raise ValidationError(f"{where}: None is not a value; filters match set fields")
                conditions.append(Condition(name, op, check_value(where, field.type, value)))
    return conditions


_COMPARE: dict[str, Callable[[Any, Any], bool]] = {
    "$eq": operator.eq,
    "$ne": operator.ne,
    "$gt": operator.gt,
    "$gte": operator.ge,
    "$lt": operator.lt,
    "$lte": operator.le,
    "$in": lambda value, allowed: value in allowed,
    "$nin": lambda value, allowed: value not in allowed,
}


def matches(conditions: list[Condition], metadata: Metadata) -> bool:
    """Evaluate parsed conditions in Python, for stores without a native filter. A missing
    value matches no condition, as NULL matches none in SQL."""
    return all(c.field in metadata and _COMPARE[c.op](metadata[c.field], c.value) for c in conditions)
