"""Backfill: copy every record the legacy store held before dual writes began into the target,
while live dual writes go on, without ever overwriting a newer write or bringing back a
deleted id.

How, and why it is safe:

1. Legacy is scanned in batches. A scanned batch may already be stale: a live writer may have
   updated or deleted some of its ids since the scan began.
2. For each batch, under `outbox.write_lock()` (the lock every live writer holds around its
   primary and secondary writes, in every process, and every replay holds too), what legacy
   holds *now* is upserted into the target. No live write can land between that read and the
   copy, so the copy is never older than the target's own copy; an id deleted since the scan
   is not found, so it is not brought back.
3. What legacy holds now is the scanned batch itself while no write has been made since the
   scan began: every live write, replay and repair commits to the outbox file before it touches
   a store (`dualvec.outbox.WriteWatch` notices any commit there, from any process). Once one
   has, the batch's ids are re-read from legacy with `get` under the lock, for the rest of the
   scan. (The re-read was a fifth of backfill's time in a profile; a quiet backfill skips it.)
4. An id whose outbox intent names the target as its source (a write made in `target-primary`
   whose legacy copy failed) is skipped: legacy is behind for it, and the replayer copies it
   the right way round. An id waiting with legacy as its source is always re-read.

Checkpoint: a small JSON file (`.dualvec/backfill-<collection>.json` by default), replaced
atomically after each batch, holds how many records were scanned. Killed at any moment
(SIGKILL included) and run again, backfill continues from it and ends with the same result.
A scan's order can shift between runs (a delete moves later rows up; LanceDB and the SQLite
BLOB table move a rewritten row to the end), so the records before the checkpoint are not
skipped blindly: their ids are looked up in the target and only those it lacks are copied
(the same way, under the lock). That is correct because every id the target holds was
put there by a copy or a live write, both current; and it is cheap, being reads only. A
finished run leaves `complete: true`; running again then tops up whatever the target lacks.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from dualvec.errors import ConfigError
from dualvec.json_files import read_json_state, write_json_atomic
from dualvec.outbox import Outbox, WriteWatch
from dualvec.progress import DEFAULT_BATCH_SIZE, Progress, ProgressCallback
from dualvec.protocol import VectorStore
from dualvec.records import Record

__all__ = [
    "BackfillPlan",
    "BackfillResult",
    "backfill",
    "plan_backfill",
]


@dataclass(frozen=True)
class _Checkpoint:
    scanned: int = 0
    complete: bool = False


def _load_checkpoint(path: Path, collection: str) -> _Checkpoint:
    data = read_json_state(path)
    if data is None:
        return _Checkpoint()
    if data.get("collection") != collection:
        raise ConfigError(
            f"checkpoint {path} belongs to collection {data.get('collection')!r}, not {collection!r}; "
            "name another --checkpoint file"
        )
    scanned, complete = data.get("scanned"), data.get("complete")
    if not isinstance(scanned, int) or scanned < 0 or not isinstance(complete, bool):
        raise ConfigError(f"checkpoint {path} is damaged ({data}); delete it or pass --restart")
    return _Checkpoint(scanned, complete)


def _save_checkpoint(path: Path, collection: str, checkpoint: _Checkpoint) -> None:
    write_json_atomic(path, {"collection": collection, **asdict(checkpoint), "updated_at": time.time()})


@dataclass(frozen=True)
class BackfillPlan:
    """What a backfill would do, computed without writing anything (`--dry-run`)."""

    legacy_count: int
    target_count: int
    batch_size: int
    batches: int
    checkpoint: str | None
    resume_from: int
    checkpoint_complete: bool

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def plan_backfill(
    legacy: VectorStore,
    target: VectorStore,
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    checkpoint: Path | None = None,
    restart: bool = False,
) -> BackfillPlan:
    """Counts, batches and the checkpoint a run would start from."""
    state = _Checkpoint() if checkpoint is None or restart else _load_checkpoint(checkpoint, legacy.spec.name)
    legacy_count = legacy.count()
    return BackfillPlan(
        legacy_count=legacy_count,
        target_count=target.count(),
        batch_size=batch_size,
        batches=math.ceil(legacy_count / batch_size),
        checkpoint=None if checkpoint is None else str(checkpoint),
        resume_from=state.scanned,
        checkpoint_complete=state.complete,
    )


@dataclass(frozen=True)
class BackfillResult:
    """What a run did. `copied` counts upserts into the target; the `skipped_*` counts say why
    the other scanned records were not copied."""

    scanned: int
    copied: int
    resumed_from: int
    skipped_present: int  # before the checkpoint, and the target already holds them
    skipped_deleted: int  # deleted from legacy since the scan read them
    skipped_pending: int  # waiting in the outbox with the target as their truth
    seconds: float

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "seconds": round(self.seconds, 3)}


class _Copier:
    """Copies ids from legacy to the target under the write lock, and counts what it did."""

    def __init__(self, legacy: VectorStore, target: VectorStore, outbox: Outbox, watch: WriteWatch) -> None:
        self.legacy, self.target, self.outbox, self.watch = legacy, target, outbox, watch
        self.copied = self.present = self.deleted = self.pending = 0

    def copy(self, records: Sequence[Record]) -> None:
        """Copy what legacy holds now for the ids of `records`, as scanned since the watch began."""
        with self.outbox.write_lock():
            waiting = self.outbox.waiting()
            wanted = [r for r in records if waiting.get(r.id) != "target"]
            if self.watch.quiet():
                # Nothing written since the scan began: legacy holds what it read, except for an
                # id a writer left waiting (it may have died between its legacy write and clear).
                current = [r for r in wanted if r.id not in waiting]
                current += self.legacy.get([r.id for r in wanted if r.id in waiting])
            else:
                current = self.legacy.get([r.id for r in wanted])
            if current:
                self.target.upsert(current)
        self.copied += len(current)
        self.deleted += len(wanted) - len(current)
        self.pending += len(records) - len(wanted)

    def copy_missing(self, records: Sequence[Record]) -> None:
        """Records an earlier run has probably copied: only those the target lacks are copied."""
        held = {r.id for r in self.target.get([r.id for r in records])}
        lacking = [r for r in records if r.id not in held]
        self.present += len(records) - len(lacking)
        if lacking:
            self.copy(lacking)


def backfill(
    legacy: VectorStore,
    target: VectorStore,
    outbox: Outbox,
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    checkpoint: Path | None = None,
    restart: bool = False,
    on_progress: ProgressCallback | None = None,
) -> BackfillResult:
    """Copy every legacy record into the target, safe beside live dual writes (see the module
    docstring). With `checkpoint`, resumes from it (unless `restart`) and keeps it current.

    Run it only while every writer is in phase `dual` or `target-primary`: in phase `legacy`
    writers neither reach the target nor take the lock."""
    started = time.monotonic()
    name = legacy.spec.name
    resume_from = 0
    if checkpoint is not None and not restart:
        resume_from = _load_checkpoint(checkpoint, name).scanned
    total = legacy.count()
    # Started before the scan reads anything: any write the scan may have missed comes after.
    watch = WriteWatch(outbox)
    copier = _Copier(legacy, target, outbox, watch)
    position = 0
    try:
        for batch in legacy.scan(batch_size):
            seen_before = max(0, min(len(batch), resume_from - position))
            if seen_before:
                copier.copy_missing(batch[:seen_before])
            if seen_before < len(batch):
                copier.copy(batch[seen_before:])
            position += len(batch)
            if checkpoint is not None and position > resume_from:
                _save_checkpoint(checkpoint, name, _Checkpoint(position))
            if on_progress is not None:
                on_progress(Progress(position, max(total, position), time.monotonic() - started))
    finally:
        watch.close()
    if checkpoint is not None:
        _save_checkpoint(checkpoint, name, _Checkpoint(position, complete=True))
    return BackfillResult(
        scanned=position,
        copied=copier.copied,
        resumed_from=resume_from,
        skipped_present=copier.present,
        skipped_deleted=copier.deleted,
        skipped_pending=copier.pending,
        seconds=time.monotonic() - started,
    )
