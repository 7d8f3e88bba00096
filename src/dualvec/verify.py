"""Verify: prove both stores hold the same records (ids, vectors, metadata), or say where not.

One pass over both stores' scans at once, in memory that does not grow with the collection.
Each record is matched with the other store's record of the same id as the two scans bring
them: after a backfill both stores hold most records in the same order (backfill copies in
legacy's scan order, and a live write moves its row to the end of both), so most records meet
their counterpart within a batch or two and neither store is read by id. A record still
unmatched after a few batches (bounded by `_WAITING_BATCHES`) or when the other scan has ended
is looked up in the other store with `get`: from the primary's side this finds ids missing from
the secondary, from the secondary's side ids extra in it. Vectors are compared with
`distance.same_vector` in the collection's metric (in a cosine collection only the direction
counts). Every record of either store is compared once, whatever order the scans come in;
two stores in unrelated orders cost what two passes with `get` cost.

A live writer can land between the two reads of one id and make a false difference, so every
difference is read again from both stores under `outbox.write_lock()`, which live writers hold
around their primary and secondary writes: what still differs then is real.

`repair=True` records an outbox intent, with the primary as the source, for each confirmed
difference (ids already waiting keep their own source), runs the replayer until the outbox is
empty, and verifies again: the result is that second verify's, with what was found before and
what the repair did.

A checkpoint makes a long verify resumable: a small SQLite file beside the outbox holding the
counts so far and the ids each side has compared, both written in one transaction per batch,
so a verify killed at any moment and run again compares each record once. Ids, not a scan
offset, because scan order shifts between runs (a delete moves later rows up; LanceDB and the
SQLite BLOB table move a rewritten row to the end): an offset would skip rows that moved back
across it. Memory stays constant; the file (ids only) is removed when the verify finishes.
"""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, get_args

import numpy as np

from dualvec.distance import same_vector
from dualvec.errors import ConfigError
from dualvec.json_files import read_json_state, write_json_atomic
from dualvec.outbox import Op, Outbox, Role, other_role
from dualvec.progress import DEFAULT_BATCH_SIZE, Progress, ProgressCallback
from dualvec.protocol import VectorStore
from dualvec.records import Record
from dualvec.replay import ReplayResult, replay_until_drained
from dualvec.sqlite_driver import connect, write_transaction

__all__ = ["DiffKind", "VerifyResult", "read_verify_state", "verify", "write_verify_state"]

DiffKind = Literal["missing", "extra", "vector", "metadata"]
KINDS: tuple[DiffKind, ...] = get_args(DiffKind)
# The two sides of a verify: the primary store's records and the secondary's.
Pass = Literal["primary", "secondary"]
# What each side's comparisons report: a primary record (met in both scans or looked up in the
# secondary) shows everything but extra ids, which a secondary record looked up in the primary
# shows (so a difference is never counted twice).
_PASS_KINDS: dict[Pass, frozenset[DiffKind]] = {
    "primary": frozenset({"missing", "vector", "metadata"}),
    "secondary": frozenset({"extra"}),
}
_REPAIR_OP: dict[Pass, Op] = {"primary": "upsert", "secondary": "delete"}


@dataclass(frozen=True)
class VerifyResult:
    """Differences between the primary and the secondary, counted by kind, with a few ids of
    each. With a repair, `before` holds what the first verify found and `repaired` what the
    replayer did; the counts are the second verify's."""

    primary: Role
    secondary: Role
    checked: dict[Pass, int]
    counts: dict[DiffKind, int]
    samples: dict[DiffKind, list[str]]
    seconds: float
    before: dict[DiffKind, int] | None = None
    repaired: ReplayResult | None = None

    @property
    def differences(self) -> int:
        return sum(self.counts.values())

    @property
    def clean(self) -> bool:
        return self.differences == 0

    def as_dict(self) -> dict[str, Any]:
        return {
            **asdict(self),
            "seconds": round(self.seconds, 3),
            "clean": self.clean,
            "differences": self.differences,
        }

    def summary(self) -> str:
        checked = f"{self.checked['primary']} + {self.checked['secondary']} records checked"
        if self.clean:
            text = f"clean: {checked}"
        else:
            found = ", ".join(f"{kind} {n}" for kind, n in self.counts.items() if n)
            text = f"{self.differences} differences ({found}); {checked}"
        if self.before is not None:
            text += f"; repaired {sum(self.before.values())} found before"
        return text


