"""`make demo` for real, small: two collections migrated at different paces in one process,
every verify clean, no caller ever sees an error, docs's rollback leaves claims alone, and the
demo ends with guarded ramps of claims: one rolled back on its own when the target loses
records behind the router's back, one, after the repair, reaching 100%."""

from __future__ import annotations

import pytest

from dualvec.demo import run_demo


@pytest.mark.slow
def test_the_demo_walks_both_collections_through_their_phases(tmp_path):
    report = run_demo(
        tmp_path / "demo", records=400, dim=64, phase_seconds=0.5, port=0, say=lambda line: None
    )
    assert report.final_flags == {
        "docs": {"phase": "target", "read_percent": 100.0, "shadow_percent": 0.0},
        "claims": {"phase": "dual", "read_percent": 100.0, "shadow_percent": 100.0},
    }
    assert set(report.verifies) == {
        "docs after backfill",
        "claims after backfill",
        "docs final (target-primary)",
        "claims repair after the fault",
    }
    assert all(result["clean"] for result in report.verifies.values()), report.verifies
    assert all(p.caller_errors == 0 for p in report.phases)
    rows = {(p.collection, p.name): p for p in report.phases}
    assert "claims untouched: dual, read 10%" in rows["docs", "rollback docs"].notes
    assert rows["docs", "read 100%"].reads["target"] > 0
    assert rows["claims", "legacy"].reads["target"] == 0
    assert "every outbox drained" in rows["docs", "sqlite-vec outage"].notes
    # Signals you can trust: outside the outage and the injected fault, no comparison is a
    # mismatch (writes in flight are set aside, and docs's quantized target stays above
    # shadow.min_recall)...
    faults = {"sqlite-vec outage", "claims ramp, fault", "claims repair"}
    compared = [p for p in report.phases if p.shadow_compared]
    assert sum(p.shadow_compared for p in compared) > 50
    assert {(p.collection, p.name): p.mismatches for p in compared if p.name not in faults} == {
        (p.collection, p.name): 0 for p in compared if p.name not in faults
    }
    assert rows["claims", "claims ramp, fault"].mismatches > 0
    # ... so the guard rolls the faulty target back on its own, and lets the repaired one through.
    fault, healthy = report.ramps["fault"], report.ramps["healthy"]
    assert (fault["outcome"], fault["cause"], fault["phase"], fault["read_percent"]) == (
        "rolled_back",
        "mismatch_ratio",
        "dual",
        0.0,
    )
    assert report.verifies["claims repair after the fault"]["before"]["missing"] > 0
    assert (healthy["outcome"], healthy["read_percent"]) == ("completed", 100.0)
    assert [(i["read_percent"], i["verdict"]) for i in healthy["intervals"] if i["verdict"] != "no_data"] == [
        (25.0, "pass"),
        (50.0, "pass"),
        (100.0, "pass"),
    ]
    # ... and the fast target's recall is shown per phase.
    assert rows["docs", "read 100%"].mean_recall is not None
