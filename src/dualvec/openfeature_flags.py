"""Flags from a flag service through OpenFeature, instead of the flag file.

``pip install 'dualvec[openfeature]'``, set a provider (flagd, or any other OpenFeature provider)
and pass `openfeature_flags` as a migration's flag source::

    from openfeature import api
    from openfeature.contrib.provider.flagd import FlagdProvider

    api.set_provider_and_wait(FlagdProvider())
    migration = Migration.from_settings(settings, flag_source=openfeature_flags(api.get_client()))

The flag file is then not read at all. The flags, with the default prefix ``dualvec``:

=======================================  ======  =======================================
flag key                                 type    value
=======================================  ======  =======================================
``dualvec.<collection>.phase``           string  legacy, dual, target-primary or target
``dualvec.<collection>.read_percent``    float   0 to 100
``dualvec.<collection>.shadow_percent``  float   0 to 100
=======================================  ======  =======================================

and ``dualvec.phase``, ``dualvec.read_percent``, ``dualvec.shadow_percent``: the same, as the
default for every collection. A collection's flags are, key by key, its own flag, else the
default flag, else the value in the settings: the levels of the flag file. Every flag is
evaluated with the collection as the evaluation context (targeting key and attribute
``collection``), so a flagd targeting rule on a default flag can tell collections apart too. A
flag the provider does not have, has disabled, or resolves to no variant leaves the value to the
level below.

Same snapshot semantics as the flag file: a collection whose flags include a value of the wrong
type, a value outside its domain (``read_percent`` 150, phase ``"banana"``) or an evaluation
error keeps its last good flags; the refusal is logged (``openfeature_flags_refused``) and
counted, once per distinct problem rather than at every poll.

The phase rules of `dualvec.phases` are not enforced on a flag service's values: the operator
sets them in the flag service, as with ``--force``, and a process cannot hold them against
history it did not see (a process restarted after a correct walk to ``target`` would take it for
a jump from ``legacy`` and refuse it, while its peers follow it). A change that breaks the order
of phases (``legacy`` straight to ``target``, or back from ``target`` where legacy is behind) is
followed and logged as a warning, ``openfeature_flags_unchecked``.

Values are re-read every `poll_seconds`, and at once when the provider reports a change: flagd
does, for its flag file (which it checks every 0.5 s by default) and for its service. A process
forked after the source started (gunicorn ``--preload``) starts its own source, but a provider's
threads do not survive a fork: set the provider again in each worker (``post_fork``), and the
client, which looks its provider up by domain, follows the new one.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Mapping
from typing import Any

from pydantic import ValidationError

from dualvec.errors import BackendMissingError, ConfigError
from dualvec.flags import FLAG_KEYS, FlagOverrides, FlagSnapshot, FlagSourceFactory
from dualvec.logs import get_logger
from dualvec.outbox import OutboxStats
from dualvec.phases import check_change, rolled_back
from dualvec.settings import Flags, Phase

try:
    from openfeature import api
    from openfeature.client import OpenFeatureClient
    from openfeature.evaluation_context import EvaluationContext
    from openfeature.event import EventDetails, ProviderEvent
    from openfeature.exception import ErrorCode
    from openfeature.flag_evaluation import FlagEvaluationDetails, Reason
except ImportError as exc:
    raise BackendMissingError(
        f"dualvec.openfeature_flags needs openfeature-sdk: pip install 'dualvec[openfeature]' ({exc})"
    ) from exc

__all__ = ["DEFAULT_PREFIX", "OpenFeatureFlags", "openfeature_flags"]

log = get_logger("dualvec.openfeature_flags")

DEFAULT_PREFIX = "dualvec"

# What a wrong-type refusal tells the operator to set instead.
_EXPECTED = {
    "phase": "a string flag: legacy, dual, target-primary or target",
    "read_percent": "a float flag from 0 to 100 (50.0 rather than 50 where the provider tells them apart)",
    "shadow_percent": "a float flag from 0 to 100 (50.0 rather than 50 where the provider tells them apart)",
}
# Events after which values may differ: re-read at once rather than at the next poll.
_CHANGE_EVENTS = (ProviderEvent.PROVIDER_READY, ProviderEvent.PROVIDER_CONFIGURATION_CHANGED)


class _Refused(Exception):
    """A collection's values from the flag service that must not reach its router."""


class _NothingPending:
    """A sync state with nothing to wait for: `check_change` then names only the order of phases."""

    def verify_problem(self) -> str | None:
        return None

    def outbox(self) -> OutboxStats:
        return OutboxStats(0, 0.0)


def _unset(details: FlagEvaluationDetails[Any]) -> bool:
    """True when the provider gave no value of its own: OpenFeature's "use the code default"."""
    if details.error_code is ErrorCode.FLAG_NOT_FOUND:
        return True
    return details.error_code is None and (
        details.reason == Reason.DISABLED or (details.reason == Reason.DEFAULT and details.variant is None)
    )


