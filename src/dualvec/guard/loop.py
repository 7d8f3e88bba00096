"""The guard inside `dualvec serve` (``[guard] enabled = true``): every interval it judges each
collection whose reads a rollback would move back to legacy (phase dual with read_percent above
0, or target-primary), whether or not a ramp is running, and rolls back one whose checks fail
``failure_limit`` intervals in a row.

In a row, not in total as in a ramp: this guard never finishes, and a total would let rare
blips add up over weeks. A passing interval resets the count; an interval without data counts
as failed under ``on_no_data = "fail"``, passes under ``"ignore"``, and under ``"pause"`` leaves
the count as it was. A rolled-back collection sits at read_percent 0 and is skipped until
someone ramps it again.

It reads the process's own metrics (`ExpositionSource.of_metrics`) unless given another source,
so an application that embeds a `Migration` can run it too.
"""

from __future__ import annotations

import threading

from dualvec.closing import Closing
from dualvec.errors import DualvecError
from dualvec.guard.checks import Evaluation, evaluate
from dualvec.guard.ramp import record_evaluation
from dualvec.guard.sources import ExpositionSource, SignalSource, SignalsUnavailable, Window
from dualvec.logs import get_logger
from dualvec.migration import Migration
from dualvec.phases import collection_flags, rollback_flags
from dualvec.settings import Flags, GuardSettings, Phase

__all__ = ["ContinuousGuard", "watched"]

log = get_logger("dualvec.guard")


def watched(flags: Flags) -> bool:
    """Whether a rollback would move any read: the collections the guard judges."""
    return flags.phase is Phase.TARGET_PRIMARY or (flags.phase is Phase.DUAL and flags.read_percent > 0)


class ContinuousGuard(Closing):
    """A thread judging every collection of `migration` each `guard.interval` seconds."""

    def __init__(
        self,
        migration: Migration,
        guard: GuardSettings | None = None,
        *,
        source: SignalSource | None = None,
    ) -> None:
        self._migration = migration
        self._guard = guard or migration.settings.guard
        self._source = source or ExpositionSource.of_metrics(migration.metrics)
        self._failed = dict.fromkeys(migration.routers, 0)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="dualvec-guard", daemon=True)
        self._thread.start()
        log.info("guard_started", interval_seconds=self._guard.interval, collections=sorted(self._failed))

    def _open(self) -> dict[str, Window | str]:
        windows: dict[str, Window | str] = {}
        for name in self._failed:
            try:
                windows[name] = self._source.open(name)
            except SignalsUnavailable as exc:
                windows[name] = str(exc)
        return windows

    def _run(self) -> None:
        windows = self._open()
        while not self._stop.wait(self._guard.interval):
            for name, window in windows.items():
                try:
                    self._judge(name, window)
                except Exception as exc:  # the guard must outlive any one failure
                    log.error("guard_failed", collection=name, error=repr(exc))
            windows = self._open()

    def _judge(self, name: str, window: Window | str) -> None:
        settings = self._migration.settings
        flags = collection_flags(settings, name).flags
        if not watched(flags):
            self._failed[name] = 0
            return
        if isinstance(window, str):
            evaluation = Evaluation.unavailable(window)
        else:
            try:
                evaluation = evaluate(window.close(), self._guard)
            except SignalsUnavailable as exc:
                evaluation = Evaluation.unavailable(str(exc))
        record_evaluation(self._migration.metrics.collection(name), evaluation)
        counts = evaluation.verdict == "fail" or (
            evaluation.verdict == "no_data" and self._guard.on_no_data == "fail"
        )
        if counts:
            self._failed[name] += 1
        elif evaluation.verdict == "pass" or self._guard.on_no_data == "ignore":
            self._failed[name] = 0
        log.info(
            "guard_interval",
            collection=name,
            read_percent=flags.read_percent,
            verdict=evaluation.verdict,
            reason=evaluation.reason,
            failed_checks=self._failed[name],
        )
        if self._failed[name] < self._guard.failure_limit:
            return
        assert evaluation.cause is not None  # only a failed interval counts
        try:
            rolled = rollback_flags(settings, name)[name].flags
        except DualvecError as exc:
            log.error("guard_rollback_failed", collection=name, error=str(exc))
            return
        self._failed[name] = 0
        self._migration.metrics.collection(name).guard_rolled_back(evaluation.cause)
        log.warning(
            "guard_rolled_back",
            collection=name,
            reason=evaluation.reason,
            cause=evaluation.cause,
            phase=rolled.phase.value,
            read_percent=rolled.read_percent,
        )

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)