@dataclass
class _Tally:
    """A verify's settings, progress and findings so far."""

    collection: str
    primary: Role
    repair: bool
    tolerance: float
    checked: dict[Pass, int] = field(default_factory=lambda: {"primary": 0, "secondary": 0})
    counts: dict[DiffKind, int] = field(default_factory=lambda: dict.fromkeys(KINDS, 0))
    samples: dict[DiffKind, list[str]] = field(default_factory=lambda: {k: [] for k in KINDS})

    def same_run(self, other: _Tally) -> bool:
        def settings(tally: _Tally) -> tuple[object, ...]:
            return tally.collection, tally.primary, tally.repair, tally.tolerance

        return settings(self) == settings(other)


class _Checkpoint:
    """The tally and the ids each side has compared, in one SQLite file, updated in one
    transaction per batch so that a kill at any moment leaves the two consistent."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._conn = connect(path, vec=False)
        with write_transaction(self._conn):
            self._conn.execute(
                "CREATE TABLE IF NOT EXISTS tally (one INTEGER PRIMARY KEY, body TEXT NOT NULL)"
            )
            self._conn.execute(
                "CREATE TABLE IF NOT EXISTS checked "
                "(stage TEXT, id TEXT, PRIMARY KEY (stage, id)) WITHOUT ROWID"
            )

    def resume(self, fresh: _Tally, *, restart: bool) -> _Tally:
        """The saved tally if it belongs to a run like `fresh`; else start over with `fresh`
        (also when it was written by a dualvec that kept other fields)."""
        row = self._conn.execute("SELECT body FROM tally").fetchone()
        try:
            saved = None if row is None or restart else _Tally(**json.loads(row[0]))
        except TypeError:
            saved = None
        if saved is not None and saved.same_run(fresh):
            return saved
        with write_transaction(self._conn):
            self._conn.execute("DELETE FROM tally")
            self._conn.execute("DELETE FROM checked")
        return fresh

    def compared(self, side: Pass, ids: Sequence[str]) -> set[str]:
        """Which of `ids` this side has compared already."""
        rows = self._conn.execute(
            # Looked up by key: a join on json_each would scan every id checked so far.
            "SELECT id FROM checked WHERE stage = ? AND id IN (SELECT value FROM json_each(?))",
            (side, json.dumps(list(ids))),
        )
        return {row[0] for row in rows}

    def save(self, tally: _Tally, compared: dict[Pass, list[str]]) -> None:
        with write_transaction(self._conn):
            self._conn.executemany(
                "INSERT OR IGNORE INTO checked (stage, id) VALUES (?, ?)",
                [(side, i) for side, ids in compared.items() for i in ids],
            )
            self._conn.execute("INSERT OR REPLACE INTO tally VALUES (1, ?)", (json.dumps(asdict(tally)),))

    def remove(self) -> None:
        self._conn.close()
        for suffix in ("", "-wal", "-shm"):
            self.path.with_name(self.path.name + suffix).unlink(missing_ok=True)

    def close(self) -> None:
        self._conn.close()


def _difference(
    mine: Record | None,
    theirs: Record | None,
    metric: Any,
    tolerance: float,
    vector_differs: bool | None = None,
) -> DiffKind | None:
    """How the secondary's record differs from the primary's, None when it does not.
    `vector_differs`, when the caller compared a whole batch at once, saves comparing again."""
    if mine is None:
        return None if theirs is None else "extra"
    if theirs is None:
        return "missing"
    if vector_differs is None:
        a = np.asarray(mine.vector, dtype=np.float32)
        b = np.asarray(theirs.vector, dtype=np.float32)
        vector_differs = a.shape != b.shape or not same_vector(a, b, metric, tolerance)
    if vector_differs:
        return "vector"
    return "metadata" if mine.metadata != theirs.metadata else None


def _vectors_differ(pairs: Sequence[tuple[Record, Record]], metric: Any, tolerance: float) -> list[bool]:
    """`same_vector` for a whole batch of pairs in one array operation. Most pairs are exact
    copies, found with one comparison; only the others are normalised and compared within
    `tolerance` (which is most of the cost when done for every pair)."""
    if not pairs:
        return []
    a = np.stack([np.asarray(p[0].vector, dtype=np.float32) for p in pairs])
    b = np.stack([np.asarray(p[1].vector, dtype=np.float32) for p in pairs])
    differs = np.any(a != b, axis=1)
    inexact = np.flatnonzero(differs)
    if inexact.size:
        x, y = a[inexact], b[inexact]
        if metric == "cosine":
            x = x / np.linalg.norm(x, axis=1, keepdims=True)
            y = y / np.linalg.norm(y, axis=1, keepdims=True)
        differs[inexact] = ~np.all(np.isclose(x, y, rtol=tolerance, atol=tolerance), axis=1)
    return [bool(d) for d in differs]


# How many batches of records read from one side may wait for their counterpart from the
# other side's scan before they are looked up with `get` instead (the memory a verify holds).
_WAITING_BATCHES = 2


@dataclass
class _Side:
    """One store's scan in the verify: what it has read whose counterpart has not come yet."""

    name: Pass
    batches: Iterator[list[Record]]
    waiting: dict[str, Record] = field(default_factory=dict)  # oldest first
    ended: bool = False


