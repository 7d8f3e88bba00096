"""Repair: make the secondary store equal to the primary for every id waiting in the outbox.

For each intent the store that was the source of truth when it was written is re-read: what it
has is upserted into the other store, what it lacks is deleted there. Replaying twice changes
nothing more (idempotent); running it in several processes at once is safe because each batch
holds the outbox's write lock, which live writers hold too.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

from dualvec.errors import ValidationError
from dualvec.logs import get_logger
from dualvec.outbox import Intent, Outbox, Role, other_role
from dualvec.protocol import VectorStore

__all__ = ["ReplayResult", "replay_once", "replay_until_drained"]

log = get_logger("dualvec.replay")


@dataclass(frozen=True)
class ReplayResult:
    upserted: int = 0
    deleted: int = 0
    failed: int = 0

    def __add__(self, other: ReplayResult) -> ReplayResult:
        return ReplayResult(
            self.upserted + other.upserted, self.deleted + other.deleted, self.failed + other.failed
        )


def _repair(outbox: Outbox, stores: dict[Role, VectorStore], source: Role, ids: list[str]) -> ReplayResult:
    """Copy `ids` from `source` to the other store and clear their intents."""
    found = stores[source].get(ids)
    present = {r.id for r in found}
    missing = [i for i in ids if i not in present]
    secondary = stores[other_role(source)]
    if found:
        secondary.upsert(found)
    if missing:
        secondary.delete(missing)
    outbox.clear(ids)
    return ReplayResult(upserted=len(found), deleted=len(missing))


def replay_once(outbox: Outbox, stores: dict[Role, VectorStore], limit: int) -> ReplayResult:
    """Repair up to `limit` intents, those tried least often first; failures stay for next time.

    A batch refused for its content (one record the secondary will not take) is retried id by
    id, so that record holds up only itself. A batch that fails because a store is down is not:
    retrying each id against a store that is down would hold every writer's lock for nothing."""
    result = ReplayResult()
    with outbox.write_lock():
        by_source: dict[Role, list[Intent]] = defaultdict(list)
        for intent in outbox.pending(limit):
            by_source[intent.source].append(intent)
        for source, intents in by_source.items():
            ids = [i.id for i in intents]
            try:
                result += _repair(outbox, stores, source, ids)
                continue
            except ValidationError as exc:
                log.warning("replay_batch_refused", source=source, ids=len(ids), error=repr(exc))
                singles = [[record_id] for record_id in ids]
            except Exception as exc:
                log.warning("replay_failed", source=source, ids=len(ids), error=repr(exc))
                singles = []
                outbox.failed(ids, repr(exc))
                result += ReplayResult(failed=len(ids))
            for single in singles:
                try:
                    result += _repair(outbox, stores, source, single)
                except Exception as exc:
                    outbox.failed(single, repr(exc))
                    result += ReplayResult(failed=1)
    return result


def replay_until_drained(outbox: Outbox, stores: dict[Role, VectorStore], batch_size: int) -> ReplayResult:
    """Replay until a pass under the lock finds nothing to do, or something fails (it stays in
    the outbox for the next attempt, and the caller reports it)."""
    total = ReplayResult()
    while True:
        result = replay_once(outbox, stores, batch_size)
        total += result
        if result == ReplayResult() or result.failed:
            return total
