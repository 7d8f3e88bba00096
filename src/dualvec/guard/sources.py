"""Where the guard's numbers come from: what one collection's counters gained over an interval.

- `ExpositionSource`: a Prometheus text exposition read at the start and at the end of the
  interval, and the difference taken. Over this process's own registry
  (`ExpositionSource.of_metrics`, what the guard inside `dualvec serve` and a ramp run by the
  service read; under PROMETHEUS_MULTIPROC_DIR that is every worker's sum) or over one
  process's /metrics URL (`ExpositionSource.at_url`, an application that embeds the router).
- `PrometheusSource`: PromQL ``increase(...[interval])`` summed over every process Prometheus
  scrapes for the collection (optionally of one job): the fleet. Give the interval at least
  four scrape intervals, as for any rate(), or a window may hold too few samples.

The client is the standard library's urllib, as for `dualvec --server`. A source that cannot
be read raises `SignalsUnavailable`; the guard counts that interval as failed.
"""

from __future__ import annotations

import json
import math
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import defaultdict
from collections.abc import Callable, Iterable
from typing import Any, Protocol

from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

from dualvec.errors import DualvecError
from dualvec.guard.checks import Buckets, Signals
from dualvec.metrics import DualvecMetrics, Store

__all__ = [
    "ExpositionSource",
    "PrometheusSource",
    "SignalSource",
    "SignalsUnavailable",
    "Window",
    "signals_from_exposition",
    "signals_from_families",
]

_TIMEOUT_SECONDS = 10.0
_STORES: tuple[Store, ...] = ("legacy", "target")


class SignalsUnavailable(DualvecError):
    """The guard could not read its signals (a source down, an answer it cannot parse)."""


class Window(Protocol):
    """An interval being measured, from when its source opened it."""

    def close(self) -> Signals:
        """What the collection's counters gained since the window opened."""


class SignalSource(Protocol):
    """Opens windows over one collection's counters."""

    name: str  # what the reports say the numbers came from

    def open(self, collection: str) -> Window: ...


def _store(label: str | None) -> Store | None:
    return next((store for store in _STORES if store == label), None)


def _judged_latency(store: Store, role: str | None) -> bool:
    """Whether a search's latency counts in the p99 check: the target's served reads (what
    callers wait for) against every legacy read. Shadow reads run niced, and at a low
    read_percent most of the target's reads are shadows: counting them would blame the target
    for its priority on a busy host. Legacy's shadows stay in, or at read 100% legacy would
    have no latency to compare with; their niceness only ever favours the target."""
    return store == "legacy" or role == "primary"


def _le(text: str) -> float:
    return math.inf if text == "+Inf" else float(text)


def _buckets(by_bound: dict[float, float]) -> Buckets:
    return tuple(sorted(by_bound.items()))


def signals_from_exposition(text: str, collection: str) -> Signals:
    """The totals of `collection` in a text exposition (see `signals_from_families`)."""
    try:
        return signals_from_families(text_string_to_metric_families(text), collection)
    except ValueError as exc:
        raise SignalsUnavailable(f"cannot parse the metrics exposition: {exc}") from exc


def signals_from_families(families: Iterable[Metric], collection: str) -> Signals:
    """The totals of `collection` among metric families, summed over whatever they hold
    (roles, ops, processes); search latency as `_judged_latency` says."""
    totals: dict[str, float] = defaultdict(float)
    buckets: dict[Store, dict[float, float]] = {store: defaultdict(float) for store in _STORES}
    try:
        for family in families:
            for sample in family.samples:
                labels = sample.labels
                if labels.get("collection") != collection:
                    continue
                name, store = sample.name, labels.get("store")
                if name == "dualvec_shadow_comparisons_total":
                    totals[labels["outcome"]] += sample.value
                elif name in ("dualvec_shadow_recall_sum", "dualvec_shadow_recall_count"):
                    totals[name] += sample.value
                elif name == "dualvec_operation_duration_seconds_bucket" and labels.get("op") == "search":
                    known = _store(store)
                    if known is not None and _judged_latency(known, labels.get("role")):
                        buckets[known][_le(labels["le"])] += sample.value
                elif name == "dualvec_operation_duration_seconds_count" and store == "target":
                    totals["operations"] += sample.value
                elif (
                    name in ("dualvec_read_failures_total", "dualvec_write_failures_total")
                    and store == "target"
                ):
                    totals["failures"] += sample.value
    except KeyError as exc:
        raise SignalsUnavailable(f"a dualvec sample lacks the label {exc}") from exc
    return Signals(
        matches=totals["match"],
        mismatches=totals["mismatch"],
        in_flight=totals["in_flight"],
        recall_sum=totals["dualvec_shadow_recall_sum"],
        recall_count=totals["dualvec_shadow_recall_count"],
        search_buckets={store: _buckets(found) for store, found in buckets.items() if found},
        target_operations=totals["operations"],
        target_failures=totals["failures"],
    )


class _DifferenceWindow:
    def __init__(self, read: Callable[[], Signals]) -> None:
        self._read = read
        self._start = read()

    def close(self) -> Signals:
        return self._read().since(self._start)