_OTHER: dict[Pass, Pass] = {"primary": "secondary", "secondary": "primary"}


class _Verifier:
    def __init__(
        self,
        stores: dict[Role, VectorStore],
        outbox: Outbox,
        tally: _Tally,
        *,
        sample: int,
        batch_size: int,
        checkpoint: _Checkpoint | None,
        on_progress: ProgressCallback | None,
    ) -> None:
        self.stores, self.outbox, self.tally = stores, outbox, tally
        self.roles: dict[Pass, Role] = {"primary": tally.primary, "secondary": other_role(tally.primary)}
        self.metric = stores[tally.primary].spec.metric
        self.sample, self.batch_size = sample, batch_size
        self.checkpoint, self.on_progress = checkpoint, on_progress
        self.started = time.monotonic()
        self.total = sum(store.count() for store in stores.values())
        self.resumed = sum(tally.checked.values())

    def run(self) -> None:
        sides = {
            name: _Side(name, self.stores[role].scan(self.batch_size)) for name, role in self.roles.items()
        }
        while not all(side.ended for side in sides.values()):
            # Read on from the side that is behind: the one with fewer records waiting.
            side = min((s for s in sides.values() if not s.ended), key=lambda s: len(s.waiting))
            other = sides[_OTHER[side.name]]
            batch = next(side.batches, None)
            if batch is None:
                side.ended = True
                # Nothing more will come from this side for the other's waiting records.
                self._done(self._look_up(other, len(other.waiting)))
            else:
                self._done(self._read(side, other, batch))

    def _read(self, side: _Side, other: _Side, batch: list[Record]) -> dict[Pass, list[str]]:
        """Pair the batch's records with the other side's waiting ones; the rest wait in turn
        (or are looked up at once when the other scan has ended). Returns the ids compared."""
        done = self.checkpoint.compared(side.name, [r.id for r in batch]) if self.checkpoint else set()
        pairs: list[tuple[Record, Record]] = []  # (the primary's record, the secondary's)
        for r in batch:
            if r.id in done:
                continue
            theirs = other.waiting.pop(r.id, None)
            if theirs is None:
                side.waiting[r.id] = r
            else:
                pairs.append((r, theirs) if side.name == "primary" else (theirs, r))
        self._compare(pairs)
        compared: dict[Pass, list[str]] = {
            "primary": [p[0].id for p in pairs],
            "secondary": [p[1].id for p in pairs],
        }
        limit = 0 if other.ended else _WAITING_BATCHES * self.batch_size
        compared[side.name] += self._look_up(side, len(side.waiting) - limit)[side.name]
        return compared

    def _look_up(self, side: _Side, n: int) -> dict[Pass, list[str]]:
        """Compare the side's `n` oldest waiting records with what the other store holds for
        their ids now. From the primary's side this finds missing ids and differing records,
        from the secondary's extra ids (the primary's side compares the rest)."""
        ids = list(itertools.islice(side.waiting, max(n, 0)))
        other = self.stores[self.roles[_OTHER[side.name]]]
        for start in range(0, len(ids), self.batch_size):
            chunk = [side.waiting.pop(i) for i in ids[start : start + self.batch_size]]
            found = {r.id: r for r in other.get([r.id for r in chunk])}
            if side.name == "primary":
                missing = [r.id for r in chunk if r.id not in found]
                self._compare([(r, found[r.id]) for r in chunk if r.id in found], missing)
            else:
                extra = [r.id for r in chunk if r.id not in found]
                if extra:
                    self._confirm("secondary", extra)
        compared: dict[Pass, list[str]] = {"primary": [], "secondary": []}
        compared[side.name] = ids
        return compared

    def _compare(self, pairs: list[tuple[Record, Record]], missing: Sequence[str] = ()) -> None:
        """Confirm the pairs that differ, and the primary's ids the secondary lacks."""
        differs = _vectors_differ(pairs, self.metric, self.tally.tolerance)
        suspects = [*missing]
        for (mine, theirs), vector_differs in zip(pairs, differs, strict=True):
            if self._kind("primary", mine, theirs, vector_differs) is not None:
                suspects.append(mine.id)
        if suspects:
            self._confirm("primary", suspects)

    def _done(self, compared: dict[Pass, list[str]]) -> None:
        """Count what was compared, save it with the checkpoint, report progress."""
        if not any(compared.values()):
            return
        for side, ids in compared.items():
            self.tally.checked[side] += len(ids)
        if self.checkpoint is not None:
            self.checkpoint.save(self.tally, compared)
        if self.on_progress is not None:
            count = sum(self.tally.checked.values())
            elapsed = time.monotonic() - self.started
            self.on_progress(Progress(count, max(count, self.total), elapsed, self.resumed))

    def _kind(
        self, stage: Pass, mine: Record | None, theirs: Record | None, vector_differs: bool | None = None
    ) -> DiffKind | None:
        """The difference `stage` reports between the primary's and the secondary's record."""
        kind = _difference(mine, theirs, self.metric, self.tally.tolerance, vector_differs)
        return kind if kind in _PASS_KINDS[stage] else None

    def _confirm(self, stage: Pass, ids: list[str]) -> None:
        """Read the suspects again with live writes held off: what differs now is real."""
        with self.outbox.write_lock():
            mine = {r.id: r for r in self.stores[self.roles["primary"]].get(ids)}
            theirs = {r.id: r for r in self.stores[self.roles["secondary"]].get(ids)}
            confirmed = {i: self._kind(stage, mine.get(i), theirs.get(i)) for i in ids}
            real = [i for i, kind in confirmed.items() if kind is not None]
            if self.tally.repair and real:
                waiting = self.outbox.waiting()
                todo = [i for i in real if i not in waiting]
                if todo:
                    self.outbox.record(todo, _REPAIR_OP[stage], self.tally.primary)
        for i, kind in confirmed.items():
            if kind is not None:
                self.tally.counts[kind] += 1
                if len(self.tally.samples[kind]) < self.sample:
                    self.tally.samples[kind].append(i)


