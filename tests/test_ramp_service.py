"""`dualvec ramp` against a real `dualvec serve` with real traffic: reads (and, for the healthy
ramp, writes) over HTTP while the ramp runs, judged on the service's own metrics.

docs stays healthy; notes is made to diverge by deleting records from its sqlite-vec file
behind the service's back, so that shadow comparisons find real differences. Each ramp is the
CLI as a user runs it (`dualvec --server URL ramp ...`), its exit code and its `--json`.
"""

from __future__ import annotations

import json
import re
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from service_process import ServiceProcess, call, dualvec_command, service_env, start_service

from dualvec import CollectionSpec, open_store
from dualvec.cli.main import cli

pytestmark = pytest.mark.slow

DIM = 4
RECORDS = 200
# Small enough for a short interval on a shared 2-core machine, large enough to judge a ratio.
MIN_COMPARISONS = 15
# Latency is not what these tests judge: on a shared machine a p99 ratio is noise.
RELAXED = ["--guard", f"min_comparisons={MIN_COMPARISONS}", "--guard", "max_p99_ratio=1000"]


def vectors(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, DIM)).astype(np.float32)


def records(collection: str, n: int, seed: int = 0, prefix: str = "r") -> list[dict]:
    metadata = {"lang": "en"} if collection == "docs" else {}
    return [
        {"id": f"{prefix}{i}", "vector": [float(x) for x in v], "metadata": metadata}
        for i, v in enumerate(vectors(n, seed))
    ]


def admin(service: ServiceProcess, method: str, path: str, body: object = None) -> dict:
    answer = call(method, f"{service.url}{path}", body)
    assert answer.status in (200, 202), (path, answer.status, answer.body)
    return answer.json()


def flags(service: ServiceProcess, collection: str) -> dict:
    return admin(service, "GET", f"/admin/flags?collection={collection}")["collections"][collection]


def prepare(service: ServiceProcess, collection: str) -> None:
    """Records in both stores (phase dual writes both), a clean verify, every read shadowed."""
    batch = records(collection, RECORDS)
    assert admin(service, "POST", f"/collections/{collection}/records", {"records": batch}) == {
        "upserted": RECORDS
    }
    job = admin(service, "POST", "/admin/jobs", {"kind": "verify", "collections": [collection]})
    while job["state"] == "running":
        time.sleep(0.05)
        job = admin(service, "GET", f"/admin/jobs/{job['id']}")
    assert job["state"] == "done" and job["result"]["clean"], job
    admin(service, "POST", "/admin/flags", {"collection": collection, "changes": {"shadow_percent": 100}})


@contextmanager
def traffic(service: ServiceProcess, collection: str, *, writes: bool = False) -> Iterator[None]:
    """Searches with routing keys (and, with `writes`, upserts of new ids) until the block ends."""
    stop = threading.Event()
    errors: list[str] = []

    def read() -> None:
        queries = vectors(500, seed=7)
        i = 0
        while not stop.is_set():
            body = {"vector": [float(x) for x in queries[i % 500]], "k": 5, "routing_key": f"user-{i % 97}"}
            answer = call("POST", f"{service.url}/collections/{collection}/search", body)
            if answer.status != 200:
                errors.append(answer.body.decode())
            i += 1

    def write() -> None:
        i = 0
        while not stop.wait(0.05):
            batch = records(collection, 2, seed=1000 + i, prefix=f"live{i}-")
            answer = call("POST", f"{service.url}/collections/{collection}/records", {"records": batch})
            if answer.status != 200:
                errors.append(answer.body.decode())
            i += 1

    threads = [threading.Thread(target=read) for _ in range(2)]
    threads += [threading.Thread(target=write)] if writes else []
    for thread in threads:
        thread.start()
    try:
        yield
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=30)
    assert errors == []


def ramp(service: ServiceProcess, *args: str) -> tuple[int, dict | None, str]:
    """`dualvec --server URL ramp ARGS --json` (the CLI in this process, the service a real one):
    exit code, summary, stderr. No config is given, so none can be read."""
    result = CliRunner().invoke(
        cli, ["--server", service.url, "ramp", *args, "--json"], env={"DUALVEC_CONFIG": None}
    )
    summary = json.loads(result.stdout) if result.stdout.strip() else None
    return result.exit_code, summary, result.stderr


def delete_behind_the_back(data: Path, collection: str, ids: list[str]) -> None:
    """Remove records from the target file directly, as a lost write would leave it."""
    spec = CollectionSpec(
        name=collection, dim=DIM, model="m", metric="l2" if collection == "docs" else "cosine"
    )
    store = open_store(f"sqlite-vec://{data}/{collection}-target.db", spec)
    try:
        store.delete(ids)
    finally:
        store.close()


