"""The values that cross the store protocol: what goes in (Record) and what comes back (Hit)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = ["Hit", "Metadata", "Record", "Vector"]

Vector = npt.NDArray[np.float32]
Metadata = dict[str, Any]


@dataclass(frozen=True, eq=False)
class Record:
    """One stored item. Stores always hand back float32 vectors of the collection's dimension."""

    id: str
    vector: Any
    metadata: Metadata = field(default_factory=dict)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Record):
            return NotImplemented
        return (
            self.id == other.id
            and self.metadata == other.metadata
            and np.array_equal(np.asarray(self.vector), np.asarray(other.vector))
        )

    __hash__ = None  # type: ignore[assignment]


@dataclass(frozen=True)
class Hit:
    """One search result. `distance` is in the collection's metric, lower is closer:
    cosine distance in [0, 2], L2 not squared, dot as the negative inner product."""

    id: str
    distance: float
    metadata: Metadata = field(default_factory=dict)