def verify(
    legacy: VectorStore,
    target: VectorStore,
    outbox: Outbox,
    *,
    primary: Role = "legacy",
    repair: bool = False,
    tolerance: float = 1e-6,
    sample: int = 5,
    batch_size: int = DEFAULT_BATCH_SIZE,
    checkpoint: Path | None = None,
    restart: bool = False,
    on_progress: ProgressCallback | None = None,
) -> VerifyResult:
    """Compare the two stores id by id; with `repair`, make the secondary equal to `primary`
    (the phase's source of truth: legacy until `target-primary`) and verify again.

    With `checkpoint`, a run interrupted at any point continues where it stopped (unless
    `restart`); the file is removed once the verify it belongs to has finished."""
    started = time.monotonic()
    stores: dict[Role, VectorStore] = {"legacy": legacy, "target": target}

    def one_pass(fix: bool) -> VerifyResult:
        fresh = _Tally(collection=legacy.spec.name, primary=primary, repair=fix, tolerance=tolerance)
        saved = None if checkpoint is None else _Checkpoint(checkpoint)
        try:
            tally = fresh if saved is None else saved.resume(fresh, restart=restart)
            _Verifier(
                stores,
                outbox,
                tally,
                sample=sample,
                batch_size=batch_size,
                checkpoint=saved,
                on_progress=on_progress,
            ).run()
        except BaseException:
            if saved is not None:
                saved.close()
            raise
        if saved is not None:
            saved.remove()
        return VerifyResult(
            primary=primary,
            secondary=other_role(primary),
            checked=tally.checked,
            counts=tally.counts,
            samples=tally.samples,
            seconds=time.monotonic() - started,
        )

    found = one_pass(repair)
    if not repair:
        return found
    repaired = replay_until_drained(outbox, stores, batch_size)
    again = one_pass(False)
    return replace(again, before=found.counts, repaired=repaired)


def write_verify_state(path: Path, result: VerifyResult, **context: Any) -> None:
    """Record the result of the last verify (and `context`: collection, store URLs) for
    `dualvec flags set`, which refuses to send reads to an unverified target."""
    write_json_atomic(path, {**result.as_dict(), **context, "finished_at": time.time()})


def read_verify_state(path: Path) -> dict[str, Any] | None:
    """The last verify's result as written by `write_verify_state`, None if none ran."""
    state = read_json_state(path)
    if state is not None and not isinstance(state.get("clean"), bool):
        raise ConfigError(f"{path} is not a verify result; delete it and run `dualvec verify`")
    return state