def metric(service: ServiceProcess, name: str, **labels: str) -> float:
    text = call("GET", f"{service.url}/metrics").body.decode()
    wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    found = re.search(rf"^{name}{{{re.escape(wanted)}}} (\S+)$", text, re.MULTILINE)
    assert found, (name, wanted)
    return float(found.group(1))


@pytest.fixture(scope="module")
def service(tmp_path_factory) -> Iterator[ServiceProcess]:
    data = tmp_path_factory.mktemp("ramp")
    process = start_service(data, service_env(data))
    try:
        prepare(process, "docs")
        prepare(process, "notes")
        yield process
    finally:
        assert process.stop() == 0
        assert "Traceback" not in process.log.read_text()


def test_a_healthy_ramp_under_live_reads_and_writes_reaches_100(service):
    with traffic(service, "docs", writes=True):
        code, summary, stderr = ramp(
            service, "--collection", "docs", "--steps", "25,50,100", "--interval", "1s", *RELAXED
        )
    assert code == 0, stderr
    assert (summary["outcome"], summary["read_percent"], summary["phase"]) == ("completed", 100, "dual")
    assert [(i["read_percent"], i["verdict"], i["action"]) for i in summary["intervals"]] == [
        (25, "pass", "advance"),
        (50, "pass", "advance"),
        (100, "pass", "advance"),
    ]
    for interval in summary["intervals"]:
        assert interval["checks"]["comparisons"]["value"] >= MIN_COMPARISONS
        assert interval["checks"]["mismatch_ratio"]["value"] == 0
        assert interval["checks"]["recall"]["value"] == 1
    assert flags(service, "docs")["read_percent"] == 100
    # Progress names the step, what was measured and the limits.
    assert "step 3/3: read_percent 100" in stderr
    assert re.search(r"mismatch_ratio 0 <= max 0\.01", stderr), stderr
    assert (
        metric(
            service, "dualvec_guard_checks_total", collection="docs", check="mismatch_ratio", result="pass"
        )
        == 3
    )
    admin(service, "POST", "/admin/rollback", {"collection": "docs"})


def test_a_divergent_target_is_rolled_back_after_failure_limit_intervals(service, tmp_path):
    delete_behind_the_back(service.log.parent, "notes", [f"r{i}" for i in range(0, RECORDS, 2)])
    before = (service.log.parent / "flags.json").read_bytes()
    with traffic(service, "notes"):
        dry_code, dry, _ = ramp(
            service, "--collection", "notes", "--steps", "50,100", "--interval", "1s", "--dry-run",
            "--guard", "failure_limit=1", *RELAXED,
        )  # fmt: skip
        assert (service.log.parent / "flags.json").read_bytes() == before  # a dry run changes nothing
        code, summary, stderr = ramp(
            service, "--collection", "notes", "--steps", "50,100", "--interval", "1s",
            "--guard", "failure_limit=2", *RELAXED,
        )  # fmt: skip
    assert dry_code == 4 and (dry["outcome"], dry["dry_run"], dry["cause"]) == (
        "rolled_back",
        True,
        "mismatch_ratio",
    )
    assert code == 4, stderr
    assert (summary["outcome"], summary["cause"], summary["failed_checks"]) == (
        "rolled_back",
        "mismatch_ratio",
        2,
    )
    # failure_limit=2: the first failed interval holds the step, the second rolls back.
    assert [(i["read_percent"], i["verdict"], i["action"]) for i in summary["intervals"]] == [
        (50, "fail", "hold"),
        (50, "fail", "rollback"),
    ]
    assert all(i["checks"]["mismatch_ratio"]["value"] > 0.01 for i in summary["intervals"])
    assert "rolled back: mismatch_ratio" in stderr and "read_percent 0" in stderr
    assert (flags(service, "notes")["read_percent"], flags(service, "notes")["phase"]) == (0, "dual")
    # Every decision is a metric: three failed intervals (one of the dry run), one rollback.
    assert (
        metric(
            service, "dualvec_guard_checks_total", collection="notes", check="mismatch_ratio", result="fail"
        )
        == 3
    )
    assert metric(service, "dualvec_guard_rollbacks_total", collection="notes", reason="mismatch_ratio") == 1
    assert metric(service, "dualvec_guard_value", collection="notes", check="mismatch_ratio") > 0.01
    assert metric(service, "dualvec_guard_threshold", collection="notes", check="mismatch_ratio") == 0.01


