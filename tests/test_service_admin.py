"""The admin API and `dualvec --server URL COMMAND`.

Against the ASGI app: the bearer token, flag changes through the phase rules (409 when refused,
nothing written), rollback, replay, and backfill and verify as background jobs run to their
results. Against a real `dualvec serve` holding a Qdrant local legacy folder open: a whole ramp
driven by the CLI through the service, which must neither read a config file nor open a store.
"""

from __future__ import annotations

import json
import subprocess
import time

import pytest
from fastapi.testclient import TestClient
from service_process import dualvec_command, service_env, start_service
from test_service_api import TOKEN, app_for, as_json

from dualvec import CollectionSpec, FieldSpec, Record, open_store
from dualvec.testing import make_records

AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def admin(tmp_path):
    with TestClient(app_for(tmp_path, admin_token=TOKEN), headers=AUTH) as client:
        yield client


def wait_for(client, job: dict, timeout: float = 30) -> dict:
    deadline = time.monotonic() + timeout
    while job["state"] == "running":
        assert time.monotonic() < deadline, job
        time.sleep(0.05)
        job = client.get(f"/admin/jobs/{job['id']}").json()
    return job


def flag_file(tmp_path):
    return (tmp_path / "flags.json").read_bytes()


# the ASGI app


def test_every_admin_route_needs_the_token(tmp_path):
    with TestClient(app_for(tmp_path, admin_token=TOKEN)) as client:
        before = flag_file(tmp_path)
        for method, path, body in [
            ("GET", "/admin/status", None),
            ("GET", "/admin/flags", None),
            ("POST", "/admin/flags", {"changes": {"read_percent": 100}, "force": True}),
            ("POST", "/admin/rollback", {}),
            ("POST", "/admin/replay", {}),
            ("POST", "/admin/jobs", {"kind": "verify"}),
            ("GET", "/admin/jobs/abc", None),
        ]:
            for headers in ({}, {"Authorization": "Bearer wrong"}):
                answer = client.request(method, path, json=body, headers=headers)
                assert answer.status_code == 401, (path, answer.text)
                assert answer.json()["error"]["type"] == "Unauthorized"
        assert flag_file(tmp_path) == before  # nothing written
        assert client.get("/admin/flags", headers=AUTH).status_code == 200


def test_flags_go_through_the_phase_rules(admin, tmp_path):
    shown = admin.get("/admin/flags").json()
    assert set(shown["collections"]) == {"docs", "notes"}
    assert shown["collections"]["docs"]["phase"] == "dual"
    assert admin.get("/admin/flags", params={"collection": "notes"}).json()["collections"].keys() == {"notes"}

    before = flag_file(tmp_path)
    refused = admin.post("/admin/flags", json={"collection": "docs", "changes": {"read_percent": 50}})
    assert refused.status_code == 409
    error = refused.json()["error"]
    assert error["type"] == "ConfigError"
    assert "refusing read_percent=50" in error["message"] and "dualvec verify" in error["message"]
    assert flag_file(tmp_path) == before

    unknown = admin.post("/admin/flags", json={"collection": "nope", "changes": {"read_percent": 1}})
    assert unknown.status_code == 404
    assert unknown.json()["error"]["field"] == "collection"
    assert "['docs', 'notes']" in unknown.json()["error"]["message"]
    bad_key = admin.post("/admin/flags", json={"changes": {"speed": 1}})
    assert (bad_key.status_code, bad_key.json()["error"]["field"]) == (422, "changes")
    bad_value = admin.post("/admin/flags", json={"changes": {"phase": "sideways"}})
    assert bad_value.status_code == 409 and "phase" in bad_value.json()["error"]["message"]
    assert flag_file(tmp_path) == before

    forced = admin.post(
        "/admin/flags", json={"collection": "docs", "changes": {"read_percent": 50}, "force": True}
    )
    assert forced.status_code == 200
    assert forced.json()["collections"]["docs"]["read_percent"] == 50
    assert forced.json()["collections"].keys() == {"docs"}

    rolled = admin.post("/admin/rollback", json={"collection": "docs"}).json()
    assert rolled["collections"]["docs"]["read_percent"] == 0
    assert admin.post("/admin/rollback", json={}).json()["collections"].keys() == {"docs", "notes"}


