"""`dualvec serve` as a real process: probes and metrics over TCP, the refusal to listen beyond
loopback without an admin token, the bearer token on the admin API, and a SIGTERM that lets
the request in flight finish, closes the stores and exits 0."""

from __future__ import annotations

import signal
import subprocess
import threading
import time
import urllib.error

import pytest
from service_process import call, dualvec_command, service_env, start_service

from dualvec import CollectionSpec, FieldSpec, Record, open_store
from dualvec.errors import ConfigError
from dualvec.service.listen import check_exposure
from dualvec.testing.faults import sqlite_locked

pytestmark = pytest.mark.slow

TOKEN = "t0ken-for-tests"
RECORD = {"id": "r1", "vector": [1.0, 2.0, 3.0, 4.0], "metadata": {"lang": "en"}}


def test_probes_metrics_and_the_data_api_over_tcp(tmp_path):
    service = start_service(tmp_path, service_env(tmp_path))
    try:
        assert call("GET", f"{service.url}/healthz").json() == {"status": "ok"}
        ready = call("GET", f"{service.url}/readyz").json()
        assert ready == {
            "status": "ready",
            "collections": {"docs": {"phase": "dual"}, "notes": {"phase": "dual"}},
        }
        assert call("POST", f"{service.url}/collections/docs/records", {"records": [RECORD]}).json() == {
            "upserted": 1
        }
        hits = call("POST", f"{service.url}/collections/docs/search", {"vector": [1, 2, 3, 4], "k": 1}).json()
        assert hits == {"hits": [{"id": "r1", "distance": 0.0, "metadata": {"lang": "en"}}]}
        metrics = call("GET", f"{service.url}/metrics")
        assert metrics.headers["content-type"].startswith("text/plain")
        assert b'dualvec_phase{collection="notes",phase="dual"} 1.0' in metrics.body
        assert b'dualvec_reads_total{collection="docs",store="legacy"} 1.0' in metrics.body
        missing = call("GET", f"{service.url}/nowhere")
        assert (missing.status, missing.json()["error"]["type"]) == (404, "NotFound")
    finally:
        assert service.stop() == 0
    assert "Traceback" not in service.log.read_text()


@pytest.mark.parametrize("how", ["option", "environment"])
def test_refuses_to_listen_beyond_loopback_without_a_token(tmp_path, how):
    env = service_env(tmp_path)
    args = ["serve", "--port", "0"]
    if how == "option":
        args += ["--host", "0.0.0.0"]
    else:
        env["DUALVEC_SERVE_HOST"] = "0.0.0.0"
    done = subprocess.run(
        [dualvec_command(), *args],
        check=False,
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    assert "DUALVEC_ADMIN_TOKEN" in done.stderr and "0.0.0.0" in done.stderr
    assert "Traceback" not in done.stderr
    assert not list(tmp_path.glob("*.db")), "no store may be opened"


def test_exposure_rules():
    for host in ("127.0.0.1", "localhost", "::1", "127.0.0.2"):
        check_exposure(host, None)
    for host in ("0.0.0.0", "::"):
        with pytest.raises(ConfigError, match="DUALVEC_ADMIN_TOKEN"):
            check_exposure(host, None)
        check_exposure(host, TOKEN)


def test_the_admin_api_needs_the_bearer_token(tmp_path):
    service = start_service(tmp_path, service_env(tmp_path, DUALVEC_ADMIN_TOKEN=TOKEN))
    try:
        status = f"{service.url}/admin/status"
        for headers in ({}, {"Authorization": "Bearer not-it"}):
            refused = call("GET", status, headers=headers)
            assert refused.status == 401
            assert refused.json()["error"]["type"] == "Unauthorized"
            assert refused.headers["www-authenticate"].startswith("Bearer")
        allowed = call("GET", status, headers={"Authorization": f"Bearer {TOKEN}"})
        assert allowed.status == 200
        docs = allowed.json()["collections"]["docs"]
        assert (docs["phase"], docs["outbox"]["depth"], docs["target"]["count"]) == ("dual", 0, 0)
        assert call("GET", f"{service.url}/collections/docs/count").json() == {"count": 0}
    finally:
        assert service.stop() == 0


def test_sigterm_finishes_the_request_in_flight_closes_the_stores_and_exits_0(tmp_path):
    service = start_service(tmp_path, service_env(tmp_path))
    answers = []
    writer = threading.Thread(
        target=lambda: answers.append(
            call("POST", f"{service.url}/collections/docs/records", {"records": [RECORD]})
        )
    )
    try:
        # The primary (legacy) store is locked by another process: the write waits for it.
        with sqlite_locked(tmp_path / "docs-legacy.db"):
            writer.start()
            time.sleep(0.5)
            assert writer.is_alive(), "the write should be waiting for the lock"
            service.proc.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + 10
            while True:  # until it no longer accepts connections
                try:
                    call("GET", f"{service.url}/healthz")
                except (urllib.error.URLError, ConnectionError):
                    break
                assert time.monotonic() < deadline, "still accepting 10 s after SIGTERM"
                time.sleep(0.1)
            assert service.proc.poll() is None, "the service must wait for the request in flight"
            assert writer.is_alive()
        writer.join(timeout=30)
        assert service.proc.wait(timeout=30) == 0
    finally:
        service.stop()
    assert answers[0].status == 200 and answers[0].json() == {"upserted": 1}
    log = service.log.read_text()
    assert "Traceback" not in log, log
    spec = CollectionSpec(name="docs", dim=4, metric="l2", model="m", fields={"lang": FieldSpec(type="str")})
    for url in (f"sqlite-blob://{tmp_path}/docs-legacy.db", f"sqlite-vec://{tmp_path}/docs-target.db"):
        with open_store(url, spec) as store:
            assert store.get(["r1"]) == [Record("r1", [1.0, 2.0, 3.0, 4.0], {"lang": "en"})], url
