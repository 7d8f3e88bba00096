"""`dualvec ramp`: raise a collection's read_percent step by step, judging each interval by the
guard's checks, and roll the collection back when they fail too often.

The vocabulary is Flagger's and Argo Rollouts': at each step the ramp waits one interval and
evaluates it (`dualvec.guard.checks`). A passing interval advances to the next step; the last
step is judged too before the ramp completes. A failed interval keeps the ramp at its step and
counts: when the failed intervals of the whole ramp reach ``failure_limit``, the collection is
rolled back through the phase rules (read_percent 0; target-primary back to dual) and the ramp
ends with the reason. An interval without enough data follows ``on_no_data``: ``fail`` counts
it as failed, ``pause`` holds the step and waits for another interval (as long as it takes;
interrupting leaves the flags where they are), ``ignore`` passes it.

Every flag change goes through `dualvec.phases` (a clean verify before reads move, as for
`dualvec flags set`). A ramp resumes where the flags stand: steps at or below the current
read_percent are skipped. If something else changes the collection's flags meanwhile (an
operator, the guard inside `dualvec serve`), the ramp stops rather than fight it. A dry run
evaluates and reports every interval and decision, and changes no flag.

Every interval is a log event and a ``dualvec_guard_checks_total`` sample; every rollback a
``dualvec_guard_rollbacks_total`` one (not in a dry run, which rolls nothing back).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from itertools import pairwise
from typing import Any, Literal, Protocol

from dualvec.errors import ConfigError
from dualvec.guard.checks import Evaluation, evaluate
from dualvec.guard.sources import SignalSource, SignalsUnavailable
from dualvec.logs import get_logger
from dualvec.metrics import CollectionMetrics
from dualvec.phases import change_flags, collection_flags, rollback_flags
from dualvec.settings import Flags, GuardSettings, Phase, Settings

__all__ = [
    "FlagControl",
    "PhaseRulesControl",
    "Ramp",
    "RampOutcome",
    "RampPlan",
    "parse_steps",
    "record_evaluation",
]

log = get_logger("dualvec.guard")

RampOutcome = Literal["completed", "rolled_back", "stopped"]
EventSink = Callable[[dict[str, Any]], None]


def parse_steps(text: str) -> tuple[float, ...]:
    """ "10,25,50,100" as rising percentages in (0, 100]; ValueError naming what is wrong."""
    try:
        steps = tuple(float(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise ValueError(
            f"expected percentages separated by commas, such as 10,25,50,100; got {text!r}"
        ) from None
    if not steps:
        raise ValueError("expected at least one step, such as 10,25,50,100")
    if any(not 0 < step <= 100 for step in steps):
        raise ValueError(f"every step must be a read_percent in (0, 100]; got {text!r}")
    if any(b <= a for a, b in pairwise(steps)):
        raise ValueError(f"steps must rise, each above the one before; got {text!r}")
    return steps


class FlagControl(Protocol):
    """How a ramp reads and changes one collection's flags."""

    def current(self) -> Flags: ...

    def set_read_percent(self, percent: float) -> Flags:
        """Through the phase rules; `ConfigError` when they refuse."""

    def rollback(self) -> Flags: ...


@dataclass(frozen=True)
class PhaseRulesControl:
    """The flag file of a deployment, changed through `dualvec.phases` as every command does."""

    settings: Settings
    collection: str

    def current(self) -> Flags:
        return collection_flags(self.settings, self.collection).flags

    def set_read_percent(self, percent: float) -> Flags:
        changed = change_flags(self.settings, {"read_percent": percent}, collection=self.collection)
        return changed[self.collection].flags

    def rollback(self) -> Flags:
        return rollback_flags(self.settings, self.collection)[self.collection].flags


@dataclass(frozen=True)
class RampPlan:
    """What to ramp, how, and against which limits."""

    collection: str
    steps: tuple[float, ...]
    interval_seconds: float
    guard: GuardSettings
    dry_run: bool = False


def record_evaluation(metrics: CollectionMetrics | None, evaluation: Evaluation) -> None:
    """Count an interval's checks and keep what each measured."""
    if metrics is None:
        return
    for check in evaluation.checks:
        metrics.guard_checked(check.check, check.result, check.value, check.threshold)


def _flags_dict(flags: Flags) -> dict[str, Any]:
    return {"phase": flags.phase.value, "read_percent": flags.read_percent}