def test_verify_job_is_recorded_so_reads_may_ramp(admin):
    for record in make_records(5, 8):
        assert admin.post("/collections/docs/records", json={"records": [as_json(record)]}).status_code == 200
    job = admin.post("/admin/jobs", json={"kind": "verify", "collections": ["docs"]})
    assert job.status_code == 202
    assert job.json()["state"] == "running" and job.json()["kind"] == "verify"
    done = wait_for(admin, job.json())
    assert done["state"] == "done", done
    assert done["result"]["clean"] is True
    docs = done["result"]["collections"]["docs"]
    assert (docs["clean"], docs["checked"]) == (True, {"primary": 5, "secondary": 5})
    assert done["progress"]["docs"]["done"] == done["progress"]["docs"]["total"] == 10  # both passes
    ramp = admin.post("/admin/flags", json={"collection": "docs", "changes": {"read_percent": 100}})
    assert ramp.status_code == 200, ramp.text
    # `notes` was not verified: still refused there.
    assert (
        admin.post("/admin/flags", json={"collection": "notes", "changes": {"read_percent": 1}}).status_code
        == 409
    )


def test_backfill_job_copies_on_the_services_own_stores(admin):
    migration = admin.app.state.service.migration
    router = migration.routers["docs"]
    router.stores["legacy"].upsert(make_records(30, 8))  # before dual writes: legacy only
    assert router.stores["target"].count() == 0

    job = admin.post("/admin/jobs", json={"kind": "backfill", "collections": ["docs"], "batch_size": 7})
    assert job.status_code == 202, job.text
    done = wait_for(admin, job.json())
    assert done["state"] == "done", done
    docs = done["result"]["collections"]["docs"]
    assert (docs["scanned"], docs["copied"]) == (30, 30)
    assert docs["checkpoint"].endswith("backfill-docs.json")
    assert router.stores["target"].count() == 30
    assert done["progress"]["docs"]["done"] == 30

    verified = wait_for(admin, admin.post("/admin/jobs", json={"kind": "verify"}).json())
    assert verified["result"]["clean"] is True
    assert verified["result"]["collections"].keys() == {"docs", "notes"}


def test_backfill_refused_where_live_writes_miss_the_target(admin):
    assert admin.post("/admin/flags", json={"changes": {"phase": "legacy"}}).status_code == 200
    refused = admin.post("/admin/jobs", json={"kind": "backfill", "collections": ["docs"]})
    assert refused.status_code == 409
    assert "refusing to backfill collection 'docs' in phase legacy" in refused.json()["error"]["message"]
    forced = admin.post("/admin/jobs", json={"kind": "backfill", "collections": ["docs"], "force": True})
    assert wait_for(admin, forced.json())["state"] == "done"
    unknown = admin.post("/admin/jobs", json={"kind": "verify", "collections": ["docs", "nope"]})
    assert unknown.status_code == 404 and unknown.json()["error"]["field"] == "collections"
    bad = admin.post("/admin/jobs", json={"kind": "copy"})
    assert bad.status_code == 422 and bad.json()["error"]["field"] == "kind"
    assert admin.get("/admin/jobs/nope").status_code == 404


def test_replay_drains_the_services_outbox(admin):
    router = admin.app.state.service.migration.routers["docs"]
    records = make_records(3, 8)
    router.stores["legacy"].upsert(records)
    router.outbox.record([r.id for r in records], "upsert", "legacy")  # writes the target missed
    answer = admin.post("/admin/replay", json={"collections": ["docs"]})
    assert answer.status_code == 200
    assert answer.json() == {
        "collections": {"docs": {"upserted": 3, "deleted": 0, "failed": 0, "remaining": 0}}
    }
    assert router.stores["target"].count() == 3
    status = admin.get("/admin/status", params={"collection": "docs"}).json()
    assert status["collections"].keys() == {"docs"}
    assert status["collections"]["docs"]["outbox"]["depth"] == 0


# a real service, driven by `dualvec --server URL ...`

