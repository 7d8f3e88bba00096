"""What one request may ask of the service: the bounds that keep one client from exhausting it."""

from __future__ import annotations

from dataclasses import dataclass

from dualvec.errors import ConfigError
from dualvec.validation import MAX_BATCH

__all__ = ["DEFAULT_MAX_BATCH", "DEFAULT_MAX_BODY_BYTES", "Limits"]

DEFAULT_MAX_BODY_BYTES = 32 * 1024 * 1024
# About what 32 MiB holds of 384-dimension records sent as JSON numbers.
DEFAULT_MAX_BATCH = 10_000


@dataclass(frozen=True)
class Limits:
    """`max_body_bytes`: the largest request body (413 beyond, before any of it is parsed);
    `max_batch`: the most records one upsert writes, ids one get or delete names, or records
    one export page holds (at most the library's own `MAX_BATCH`)."""

    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    max_batch: int = DEFAULT_MAX_BATCH

    def __post_init__(self) -> None:
        if self.max_body_bytes < 1:
            raise ConfigError(f"max_body_bytes: expected at least 1, got {self.max_body_bytes}")
        if not 1 <= self.max_batch <= MAX_BATCH:
            raise ConfigError(f"max_batch: expected 1 to {MAX_BATCH}, got {self.max_batch}")
