"""Vectors on the wire, in two forms that carry the same float32 values.

- `"vector": [0.25, -1.0, ...]`: JSON numbers, what any client writes first. Answers give each
  stored float32 as the float64 number equal to it, so parsing it back as float32 gives the
  stored vector bit for bit.
- `"vector_b64": "AACAPgAAgL8..."`: base64 (standard alphabet, padded) of the vector as
  little-endian float32, 4 bytes per dimension: a quarter of the size, no float parsing on either side.

A request gives exactly one of the two for each vector; reads answer in the form asked with
`vector_format` (`numbers`, the default, or `b64`).
"""

from __future__ import annotations

import base64
import binascii
from typing import Any, Literal

import numpy as np

from dualvec.records import Record
from dualvec.service.errors import ApiError
from dualvec.spec import CollectionSpec

__all__ = ["VectorFormat", "record_out", "vector_in"]

VectorFormat = Literal["numbers", "b64"]


def _refuse(field: str, message: str) -> ApiError:
    return ApiError(422, "ValidationError", f"{field}: {message}", field)


def vector_in(spec: CollectionSpec, numbers: list[float] | None, b64: str | None, prefix: str = "") -> Any:
    """The vector a request gives (`prefix` locates it, e.g. `records[3].`), for the library to
    check like any other: a list of numbers as sent, or the decoded float32 array."""
    if (numbers is None) == (b64 is None):
        raise _refuse(
            f"{prefix}vector",
            "give the vector once: as vector (JSON numbers) or as vector_b64 (base64 of little-endian "
            "float32), not both and not neither",
        )
    if b64 is None:
        return numbers
    field = f"{prefix}vector_b64"
    try:
        raw = base64.b64decode(b64, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise _refuse(field, f"not base64 (standard alphabet, padded): {exc}") from exc
    if len(raw) != spec.dim * 4:
        raise _refuse(
            field,
            f"decodes to {len(raw)} bytes; collection {spec.name!r} has dim {spec.dim}, so "
            f"{spec.dim * 4} bytes of little-endian float32 are expected",
        )
    vector = np.frombuffer(raw, dtype="<f4").astype(np.float32)
    if not np.isfinite(vector).all():
        # Checked here as well as in the library, so the error names the field the client used.
        raise _refuse(field, "holds NaN or infinity")
    return vector


def record_out(record: Record, vector_format: VectorFormat) -> dict[str, Any]:
    """A stored record as JSON: id, the vector in the form asked, metadata."""
    vector = np.asarray(record.vector, dtype=np.float32)
    if vector_format == "b64":
        encoded: dict[str, Any] = {"vector_b64": base64.b64encode(vector.astype("<f4").tobytes()).decode()}
    else:
        encoded = {"vector": vector.tolist()}
    return {"id": record.id, **encoded, "metadata": record.metadata}
