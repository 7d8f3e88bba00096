"""The checks a search passes before any store sees it, in one place for `Router` and
`AsyncRouter` (which runs them on the event loop, before handing the call to a thread)."""

from __future__ import annotations

from dualvec.filters import Filter, parse_filter
from dualvec.records import Vector
from dualvec.spec import CollectionSpec
from dualvec.validation import check_k, check_model, check_query_vector

__all__ = ["check_search"]


def check_search(
    spec: CollectionSpec, vector: object, k: object, filter: Filter | None, model: str | None
) -> tuple[Vector, int]:
    """(query vector, k) as the stores take them; `ValidationError` or `ModelMismatchError`
    naming what is wrong otherwise."""
    check_model(spec, model)
    query = check_query_vector(spec, vector)
    limit = check_k(k)
    parse_filter(spec, filter)
    return query, limit
