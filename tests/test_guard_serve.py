"""The guard inside `dualvec serve` (``[guard] enabled = true``): with no ramp running, it rolls
back the collection whose target diverges, at whatever read_percent it stands (here
target-primary, every read on sqlite-vec, back to dual), and leaves a healthy one alone."""

from __future__ import annotations

import time

import pytest
from service_process import service_env, start_service
from test_ramp_service import RECORDS, admin, delete_behind_the_back, flags, metric, prepare, traffic

pytestmark = pytest.mark.slow

GUARD = """
[guard]
enabled = true
interval = "1s"
min_comparisons = 10
max_p99_ratio = 1000
failure_limit = 2
"""


def test_the_guard_in_serve_rolls_back_only_the_collection_that_breaches(tmp_path):
    env = service_env(tmp_path)
    (tmp_path / "dualvec.toml").write_text((tmp_path / "dualvec.toml").read_text() + GUARD)
    service = start_service(tmp_path, env)
    try:
        for name in ("docs", "notes"):
            prepare(service, name)
        admin(service, "POST", "/admin/flags", {"collection": "docs", "changes": {"read_percent": 50}})
        admin(
            service,
            "POST",
            "/admin/flags",
            {"collection": "notes", "changes": {"phase": "target-primary", "read_percent": 100}},
        )
        delete_behind_the_back(tmp_path, "notes", [f"r{i}" for i in range(0, RECORDS, 2)])
        with traffic(service, "docs"), traffic(service, "notes"):
            deadline = time.monotonic() + 40
            while flags(service, "notes")["phase"] != "dual":
                assert time.monotonic() < deadline, service.log.read_text()[-3000:]
                time.sleep(0.2)
            rolled_back_at = time.monotonic()
            # docs keeps being judged, and passing, meanwhile.
            while (
                metric(
                    service,
                    "dualvec_guard_checks_total",
                    collection="docs",
                    check="mismatch_ratio",
                    result="pass",
                )
                < 3
            ):
                assert time.monotonic() < rolled_back_at + 20, service.log.read_text()[-3000:]
                time.sleep(0.2)
        notes = flags(service, "notes")
        assert (notes["phase"], notes["read_percent"]) == ("dual", 0)
        assert flags(service, "docs")["read_percent"] == 50
        assert (
            metric(service, "dualvec_guard_rollbacks_total", collection="notes", reason="mismatch_ratio") == 1
        )
        assert (
            metric(service, "dualvec_guard_rollbacks_total", collection="docs", reason="mismatch_ratio") == 0
        )
        assert (
            metric(
                service,
                "dualvec_guard_checks_total",
                collection="docs",
                check="mismatch_ratio",
                result="fail",
            )
            == 0
        )
    finally:
        assert service.stop() == 0
    log = service.log.read_text()
    assert "guard_rolled_back" in log and "Traceback" not in log
    (event,) = [line for line in log.splitlines() if "guard_rolled_back" in line]
    assert "notes" in event and "mismatch_ratio" in event
