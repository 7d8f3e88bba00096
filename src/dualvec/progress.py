"""What the long passes over a collection (backfill, verify) share: the batch they work in,
and how they report how far they have got."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["DEFAULT_BATCH_SIZE", "Progress", "ProgressCallback"]

DEFAULT_BATCH_SIZE = 500


@dataclass(frozen=True)
class Progress:
    """How far a long pass has got: `done` of about `total` records after `elapsed` seconds,
    `resumed` of them done by an earlier run (so they do not inflate the rate)."""

    done: int
    total: int
    elapsed: float
    resumed: int = 0

    @property
    def rate(self) -> float:
        """Records per second in this run."""
        return (self.done - self.resumed) / self.elapsed if self.elapsed > 0 else 0.0

    @property
    def eta_seconds(self) -> float | None:
        """Seconds left at the current rate; None before there is a rate to go by."""
        if not self.rate:
            return None
        return max(0.0, self.total - self.done) / self.rate


ProgressCallback = Callable[[Progress], None]