def _get(url: str, what: str) -> bytes:
    try:
        with urllib.request.urlopen(url, timeout=_TIMEOUT_SECONDS) as response:
            body: bytes = response.read()
            return body
    except urllib.error.HTTPError as exc:
        raise SignalsUnavailable(f"{what} answered HTTP {exc.code}: {exc.read()[:300]!r}") from exc
    except (urllib.error.URLError, OSError) as exc:
        raise SignalsUnavailable(f"cannot reach {what}: {getattr(exc, 'reason', exc)}") from exc


class ExpositionSource:
    """Counters read from what /metrics exposes at both ends of the interval."""

    def __init__(self, read: Callable[[str], Signals], name: str) -> None:
        self._read = read
        self.name = name

    @classmethod
    def of_metrics(cls, metrics: DualvecMetrics) -> ExpositionSource:
        """This process's own metrics (every worker's, in multiprocess mode)."""
        return cls(lambda collection: signals_from_families(metrics.collect(), collection), "own metrics")

    @classmethod
    def at_url(cls, url: str) -> ExpositionSource:
        """The /metrics endpoint of one process."""

        def read(collection: str) -> Signals:
            return signals_from_exposition(_get(url, f"the metrics at {url}").decode(), collection)

        return cls(read, f"metrics at {url}")

    def open(self, collection: str) -> Window:
        return _DifferenceWindow(lambda: self._read(collection))


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


class PrometheusSource:
    """Counters' increase over the interval, as a Prometheus server that scrapes every process
    of the fleet sums them."""

    def __init__(self, url: str, job: str | None = None) -> None:
        self.url = url.rstrip("/")
        self.job = job
        self.name = f"Prometheus at {self.url}" + (f" (job {job})" if job else "")

    def open(self, collection: str) -> Window:
        return _PrometheusWindow(self, collection, time.time())

    def query(self, expr: str, at: float) -> list[tuple[dict[str, str], float]]:
        """An instant query's series: labels and value."""
        url = f"{self.url}/api/v1/query?" + urllib.parse.urlencode({"query": expr, "time": f"{at:.3f}"})
        try:
            answer: dict[str, Any] = json.loads(_get(url, f"Prometheus at {self.url}"))
            if answer.get("status") != "success":
                raise SignalsUnavailable(f"Prometheus refused {expr!r}: {answer.get('error')}")
            return [(item["metric"], float(item["value"][1])) for item in answer["data"]["result"]]
        except (ValueError, KeyError, TypeError) as exc:
            raise SignalsUnavailable(f"Prometheus at {self.url} answered something else: {exc}") from exc

    def selector(self, collection: str, **labels: str) -> str:
        matchers = {"collection": collection, **({"job": self.job} if self.job else {}), **labels}
        return "{" + ", ".join(f"{key}={_quote(value)}" for key, value in matchers.items()) + "}"


class _PrometheusWindow:
    def __init__(self, source: PrometheusSource, collection: str, start: float) -> None:
        self._source = source
        self._collection = collection
        self._start = start

    def _increase(
        self, metric: str, end: float, by: str = "", **labels: str
    ) -> list[tuple[dict[str, str], float]]:
        window = f"{max(1, round((end - self._start) * 1000))}ms"
        selector = self._source.selector(self._collection, **labels)
        grouping = f" by ({by})" if by else ""
        return self._source.query(f"sum{grouping} (increase({metric}{selector}[{window}]))", end)

    def _total(self, metric: str, end: float, **labels: str) -> float:
        return sum(value for _, value in self._increase(metric, end, **labels))

    def close(self) -> Signals:
        # Every query over the same window: a scrape landing between two queries would put one
        # more sample in the later one's window, and a ratio of two counters (recall's sum over
        # its count) read through different windows is off by as much as that sample.
        end = time.time()
        outcomes = {
            s["outcome"]: v for s, v in self._increase("dualvec_shadow_comparisons_total", end, "outcome")
        }
        buckets: dict[Store, dict[float, float]] = {store: {} for store in _STORES}
        for labels, value in self._increase(
            "dualvec_operation_duration_seconds_bucket", end, "store, role, le", op="search"
        ):
            store = _store(labels.get("store"))
            if store is not None and _judged_latency(store, labels.get("role")):
                le = _le(labels["le"])
                buckets[store][le] = buckets[store].get(le, 0.0) + value
        return Signals(
            matches=outcomes.get("match", 0.0),
            mismatches=outcomes.get("mismatch", 0.0),
            in_flight=outcomes.get("in_flight", 0.0),
            recall_sum=self._total("dualvec_shadow_recall_sum", end),
            recall_count=self._total("dualvec_shadow_recall_count", end),
            search_buckets={store: _buckets(found) for store, found in buckets.items() if found},
            target_operations=self._total("dualvec_operation_duration_seconds_count", end, store="target"),
            target_failures=self._total("dualvec_read_failures_total", end, store="target")
            + self._total("dualvec_write_failures_total", end, store="target"),
        )
