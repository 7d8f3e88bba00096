"""Backfill and verify as jobs of the service: a background thread each, on the stores and outbox
the service holds open (so a store only one process may open, a Qdrant local folder, is copied
and compared by the process that holds it), that outlives the request that started it.

A job is `running`, then `done` (its `result` is what `dualvec backfill|verify --json` prints)
or `failed` (its `error` is in the service's error shape). `progress` holds, per collection,
how far the pass has got. The service keeps the last `_KEPT` finished jobs.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from dualvec.backfill import backfill
from dualvec.errors import DualvecError
from dualvec.logs import get_logger
from dualvec.migration import Migration
from dualvec.phases import settle_seconds, verify_collection
from dualvec.progress import Progress, ProgressCallback

__all__ = ["Job", "JobKind", "Jobs", "backfill_job", "verify_job"]

log = get_logger("dualvec.service")

JobKind = Literal["backfill", "verify"]
JobState = Literal["running", "done", "failed"]
# Finished jobs kept for clients to read back; the oldest go first.
_KEPT = 100
# How long a stopping service waits for a job to reach its next batch and stop there.
_STOP_SECONDS = 30.0


class Stopped(Exception):
    """The service is stopping: the job stops at its batch boundary (its checkpoint resumes it)."""


@dataclass
class Job:
    """One backfill or verify over some collections, and what a client may read of it."""

    id: str
    kind: JobKind
    collections: list[str]
    state: JobState = "running"
    progress: dict[str, dict[str, float]] = field(default_factory=dict)
    result: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    started_at: float = field(default_factory=time.time)
    finished_at: float | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def as_dict(self) -> dict[str, Any]:
        with self._lock:
            return {
                "id": self.id,
                "kind": self.kind,
                "collections": list(self.collections),
                "state": self.state,
                "progress": {name: dict(entry) for name, entry in self.progress.items()},
                "result": self.result,
                "error": self.error,
                "started_at": self.started_at,
                "finished_at": self.finished_at,
            }

    def reporter(self, collection: str, stopping: threading.Event) -> ProgressCallback:
        """A progress callback keeping `progress[collection]` current; it stops the pass (at a
        batch boundary) once the service is stopping."""

        def report(progress: Progress) -> None:
            entry = {
                "done": progress.done,
                "total": progress.total,
                "elapsed": round(progress.elapsed, 3),
                "resumed": progress.resumed,
                "rate": round(progress.rate, 1),
            }
            with self._lock:
                self.progress[collection] = entry
            if stopping.is_set():
                raise Stopped("the service is stopping; submit the job again to resume from its checkpoint")

        return report

    def finish(self, result: dict[str, Any] | None, error: dict[str, Any] | None) -> None:
        with self._lock:
            self.state = "failed" if error else "done"
            self.result, self.error = result, error
            self.finished_at = time.time()


Work = Callable[[Job, threading.Event], dict[str, Any]]


class Jobs:
    """The jobs of one service: started, looked up, and stopped with the service."""

    def __init__(self) -> None:
        self._jobs: dict[str, Job] = {}
        self._threads: dict[str, threading.Thread] = {}
        self._lock = threading.Lock()
        self._stopping = threading.Event()

    def busy(self, kind: JobKind, collections: list[str]) -> Job | None:
        """A running job of `kind` over one of `collections` (two would share a checkpoint)."""
        with self._lock:
            for job in self._jobs.values():
                if job.kind == kind and job.state == "running" and set(job.collections) & set(collections):
                    return job
        return None

    def start(self, kind: JobKind, collections: list[str], work: Work) -> Job:
        job = Job(uuid.uuid4().hex, kind, collections)

        def run() -> None:
            try:
                result = work(job, self._stopping)
            except Stopped as exc:
                job.finish(None, {"type": "Stopped", "message": str(exc), "field": None})
            except DualvecError as exc:
                job.finish(None, {"type": type(exc).__name__, "message": str(exc), "field": None})
            except Exception as exc:
                log.error("job_failed", job=job.id, kind=kind, error=repr(exc))
                job.finish(None, {"type": "InternalError", "message": repr(exc), "field": None})
            else:
                job.finish(result, None)
            log.info("job_finished", job=job.id, kind=kind, state=job.state)

        thread = threading.Thread(target=run, name=f"dualvec-{kind}-{job.id[:8]}", daemon=True)
        with self._lock:
            self._jobs[job.id] = job
            self._threads[job.id] = thread
            self._forget_old()
        log.info("job_started", job=job.id, kind=kind, collections=collections)
        thread.start()
        return job

    def get(self, job_id: str) -> Job | None:
        with self._lock:
            return self._jobs.get(job_id)

    def stop(self) -> None:
        """Ask every running job to stop at its next batch, and wait for it, before the stores
        close under it."""
        self._stopping.set()
        with self._lock:
            threads = list(self._threads.values())
        deadline = time.monotonic() + _STOP_SECONDS
        for thread in threads:
            thread.join(timeout=max(0.0, deadline - time.monotonic()))

    def _forget_old(self) -> None:
        finished = [job_id for job_id, job in self._jobs.items() if job.state != "running"]
        for job_id in finished[: max(0, len(finished) - _KEPT)]:
            del self._jobs[job_id]
            self._threads.pop(job_id, None)


def _settle(migration: Migration, stopping: threading.Event) -> None:
    """Wait, as `dualvec backfill` does, until every process has seen the last flag change."""
    if stopping.wait(settle_seconds(migration.settings)):
        raise Stopped("the service is stopping")


def backfill_job(migration: Migration, names: list[str], *, batch_size: int, restart: bool) -> Work:
    def work(job: Job, stopping: threading.Event) -> dict[str, Any]:
        _settle(migration, stopping)
        summary: dict[str, Any] = {}
        for name in names:
            router = migration.routers[name]
            path = migration.settings.state_file("backfill", name)
            result = backfill(
                router.stores["legacy"],
                router.stores["target"],
                router.outbox,
                batch_size=batch_size,
                checkpoint=path,
                restart=restart,
                on_progress=job.reporter(name, stopping),
            )
            summary[name] = {**result.as_dict(), "checkpoint": str(path)}
        return {"collections": summary}

    return work


def verify_job(
    migration: Migration,
    names: list[str],
    *,
    repair: bool,
    sample: int,
    tolerance: float,
    batch_size: int,
    restart: bool,
) -> Work:
    def work(job: Job, stopping: threading.Event) -> dict[str, Any]:
        settings = migration.settings
        results: dict[str, Any] = {}
        for name in names:
            router = migration.routers[name]
            result = verify_collection(
                settings,
                name,
                router.stores,
                router.outbox,
                repair=repair,
                tolerance=tolerance,
                sample=sample,
                batch_size=batch_size,
                restart=restart,
                on_progress=job.reporter(name, stopping),
            )
            results[name] = result.as_dict()
        return {"collections": results, "clean": all(entry["clean"] for entry in results.values())}

    return work
