"""Ramps run by a service (`dualvec --server URL ramp`): a thread each, on the service's own
metrics and flag file, that outlives the request that started it.

A run is `running`, then `completed`, `rolled_back`, `stopped` (asked to, or the service is
stopping; the flags stay where the ramp left them) or `failed` (its `error` says why, e.g. the
phase rules refused a step). `events` lists what the ramp reported so far, for a client to
print; `result` is the summary `dualvec ramp --json` prints.
"""

from __future__ import annotations

import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Literal

from dualvec.errors import ConfigError, DualvecError
from dualvec.guard.ramp import FlagControl, Ramp, RampPlan
from dualvec.guard.sources import SignalSource
from dualvec.logs import get_logger
from dualvec.metrics import CollectionMetrics

__all__ = ["RampRun", "RampRuns"]

log = get_logger("dualvec.guard")

RunState = Literal["running", "completed", "rolled_back", "stopped", "failed"]
# Finished runs kept for clients to read back; the oldest go first.
_KEPT = 100
_STOP_SECONDS = 30.0


@dataclass
class RampRun:
    id: str
    collection: str
    state: RunState = "running"
    events: list[dict[str, Any]] = field(default_factory=list)
    result: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    started_at: float = field(default_factory=time.time)
    finished_at: float | None = None
    stop: threading.Event = field(default_factory=threading.Event, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, event: dict[str, Any]) -> None:
        with self._lock:
            self.events.append(event)

    def finish(self, state: RunState, result: dict[str, Any] | None, error: dict[str, Any] | None) -> None:
        with self._lock:
            self.state, self.result, self.error = state, result, error
            self.finished_at = time.time()

    def as_dict(self) -> dict[str, Any]:
        with self._lock:
            return {
                "id": self.id,
                "collection": self.collection,
                "state": self.state,
                "events": list(self.events),
                "result": self.result,
                "error": self.error,
                "started_at": self.started_at,
                "finished_at": self.finished_at,
            }


class RampRuns:
    """The ramps of one service: started, looked up, stopped one by one or with the service."""

    def __init__(self) -> None:
        self._runs: dict[str, RampRun] = {}
        self._threads: dict[str, threading.Thread] = {}
        self._lock = threading.Lock()

    def start(
        self,
        plan: RampPlan,
        control: FlagControl,
        source: SignalSource,
        metrics: CollectionMetrics | None,
    ) -> RampRun:
        """Start a ramp; `ConfigError` while another one ramps the same collection."""
        run = RampRun(uuid.uuid4().hex, plan.collection)
        ramp = Ramp(plan, control, source, metrics=metrics, on_event=run.add, stop=run.stop)

        def work() -> None:
            try:
                result = ramp.run()
            except DualvecError as exc:
                run.finish("failed", None, {"type": type(exc).__name__, "message": str(exc), "field": None})
            except Exception as exc:
                log.error("ramp_failed", run=run.id, error=repr(exc))
                run.finish("failed", None, {"type": "InternalError", "message": repr(exc), "field": None})
            else:
                run.finish(result["outcome"], result, None)

        thread = threading.Thread(target=work, name=f"dualvec-ramp-{run.id[:8]}", daemon=True)
        with self._lock:
            for other in self._runs.values():
                if other.collection == plan.collection and other.state == "running":
                    raise ConfigError(
                        f"ramp {other.id} of collection {plan.collection!r} is still running; "
                        "wait for it or stop it first"
                    )
            self._runs[run.id] = run
            self._threads[run.id] = thread
            self._forget_old()
        thread.start()
        return run

    def get(self, run_id: str) -> RampRun | None:
        with self._lock:
            return self._runs.get(run_id)

    def stop(self, run_id: str) -> RampRun | None:
        """Stop one run at once (its current interval is not judged) and wait for it."""
        with self._lock:
            run, thread = self._runs.get(run_id), self._threads.get(run_id)
        if run is None or thread is None:
            return None
        run.stop.set()
        thread.join(timeout=_STOP_SECONDS)
        return run

    def close(self) -> None:
        """Stop every run, before the stores and flags they use go away."""
        with self._lock:
            runs = list(self._runs.values())
            threads = list(self._threads.values())
        for run in runs:
            run.stop.set()
        deadline = time.monotonic() + _STOP_SECONDS
        for thread in threads:
            thread.join(timeout=max(0.0, deadline - time.monotonic()))

    def _forget_old(self) -> None:
        finished = [run_id for run_id, run in self._runs.items() if run.state != "running"]
        for run_id in finished[: max(0, len(finished) - _KEPT)]:
            del self._runs[run_id]
            self._threads.pop(run_id, None)
