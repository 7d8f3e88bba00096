"""Which input an error is about, as a JSON path into the request: `records[2].metadata.lang`.

Pydantic gives a location tuple; the library's `ValidationError` names the place at the start
of its message ("record 2 (id 'a'): metadata field 'lang': ...", "filter.year.$gte: ...",
"ids[3]: ...", "query vector: ..."), which `field_of` reads back into the API's own paths.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

__all__ = ["field_of", "json_path"]

# Where a request part comes from, which the API's paths leave out.
_SOURCES = ("body", "query", "path", "header")


def json_path(loc: Sequence[str | int]) -> str:
    """`("body", "records", 0, "vector", 3)` as `records[0].vector[3]`; the bare body as `body`."""
    parts = list(loc[1:]) if loc and loc[0] in _SOURCES else list(loc)
    path = ""
    for part in parts:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path or "body"


# A Python repr of a str, as the library quotes ids: any text, quotes escaped.
_REPR = r"""(?:'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*")"""
_RECORD = re.compile(rf"record (\d+)(?: \(id {_REPR}\))?: (.*)", re.DOTALL)
_METADATA_FIELD = re.compile(r"metadata field '(\w+)'")
_PLACE = re.compile(r"(ids\[\d+\]|ids|records|k|filter(?:\.\w+(?:\.\$\w+(?:\[\d+\])?)?)?): ")


def field_of(message: str) -> str | None:
    """The request field a library `ValidationError` message names, None if it names none."""
    record = _RECORD.match(message)
    if record is not None:
        where, rest = f"records[{record.group(1)}]", record.group(2)
        named = _METADATA_FIELD.match(rest)
        if named is not None:
            return f"{where}.metadata.{named.group(1)}"
        for prefix, part in (
            ("metadata", "metadata"),
            ("unknown metadata", "metadata"),
            ("vector", "vector"),
            ("a zero vector", "vector"),
            ("id", "id"),
            ("duplicate id", "id"),
        ):
            if rest.startswith(prefix):
                return f"{where}.{part}"
        return where
    if message.startswith("query vector:"):
        return "vector"
    place = _PLACE.match(message)
    return place.group(1) if place is not None else None