class Ramp:
    """One ramp of one collection; `run` blocks until it completes, rolls back or is stopped."""

    def __init__(
        self,
        plan: RampPlan,
        control: FlagControl,
        source: SignalSource,
        *,
        metrics: CollectionMetrics | None = None,
        on_event: EventSink = lambda event: None,
        stop: threading.Event | None = None,
    ) -> None:
        self.plan = plan
        self._control = control
        self._source = source
        self._metrics = metrics
        self._on_event = on_event
        self._stop = stop or threading.Event()
        self._intervals: list[dict[str, Any]] = []
        self._failed = 0

    def _emit(self, event: dict[str, Any]) -> None:
        self._on_event(event)

    def _check_start(self, flags: Flags) -> None:
        name = self.plan.collection
        if flags.phase not in (Phase.DUAL, Phase.TARGET_PRIMARY):
            raise ConfigError(
                f"collection {name!r} is in phase {flags.phase.value}: a ramp moves reads while both "
                f"stores receive every write; run `dualvec flags set --collection {name} phase=dual` "
                "(then backfill and verify) first"
            )
        if flags.shadow_percent <= 0:
            raise ConfigError(
                f"collection {name!r} has shadow_percent 0: no read is compared, so the guard would "
                f"see no data; run `dualvec flags set --collection {name} shadow_percent=100` first"
            )

    def _expect(self, expected: Flags) -> Flags:
        """The flags now, which must be the ones the ramp left: another writer stops it."""
        now = self._control.current()
        if (now.phase, now.read_percent) != (expected.phase, expected.read_percent):
            raise ConfigError(
                f"collection {self.plan.collection!r} changed under the ramp: phase {now.phase.value}, "
                f"read_percent {now.read_percent:g} (the ramp left phase {expected.phase.value}, "
                f"read_percent {expected.read_percent:g}); stopping, the flags stay as they are"
            )
        return now

    def _measure(self) -> Evaluation | None:
        """One interval's verdict; None when stopped meanwhile."""
        try:
            window = self._source.open(self.plan.collection)
        except SignalsUnavailable as exc:
            window, error = None, str(exc)
        if self._stop.wait(self.plan.interval_seconds):
            return None
        if window is not None:
            try:
                return evaluate(window.close(), self.plan.guard)
            except SignalsUnavailable as exc:
                error = str(exc)
        return Evaluation.unavailable(error)

    def _summary(self, outcome: RampOutcome, flags: Flags, evaluation: Evaluation | None) -> dict[str, Any]:
        return {
            "collection": self.plan.collection,
            "outcome": outcome,
            "dry_run": self.plan.dry_run,
            **_flags_dict(flags),
            "steps": list(self.plan.steps),
            "failed_checks": self._failed,
            "failure_limit": self.plan.guard.failure_limit,
            "reason": None if evaluation is None else evaluation.reason,
            "cause": None if evaluation is None else evaluation.cause,
            "source": self._source.name,
            "intervals": self._intervals,
        }

    def run(self) -> dict[str, Any]:
        """Ramp, and return the summary `dualvec ramp --json` prints."""
        plan, guard = self.plan, self.plan.guard
        flags = self._control.current()
        self._check_start(flags)
        steps = [step for step in plan.steps if step >= flags.read_percent]
        self._emit(
            {
                "event": "started",
                "collection": plan.collection,
                **_flags_dict(flags),
                "steps": list(plan.steps),
                "skipped": [step for step in plan.steps if step < flags.read_percent],
                "interval_seconds": plan.interval_seconds,
                "source": self._source.name,
                "dry_run": plan.dry_run,
                "guard": guard.model_dump(mode="json", exclude={"enabled", "interval"}),
            }
        )
        log.info("ramp_started", collection=plan.collection, steps=steps, dry_run=plan.dry_run)
        for index, step in enumerate(steps, start=1):
            flags = self._expect(flags)
            if step != flags.read_percent and not plan.dry_run:
                flags = self._control.set_read_percent(step)
            self._emit(
                {"event": "step", "step": index, "of": len(steps), "read_percent": step, **_flags_dict(flags)}
            )
            while True:
                evaluation = self._measure()
                if evaluation is None:
                    self._emit({"event": "stopped", **_flags_dict(flags)})
                    return self._summary("stopped", self._control.current(), None)
                flags = self._expect(flags)
                action = self._decide(evaluation)
                record_evaluation(self._metrics, evaluation)
                entry = {"step": index, "read_percent": step, "action": action, **evaluation.as_dict()}
                self._intervals.append(entry)
                self._emit(
                    {
                        "event": "interval",
                        **entry,
                        "failed_checks": self._failed,
                        "failure_limit": guard.failure_limit,
                    }
                )
                log.info(
                    "guard_interval",
                    collection=plan.collection,
                    read_percent=step,
                    verdict=evaluation.verdict,
                    action=action,
                    reason=evaluation.reason,
                    failed_checks=self._failed,
                )
                if action == "advance":
                    break
                if action == "rollback":
                    return self._roll_back(flags, evaluation)
        self._emit({"event": "completed", **_flags_dict(flags)})
        log.info("ramp_completed", collection=plan.collection, read_percent=flags.read_percent)
        return self._summary("completed", flags, None)

    def _decide(self, evaluation: Evaluation) -> Literal["advance", "hold", "pause", "rollback"]:
        """What an interval's verdict means for the ramp (and the failure count)."""
        verdict, policy = evaluation.verdict, self.plan.guard.on_no_data
        if verdict == "pass" or (verdict == "no_data" and policy == "ignore"):
            return "advance"
        if verdict == "no_data" and policy == "pause":
            return "pause"
        self._failed += 1
        return "rollback" if self._failed >= self.plan.guard.failure_limit else "hold"

    def _roll_back(self, flags: Flags, evaluation: Evaluation) -> dict[str, Any]:
        plan = self.plan
        assert evaluation.cause is not None  # a failed interval always names its cause
        if not plan.dry_run:
            flags = self._control.rollback()
            if self._metrics is not None:
                self._metrics.guard_rolled_back(evaluation.cause)
        self._emit(
            {
                "event": "rolled_back",
                "reason": evaluation.reason,
                "cause": evaluation.cause,
                "dry_run": plan.dry_run,
                **_flags_dict(flags),
            }
        )
        log.warning(
            "guard_rolled_back",
            collection=plan.collection,
            reason=evaluation.reason,
            cause=evaluation.cause,
            dry_run=plan.dry_run,
            failed_checks=self._failed,
        )
        return self._summary("rolled_back", flags, evaluation)
