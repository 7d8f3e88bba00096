"""The automatic guard: checks over an interval of live traffic, a ramp that raises read_percent
step by step and rolls itself back on a breach, and the same checks running inside
`dualvec serve`.

- `dualvec.guard.checks`: the thresholds, and the verdict on one interval's signals;
- `dualvec.guard.sources`: where the signals come from (own metrics, a /metrics URL, Prometheus);
- `dualvec.guard.ramp`: the step loop behind `dualvec ramp`;
- `dualvec.guard.runs`: ramps run by the service for `dualvec --server URL ramp`;
- `dualvec.guard.loop`: the guard inside `dualvec serve` (``[guard] enabled = true``).
"""

from __future__ import annotations

from dualvec.guard.checks import CheckResult, Evaluation, Signals, evaluate
from dualvec.guard.loop import ContinuousGuard
from dualvec.guard.ramp import PhaseRulesControl, Ramp, RampPlan, parse_steps
from dualvec.guard.sources import ExpositionSource, PrometheusSource, SignalsUnavailable

__all__ = [
    "CheckResult",
    "ContinuousGuard",
    "Evaluation",
    "ExpositionSource",
    "PhaseRulesControl",
    "PrometheusSource",
    "Ramp",
    "RampPlan",
    "Signals",
    "SignalsUnavailable",
    "evaluate",
    "parse_steps",
]