@pytest.mark.parametrize(
    ("policy", "code", "outcome", "actions"),
    [
        ("fail", 4, "rolled_back", ["hold", "rollback"]),
        ("ignore", 0, "completed", ["advance", "advance"]),
    ],
)
def test_on_no_data_fail_rolls_back_and_ignore_advances(service, policy, code, outcome, actions):
    # No traffic: no comparisons, so every interval has no data.
    got, summary, stderr = ramp(
        service, "--collection", "docs", "--steps", "50,100", "--interval", "0.5s",
        "--guard", f"on_no_data={policy}", "--guard", "failure_limit=2", *RELAXED,
    )  # fmt: skip
    assert got == code, stderr
    assert summary["outcome"] == outcome
    assert [i["verdict"] for i in summary["intervals"]] == ["no_data"] * 2
    assert [i["action"] for i in summary["intervals"]] == actions
    if policy == "fail":
        assert summary["cause"] == "no_data" and flags(service, "docs")["read_percent"] == 0
    else:
        assert flags(service, "docs")["read_percent"] == 100
        admin(service, "POST", "/admin/rollback", {"collection": "docs"})


def test_on_no_data_pause_holds_the_step_until_traffic_comes(service):
    # Run by this process on the deployment's flag file, judging the service's /metrics.
    proc = subprocess.Popen(
        [
            dualvec_command(), "ramp", "--collection", "docs", "--steps", "20,100", "--interval", "0.5s",
            "--metrics-url", f"{service.url}/metrics", "--guard", "on_no_data=pause", "--json", *RELAXED,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=service.log.parent,
        env=service_env(service.log.parent),
    )  # fmt: skip
    progress: list[str] = []
    reader = threading.Thread(target=lambda: progress.extend(proc.stderr), daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 60
        while sum("-> pause" in line for line in progress) < 2:  # two intervals without data
            assert proc.poll() is None and time.monotonic() < deadline, progress
            time.sleep(0.1)
        assert flags(service, "docs")["read_percent"] == 20  # held at the first step, not rolled back
        with traffic(service, "docs"):
            proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        reader.join(timeout=10)
        out, err = proc.stdout.read(), "".join(progress)
        proc.stdout.close()
        proc.stderr.close()
    assert proc.returncode == 0, err
    summary = json.loads(out)
    assert summary["source"] == f"metrics at {service.url}/metrics"
    actions = [(i["read_percent"], i["action"]) for i in summary["intervals"]]
    paused = [a for a in actions if a == (20, "pause")]
    assert len(paused) >= 2 and actions[len(paused)] == (20, "advance") and actions[-1] == (100, "advance"), (
        actions
    )
    assert summary["failed_checks"] == 0
    admin(service, "POST", "/admin/rollback", {"collection": "docs"})


def test_ramp_refuses_what_it_cannot_judge(service):
    admin(service, "POST", "/admin/flags", {"collection": "docs", "changes": {"shadow_percent": 0}})
    try:
        code, _, stderr = ramp(service, "--collection", "docs", "--interval", "1s")
        assert code == 1 and "shadow_percent 0" in stderr, stderr
    finally:
        admin(service, "POST", "/admin/flags", {"collection": "docs", "changes": {"shadow_percent": 100}})
    for args, named in [
        (["--steps", "50,25"], "--steps"),
        (["--interval", "soon"], "--interval"),
        (["--guard", "speed=1"], "--guard"),
        (["--guard", "on_no_data=maybe"], "on_no_data"),
    ]:
        code, _, stderr = ramp(service, "--collection", "docs", *args)
        assert code == 2 and named in stderr, stderr
    code, _, stderr = ramp(service, "--collection", "nope")
    assert code == 2 and "['docs', 'notes']" in stderr
    assert flags(service, "docs")["read_percent"] == 0


def test_help_documents_the_exit_codes_and_a_local_ramp_needs_a_source():
    runner = CliRunner()
    shown = runner.invoke(cli, ["ramp", "--help"], terminal_width=200)
    assert shown.exit_code == 0
    text = " ".join(shown.output.split())
    assert "0 every step reached and judged healthy" in text and "4 rolled back by the guard" in text
    refused = runner.invoke(cli, ["ramp", "--collection", "docs"])
    assert (
        refused.exit_code == 2 and "--prometheus URL" in refused.output and "--server URL" in refused.output
    )


def test_a_ramp_in_the_service_stops_where_it_stands_and_runs_alone(service):
    body = {"collection": "docs", "steps": [30, 100], "interval": "1h"}
    run = admin(service, "POST", "/admin/ramps", body)
    deadline = time.monotonic() + 30
    while flags(service, "docs")["read_percent"] != 30:
        assert time.monotonic() < deadline, admin(service, "GET", f"/admin/ramps/{run['id']}")
        time.sleep(0.05)
    second = call("POST", f"{service.url}/admin/ramps", body)
    assert second.status == 409 and run["id"] in second.json()["error"]["message"]
    stopped = admin(service, "DELETE", f"/admin/ramps/{run['id']}")
    assert stopped["state"] == "stopped" and stopped["events"][-1]["event"] == "stopped"
    assert flags(service, "docs")["read_percent"] == 30  # the flags stay where the ramp left them
    admin(service, "POST", "/admin/rollback", {"collection": "docs"})
