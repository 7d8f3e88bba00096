"""Verify: prove both stores hold the same records (ids, vectors, metadata), or say where not.

Two passes in memory that does not grow with the collection: the primary is scanned in
batches and the same ids are read from the secondary with `get` (finding ids missing from the
secondary, and vectors or metadata that differ); then the secondary is scanned and its ids are
read from the primary (finding extra ids). Vectors are compared with `distance.same_vector` in
the collection's metric (in a cosine collection only the direction counts).

A live writer can land between the two reads of one id and make a false difference, so every
difference is read again from both stores under `outbox.write_lock()`, which live writers hold
around their primary and secondary writes: what still differs then is real.

`repair=True` records an outbox intent, with the primary as the source, for each confirmed
difference (ids already waiting keep their own source), runs the replayer until the outbox is
empty, and verifies again: the result is that second verify's, with what was found before and
what the repair did.

A checkpoint (JSON, replaced atomically after each batch) makes a long verify resumable: it
holds the pass, the counts and samples so far, and the ids of the last records compared. A
resumed pass skips records until it meets one of those ids, then compares every record that
is not one of them. Scans keep the relative order of rows they do not rewrite (rewritten rows
move to the end, where they are compared again), so everything after a surviving anchor is
new to this pass; when no anchor survives, the pass starts over.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, get_args

import numpy as np

from dualvec.backfill import (
    DEFAULT_BATCH_SIZE,
    Progress,
    ProgressCallback,
    read_json_state,
    waiting_sources,
)
from dualvec.distance import same_vector
from dualvec.errors import ConfigError
from dualvec.flags import write_json_atomic
from dualvec.outbox import Op, Outbox, Role
from dualvec.protocol import VectorStore
from dualvec.records import Record
from dualvec.replay import ReplayResult, replay_once

__all__ = ["DiffKind", "VerifyResult", "read_verify_state", "verify", "write_verify_state"]

DiffKind = Literal["missing", "extra", "vector", "metadata"]
KINDS: tuple[DiffKind, ...] = get_args(DiffKind)
Pass = Literal["primary", "secondary"]
# What each pass reports: the primary's pass finds everything but extra ids, which the
# secondary's pass finds (so a difference is never counted twice).
_PASS_KINDS: dict[Pass, frozenset[DiffKind]] = {
    "primary": frozenset({"missing", "vector", "metadata"}),
    "secondary": frozenset({"extra"}),
}
_REPAIR_OP: dict[Pass, Op] = {"primary": "upsert", "secondary": "delete"}
_ANCHORS = 64


def _other(role: Role) -> Role:
    return "target" if role == "legacy" else "legacy"


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
    """A verify's progress and findings; what the checkpoint holds."""

    primary: Role
    repair: bool
    tolerance: float
    stage: Pass = "primary"
    checked: dict[Pass, int] = field(default_factory=lambda: {"primary": 0, "secondary": 0})
    counts: dict[DiffKind, int] = field(default_factory=lambda: dict.fromkeys(KINDS, 0))
    samples: dict[DiffKind, list[str]] = field(default_factory=lambda: {k: [] for k in KINDS})
    anchors: list[str] = field(default_factory=list)

    def restart_stage(self) -> None:
        self.checked[self.stage] = 0
        self.anchors = []
        for kind in _PASS_KINDS[self.stage]:
            self.counts[kind] = 0
            self.samples[kind] = []


def _load_tally(path: Path | None, fresh: _Tally) -> _Tally:
    """The checkpoint's tally when it was made with the same settings, else a fresh one."""
    data = None if path is None else read_json_state(path)
    if data is None:
        return fresh
    try:
        tally = _Tally(**data)
    except TypeError:
        return fresh
    same = (tally.primary, tally.repair, tally.tolerance) == (fresh.primary, fresh.repair, fresh.tolerance)
    return tally if same else fresh


def _difference(mine: Record | None, theirs: Record | None, metric: Any, tolerance: float) -> DiffKind | None:
    """How the secondary's record differs from the primary's, None when it does not."""
    if mine is None:
        return None if theirs is None else "extra"
    if theirs is None:
        return "missing"
    a = np.asarray(mine.vector, dtype=np.float32)
    b = np.asarray(theirs.vector, dtype=np.float32)
    if a.shape != b.shape or not same_vector(a, b, metric, tolerance):
        return "vector"
    return "metadata" if mine.metadata != theirs.metadata else None