class OpenFeatureFlags:
    """A `FlagSource` following an OpenFeature client: each declared collection's last good flags,
    re-read every `poll_seconds` and on the provider's change events, on one thread."""

    def __init__(
        self,
        client: OpenFeatureClient,
        base: Mapping[str, Flags],
        *,
        on_change: Callable[[str, FlagSnapshot], None] | None = None,
        on_refused: Callable[[str], None] | None = None,
        poll_seconds: float = 0.5,
        prefix: str = DEFAULT_PREFIX,
    ) -> None:
        self._client = client
        self._base = dict(base)
        self._on_change = on_change
        self._on_refused = on_refused
        self._poll = poll_seconds
        self._prefix = prefix
        self._current = {name: FlagSnapshot.from_settings(flags) for name, flags in self._base.items()}
        self._problems: dict[str, str] = {}
        self._refusals = dict.fromkeys(self._base, 0)
        self._refresh(first=True)
        self._wake = threading.Event()
        self._stop = threading.Event()
        for event in _CHANGE_EVENTS:
            client.add_handler(event, self._changed)
        self._thread = threading.Thread(target=self._run, name="dualvec-openfeature", daemon=True)
        self._thread.start()

    def current(self, collection: str) -> FlagSnapshot:
        """The flags `collection` follows now."""
        return self._current[collection]

    def refusals(self, collection: str) -> int:
        """How many times `collection`'s values were refused (each distinct problem once)."""
        return self._refusals[collection]

    def close(self) -> None:
        """Stop following the client; the client and its provider stay the caller's."""
        for event in _CHANGE_EVENTS:
            self._client.remove_handler(event, self._changed)
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=5)

    def _changed(self, details: EventDetails) -> None:
        # Runs on the SDK's event thread: only wake the poller, which owns every evaluation.
        self._wake.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self._poll)
            self._wake.clear()
            if self._stop.is_set():
                return
            try:
                self._refresh(first=False)
            except Exception as exc:  # the source must outlive any one bad evaluation
                log.error("openfeature_flags_failed", error=repr(exc))

    def _refresh(self, *, first: bool) -> None:
        provider = self._client.provider.get_metadata().name
        current = dict(self._current)
        changed = []
        for name, base in self._base.items():
            try:
                snapshot = self._resolve(name, base, f"openfeature:{provider}")
            except _Refused as exc:
                self._refuse(name, str(exc))
                continue
            self._problems.pop(name, None)
            if snapshot == current[name]:
                continue
            if not first:
                self._check_order(name, current[name].flags, snapshot.flags)
            current[name] = snapshot
            changed.append(name)
        self._current = current
        for name in changed:
            log.info("flags_changed", collection=name, **current[name].flags.model_dump(mode="json"))
            if self._on_change is not None:
                self._on_change(name, current[name])

    def _resolve(self, name: str, base: Flags, source: str) -> FlagSnapshot:
        context = EvaluationContext(targeting_key=name, attributes={"collection": name})
        values: dict[str, Any] = {}
        keys: dict[str, str] = {}
        for key in FLAG_KEYS:
            for flag_key in (f"{self._prefix}.{name}.{key}", f"{self._prefix}.{key}"):
                details = self._evaluate(flag_key, key, context)
                if not _unset(details):
                    values[key], keys[key] = details.value, flag_key
                    break
        try:
            level = FlagOverrides.model_validate(values)
        except ValidationError as exc:
            error = exc.errors()[0]
            key = str(error["loc"][0])
            raise _Refused(f"{keys[key]}: {error['msg']} (got {error.get('input')!r})") from exc
        sources = {key: f"{source} ({keys[key]})" if key in keys else "settings" for key in FLAG_KEYS}
        return FlagSnapshot(level.over(base), source if keys else "settings", None, sources)

    def _evaluate(self, flag_key: str, key: str, context: EvaluationContext) -> FlagEvaluationDetails[Any]:
        details: FlagEvaluationDetails[Any]
        if key == "phase":
            details = self._client.get_string_details(flag_key, "", context)
        else:
            details = self._client.get_float_details(flag_key, math.nan, context)
        if details.error_code is None or _unset(details):
            return details
        expected = f"; {key} is {_EXPECTED[key]}" if details.error_code is ErrorCode.TYPE_MISMATCH else ""
        raise _Refused(f"{flag_key}: {details.error_code.value}: {details.error_message}{expected}")

    def _refuse(self, name: str, problem: str) -> None:
        if self._problems.get(name) == problem:
            return
        self._problems[name] = problem
        self._refusals[name] += 1
        log.error(
            "openfeature_flags_refused",
            collection=name,
            error=problem,
            kept=self._current[name].flags.model_dump(mode="json"),
        )
        if self._on_refused is not None:
            self._on_refused(name)

    def _check_order(self, name: str, old: Flags, new: Flags) -> None:
        leaving_target = old.phase is Phase.TARGET and new.phase is not Phase.TARGET
        try:
            check_change(old, new, _NothingPending())
            if leaving_target:
                rolled_back(old)  # refuses: legacy stopped receiving writes in phase target
        except ConfigError as exc:
            log.warning(
                "openfeature_flags_unchecked",
                collection=name,
                old=old.model_dump(mode="json"),
                new=new.model_dump(mode="json"),
                rule=str(exc),
            )


def openfeature_flags(
    client: OpenFeatureClient | None = None,
    *,
    poll_seconds: float = 0.5,
    prefix: str = DEFAULT_PREFIX,
) -> FlagSourceFactory:
    """A flag source for `Migration(..., flag_source=...)` and `Router.over(..., flag_source=...)`
    following `client` (the default domain's client when None). `poll_seconds` bounds how late a
    change arrives from a provider that reports no change events."""
    if not 0.0 < poll_seconds <= 60.0:
        raise ConfigError(f"poll_seconds={poll_seconds!r}: use a number of seconds in (0, 60]")
    if not prefix or prefix.startswith(".") or prefix.endswith("."):
        raise ConfigError(f"prefix={prefix!r}: use a non-empty flag key prefix such as 'dualvec'")
    following = client if client is not None else api.get_client()

    def start(
        base: Mapping[str, Flags],
        on_change: Callable[[str, FlagSnapshot], None],
        on_refused: Callable[[str], None] | None = None,
    ) -> OpenFeatureFlags:
        return OpenFeatureFlags(
            following,
            base,
            on_change=on_change,
            on_refused=on_refused,
            poll_seconds=poll_seconds,
            prefix=prefix,
        )

    return start