QDRANT_CONFIG = """
phase = "legacy"
flag_file = "{data}/flags.json"
outbox_path = "{data}/outbox.db"
replay_interval_seconds = 3600

[collections.docs]
dim = 4
model = "m"
metric = "l2"
fields = {{ lang = "str" }}
legacy_url = "qdrant-local://{data}/qdrant"
target_url = "sqlite-vec://{data}/docs-target.db"
"""
RECORDS = 300


@pytest.mark.slow
def test_a_whole_ramp_through_the_service_on_a_qdrant_local_legacy(tmp_path):
    pytest.importorskip("qdrant_client")
    data = tmp_path / "service"
    data.mkdir()
    env = service_env(data, DUALVEC_ADMIN_TOKEN="ramp-token")
    (data / "dualvec.toml").write_text(QDRANT_CONFIG.format(data=data))
    spec = CollectionSpec(name="docs", dim=4, model="m", metric="l2", fields={"lang": FieldSpec(type="str")})
    legacy = open_store(f"qdrant-local://{data}/qdrant", spec)
    try:
        legacy.upsert([Record(r.id, r.vector, {"lang": "en"}) for r in make_records(RECORDS, 4)])
    finally:
        legacy.close()

    service = start_service(data, env)
    client_dir = tmp_path / "client"  # no config file here, and none named in the environment
    client_dir.mkdir()
    client_env = {k: v for k, v in env.items() if k != "DUALVEC_CONFIG"} | {"DUALVEC_SERVER": service.url}

    def dualvec(*args: str, token: bool = True) -> subprocess.CompletedProcess[str]:
        run_env = client_env if token else {k: v for k, v in client_env.items() if k != "DUALVEC_ADMIN_TOKEN"}
        return subprocess.run(
            [dualvec_command(), *args],
            cwd=client_dir,
            env=run_env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    try:
        denied = dualvec("status", token=False)
        assert denied.returncode == 1 and "DUALVEC_ADMIN_TOKEN" in denied.stderr, denied.stderr

        assert dualvec("flags", "set", "phase=dual").returncode == 0

        refused = dualvec("flags", "set", "--collection", "docs", "read_percent=50")
        assert refused.returncode == 1, refused.stderr
        assert "refusing read_percent=50" in refused.stderr and "Traceback" not in refused.stderr

        unknown = dualvec("verify", "--collection", "nope")
        assert unknown.returncode == 2, unknown.stderr
        assert "nope" in unknown.stderr and "docs" in unknown.stderr

        backfilled = dualvec("backfill", "--batch-size", "50", "--json")
        assert backfilled.returncode == 0, backfilled.stderr
        docs = json.loads(backfilled.stdout)["collections"]["docs"]
        assert (docs["scanned"], docs["copied"]) == (RECORDS, RECORDS)
        assert f"backfill docs: {RECORDS:,}/{RECORDS:,} records" in backfilled.stderr

        verified = dualvec("verify")
        assert verified.returncode == 0, verified.stderr
        assert "clean" in verified.stdout.splitlines()[-1]

        assert dualvec("flags", "set", "--collection", "docs", "read_percent=100").returncode == 0
        assert dualvec("replay", "--json").returncode == 0
        primary = dualvec("--server", service.url, "flags", "set", "phase=target-primary", "--json")
        assert primary.returncode == 0, primary.stderr
        assert json.loads(primary.stdout)["collections"]["docs"]["phase"] == "target-primary"

        status = dualvec("status", "--json")
        assert status.returncode == 0, status.stderr
        entry = json.loads(status.stdout)["collections"]["docs"]
        assert (entry["phase"], entry["read_percent"]) == ("target-primary", 100)
        assert entry["legacy"]["count"] == entry["target"]["count"] == RECORDS

        shown = dualvec("flags", "show")
        assert shown.returncode == 0 and "target-primary" in shown.stdout
        assert dualvec("demo", "--help").returncode == 0  # from DUALVEC_SERVER, other commands run locally
        assert dualvec("--server", service.url, "doctor").returncode == 2
    finally:
        assert service.stop() == 0
    assert "Traceback" not in service.log.read_text()
    assert not list(client_dir.iterdir()), "the client wrote nothing"