class _Verifier:
    def __init__(
        self,
        stores: dict[Role, VectorStore],
        outbox: Outbox,
        tally: _Tally,
        *,
        sample: int,
        batch_size: int,
        checkpoint: Path | None,
        on_progress: ProgressCallback | None,
    ) -> None:
        self.stores, self.outbox, self.tally = stores, outbox, tally
        self.roles: dict[Pass, Role] = {"primary": tally.primary, "secondary": _other(tally.primary)}
        self.metric = stores[tally.primary].spec.metric
        self.sample, self.batch_size = sample, batch_size
        self.checkpoint, self.on_progress = checkpoint, on_progress
        self.started = time.monotonic()
        self.total = sum(store.count() for store in stores.values())
        self.resumed = sum(tally.checked.values())

    def run(self) -> None:
        if self.tally.stage == "primary":
            self._stage("primary")
            self.tally.stage = "secondary"
            self.tally.anchors = []
            self._save()
        self._stage("secondary")

    def _stage(self, stage: Pass) -> None:
        while not self._compare_all(stage):
            self.tally.restart_stage()
            self._save()

    def _compare_all(self, stage: Pass) -> bool:
        """Compare what this stage has not compared yet; False when the resume point is lost."""
        tally = self.tally
        anchors = set(tally.anchors)
        recent: deque[str] = deque(tally.anchors, maxlen=_ANCHORS)
        resuming = bool(anchors)
        for batch in self._scan(stage):
            start = 0
            if resuming:
                hit = [i for i, r in enumerate(batch) if r.id in anchors]
                if not hit:
                    continue
                start, resuming = hit[0], False
            todo = [r for r in batch[start:] if r.id not in anchors]
            if not todo:
                continue
            self._compare(stage, todo)
            tally.checked[stage] += len(todo)
            recent.extend(r.id for r in todo)
            tally.anchors = list(recent)
            self._save()
            if self.on_progress is not None:
                done = sum(tally.checked.values())
                self.on_progress(
                    Progress(done, max(done, self.total), time.monotonic() - self.started, self.resumed)
                )
        return not resuming

    def _scan(self, stage: Pass) -> Iterator[list[Record]]:
        return self.stores[self.roles[stage]].scan(self.batch_size)

    def _compare(self, stage: Pass, batch: Sequence[Record]) -> None:
        other = {r.id: r for r in self.stores[_other(self.roles[stage])].get([r.id for r in batch])}
        # (the primary's record, the secondary's) for each id
        pairs: dict[str, tuple[Record | None, Record | None]] = {
            r.id: (r, other.get(r.id)) if stage == "primary" else (other.get(r.id), r) for r in batch
        }
        suspects = [i for i, pair in pairs.items() if self._kind(stage, *pair) is not None]
        if suspects:
            self._confirm(stage, suspects)

    def _kind(self, stage: Pass, mine: Record | None, theirs: Record | None) -> DiffKind | None:
        """The difference this stage reports between the primary's and the secondary's record."""
        kind = _difference(mine, theirs, self.metric, self.tally.tolerance)
        return kind if kind in _PASS_KINDS[stage] else None

    def _confirm(self, stage: Pass, ids: list[str]) -> None:
        """Read the suspects again with live writes held off: what differs now is real."""
        with self.outbox.write_lock():
            mine = {r.id: r for r in self.stores[self.roles["primary"]].get(ids)}
            theirs = {r.id: r for r in self.stores[self.roles["secondary"]].get(ids)}
            confirmed = {i: self._kind(stage, mine.get(i), theirs.get(i)) for i in ids}
            real = [i for i, kind in confirmed.items() if kind is not None]
            if self.tally.repair and real:
                waiting = waiting_sources(self.outbox)
                todo = [i for i in real if i not in waiting]
                if todo:
                    self.outbox.record(todo, _REPAIR_OP[stage], self.tally.primary)
        for i, kind in confirmed.items():
            if kind is not None:
                self.tally.counts[kind] += 1
                if len(self.tally.samples[kind]) < self.sample:
                    self.tally.samples[kind].append(i)

    def _save(self) -> None:
        if self.checkpoint is not None:
            write_json_atomic(self.checkpoint, asdict(self.tally))


def _replay_all(outbox: Outbox, stores: dict[Role, VectorStore], batch_size: int) -> ReplayResult:
    """Replay until a pass under the lock finds nothing to do, or something fails (it stays in
    the outbox, and the verify that follows reports it)."""
    total = ReplayResult()
    while True:
        result = replay_once(outbox, stores, batch_size)
        total += result
        if result == ReplayResult() or result.failed:
            return total


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
        fresh = _Tally(primary=primary, repair=fix, tolerance=tolerance)
        tally = fresh if restart else _load_tally(checkpoint, fresh)
        _Verifier(
            stores,
            outbox,
            tally,
            sample=sample,
            batch_size=batch_size,
            checkpoint=checkpoint,
            on_progress=on_progress,
        ).run()
        if checkpoint is not None:
            checkpoint.unlink(missing_ok=True)
        return VerifyResult(
            primary=primary,
            secondary=_other(primary),
            checked=tally.checked,
            counts=tally.counts,
            samples=tally.samples,
            seconds=time.monotonic() - started,
        )

    found = one_pass(repair)
    if not repair:
        return found
    repaired = _replay_all(outbox, stores, batch_size)
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
