"""`make demo` for real, small: two collections migrated at different paces in one process,
every verify clean, no caller ever sees an error, and docs's rollback leaves claims alone."""

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
        "claims": {"phase": "dual", "read_percent": 10.0, "shadow_percent": 100.0},
    }
    assert set(report.verifies) == {
        "docs after backfill",
        "claims after backfill",
        "docs final (target-primary)",
    }
    assert all(result["clean"] for result in report.verifies.values()), report.verifies
    assert all(p.caller_errors == 0 for p in report.phases)
    rows = {(p.collection, p.name): p for p in report.phases}
    assert "claims untouched: dual, read 10%" in rows["docs", "rollback docs"].notes
    assert rows["docs", "read 100%"].reads["target"] > 0
    assert rows["claims", "legacy"].reads["target"] == 0
    assert "every outbox drained" in rows["docs", "sqlite-vec outage"].notes
    # Signals you can trust: outside the outage, no comparison is a mismatch (writes in flight
    # are set aside, and docs's quantized target stays above shadow.min_recall)...
    compared = [p for p in report.phases if p.shadow_compared]
    assert sum(p.shadow_compared for p in compared) > 50
    assert {(p.collection, p.name): p.mismatches for p in compared if p.name != "sqlite-vec outage"} == {
        (p.collection, p.name): 0 for p in compared if p.name != "sqlite-vec outage"
    }
    # ... and the fast target's recall is shown per phase.
    assert rows["docs", "read 100%"].mean_recall is not None
