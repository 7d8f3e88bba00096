"""A client that got a 2xx for an upsert or a delete never loses it, whatever happens to the
service: a real `dualvec serve` over a sqlite-blob legacy store and a sqlite-vec target is
killed with SIGKILL under a write load twenty times (ten in phase `dual`; then, once its
replayer has drained the outbox, a verify job comes back clean and the phase is changed through
the admin API, ten in `target-primary`), restarted on the same files each time, and finally
left to replay. Then both store files are opened directly and every acknowledged write is
checked.

What a store may hold for an id, precisely: each id is written by one client thread at a time,
so its requests are totally ordered. Let A be its last request answered 2xx (the id's state
before any request being "absent"). The store must hold A's result (the upserted vector and
metadata, or nothing for a delete), or the result of a request sent after A that got no 2xx
(killed in flight, it may or may not have been applied); nothing else. Both stores must hold
the same thing, and the outbox must be empty.
"""

from __future__ import annotations

import http.client
import itertools
import json
import os
import random
import signal
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Callable
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
import pytest
from helpers import assert_same_contents, contents
from service_process import ServiceProcess, call, start_service

from dualvec import CollectionSpec, FieldSpec, open_store

pytestmark = pytest.mark.slow

DIM = 8
KILLS = 20
THREADS = 4
IDS_PER_THREAD = 30
LANGS = ("en", "de", "fr")
SPEC = CollectionSpec(
    name="docs",
    dim=DIM,
    metric="l2",
    model="m",
    fields={"lang": FieldSpec(type="str"), "version": FieldSpec(type="int")},
)
# A short replay interval: each restart repairs what the last kill left while new writes go on.
CONFIG = """
phase = "dual"
flag_file = "{data}/flags.json"
outbox_path = "{data}/outbox.db"
flag_poll_seconds = 0.1
replay_interval_seconds = 0.2

[collections.docs]
dim = {dim}
model = "m"
metric = "l2"
fields = {{ lang = "str", version = "int" }}
legacy_url = "sqlite-blob://{data}/legacy.db"
target_url = "sqlite-vec://{data}/target.db"
"""

ABSENT = None  # the state of an id no store holds; otherwise the version last written to it


@dataclass
class Attempt:
    """One id's part in one request: the state it asks for, and whether the request got a 2xx."""

    state: int | None
    acked: bool = False


@dataclass
class Ledger:
    """What the client threads sent and what was acknowledged, per id in request order."""

    history: dict[str, list[Attempt]] = field(default_factory=dict)
    sent: dict[tuple[str, int], tuple[list[float], dict]] = field(default_factory=dict)
    answers: Counter = field(default_factory=Counter)  # (kind, status) -> requests
    failures: list[tuple[float, float]] = field(default_factory=list)  # unanswered: (sent, failed)
    versions: itertools.count = field(default_factory=lambda: itertools.count(1))
    lock: threading.Lock = field(default_factory=threading.Lock)

    def attempt(self, ids: list[str], state: int | None) -> list[Attempt]:
        """Note a request before it is sent (only its own thread writes these ids)."""
        attempts = [Attempt(state) for _ in ids]
        for record_id, attempt in zip(ids, attempts, strict=True):
            self.history.setdefault(record_id, []).append(attempt)
        return attempts

    def answered(self, kind: str, status: int) -> None:
        with self.lock:
            self.answers[kind, status] += 1

    def unanswered(self, sent: float) -> None:
        with self.lock:
            self.failures.append((sent, time.monotonic()))

    def allowed(self, record_id: str) -> set[int | None]:
        """The states the stores may hold for an id (the module docstring says why)."""
        attempts = self.history[record_id]
        last_ack = max((i for i, a in enumerate(attempts) if a.acked), default=-1)
        states = {attempts[last_ack].state if last_ack >= 0 else ABSENT}
        return states | {a.state for a in attempts[last_ack + 1 :]}


def client(url: str, thread: int, ledger: Ledger, seed: int, stop: threading.Event) -> None:
    """Send upserts (new vectors and metadata, often for ids that exist) and deletes of this
    thread's own ids, one request at a time, until the service stops answering."""
    rng = np.random.default_rng(seed)
    ids = [f"t{thread}-{n}" for n in range(IDS_PER_THREAD)]
    address = urlsplit(url)
    connection = http.client.HTTPConnection(address.hostname, address.port, timeout=30)
    try:
        while not stop.is_set():
            chosen = [ids[i] for i in rng.choice(IDS_PER_THREAD, size=int(rng.integers(1, 9)), replace=False)]
            if rng.random() < 0.25:
                kind, path, body = "delete", "/collections/docs/delete", {"ids": chosen}
                attempts = ledger.attempt(chosen, ABSENT)
            else:
                version = next(ledger.versions)
                vectors = rng.standard_normal((len(chosen), DIM)).astype(np.float32).tolist()
                metadata = {"lang": LANGS[version % len(LANGS)], "version": version}
                records = []
                for record_id, vector in zip(chosen, vectors, strict=True):
                    ledger.sent[record_id, version] = (vector, metadata)
                    records.append({"id": record_id, "vector": vector, "metadata": metadata})
                kind, path, body = "upsert", "/collections/docs/records", {"records": records}
                attempts = ledger.attempt(chosen, version)
            sent = time.monotonic()
            try:
                connection.request("POST", path, json.dumps(body), {"Content-Type": "application/json"})
                answer = connection.getresponse()
                answer.read()
            except (OSError, http.client.HTTPException):
                ledger.unanswered(sent)
                return  # the service is gone; this request may or may not have been applied
            ledger.answered(kind, answer.status)
            if 200 <= answer.status < 300:
                for attempt in attempts:
                    attempt.acked = True
    finally:
        connection.close()


def intents_left(data: Path) -> int:
    """Writes a dead service was inside of: intents recorded and not yet cleared."""
    with closing(sqlite3.connect(data / "outbox.db")) as outbox:
        return outbox.execute("SELECT count(*) FROM intents").fetchone()[0]


def wait_for(service: ServiceProcess, path: str, done: Callable[[dict], bool], timeout: float = 30) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        answer = call("GET", f"{service.url}{path}").json()
        if done(answer):
            return answer
        assert time.monotonic() < deadline, answer
        time.sleep(0.05)


def outbox_drained(service: ServiceProcess) -> None:
    wait_for(service, "/admin/status", lambda s: s["collections"]["docs"]["outbox"]["depth"] == 0)


def check_stores(data: Path, ledger: Ledger) -> dict[str, int]:
    """Every acknowledged write is in both stores (see the module docstring); how many ids each
    holds."""
    held = {}
    with (
        open_store(f"sqlite-blob://{data}/legacy.db", SPEC) as legacy,
        open_store(f"sqlite-vec://{data}/target.db", SPEC) as target,
    ):
        for role, store in (("legacy", legacy), ("target", target)):
            records = contents(store)
            assert records.keys() <= ledger.history.keys(), f"{role} holds ids never written"
            for record_id in ledger.history:
                vector, metadata = records.get(record_id, (None, None))
                state = ABSENT if metadata is None else metadata["version"]
                allowed = ledger.allowed(record_id)
                assert state in allowed, f"{role}: {record_id} holds {state}, allowed {allowed}"
                if state is not ABSENT:
                    sent_vector, sent_metadata = ledger.sent[record_id, state]
                    assert metadata == sent_metadata, (role, record_id)
                    assert np.array_equal(vector, np.asarray(sent_vector, dtype=np.float32)), (
                        role,
                        record_id,
                    )
            held[role] = len(records)
        assert_same_contents(legacy, target)
    return held


def switch_to_target_primary(service: ServiceProcess, ledger: Ledger) -> None:
    """As an operator would, through the service: drain the outbox, verify, change the phase."""
    outbox_drained(service)
    assert check_stores(service.log.parent, ledger)["legacy"] > 0
    submitted = call("POST", f"{service.url}/admin/jobs", {"kind": "verify"})
    assert submitted.status == 202, submitted.body
    job = wait_for(service, f"/admin/jobs/{submitted.json()['id']}", lambda j: j["state"] != "running")
    assert job["state"] == "done" and job["result"]["clean"], job
    changed = call("POST", f"{service.url}/admin/flags", {"changes": {"phase": "target-primary"}})
    assert changed.status == 200, changed.body
    wait_for(service, "/readyz", lambda r: r["collections"]["docs"]["phase"] == "target-primary")


@dataclass
class Kill:
    in_flight: bool  # a request of the client was unanswered when the service died
    inside_a_write: bool  # the service died between recording intents and clearing them


def kill_under_load(service: ServiceProcess, ledger: Ledger, seed: int, seconds: float) -> Kill:
    stop = threading.Event()
    before = len(ledger.failures)
    clients = [
        threading.Thread(target=client, args=(service.url, t, ledger, seed * THREADS + t, stop))
        for t in range(THREADS)
    ]
    for thread in clients:
        thread.start()
    time.sleep(seconds)
    killed_at = time.monotonic()
    os.kill(service.proc.pid, signal.SIGKILL)  # the server process itself: no shell in between
    assert service.proc.wait(timeout=30) == -signal.SIGKILL
    stop.set()
    for thread in clients:
        thread.join(timeout=60)
    failures = ledger.failures[before:]
    assert all(failed >= killed_at for _, failed in failures), "a request failed while the service ran"
    data = service.log.parent
    return Kill(any(sent < killed_at for sent, _ in failures), intents_left(data) > 0)


def test_sigkill_under_write_load_loses_no_acknowledged_write(tmp_path):
    began = time.monotonic()
    rng = random.Random(11)
    config = tmp_path / "dualvec.toml"
    config.write_text(CONFIG.format(data=tmp_path, dim=DIM))
    env = {k: v for k, v in os.environ.items() if not k.startswith("DUALVEC_")}
    env["DUALVEC_CONFIG"] = str(config)
    ledger = Ledger()
    kills = []
    for cycle in range(KILLS):
        service = start_service(tmp_path, env)
        try:
            if cycle == KILLS // 2:
                switch_to_target_primary(service, ledger)
            kills.append(kill_under_load(service, ledger, cycle, rng.uniform(0.2, 0.8)))
        finally:
            service.proc.kill()
            service.proc.wait()

    service = start_service(tmp_path, env)  # its replayer repairs what the last kill left
    try:
        outbox_drained(service)
        assert call("GET", f"{service.url}/readyz").json()["collections"]["docs"]["phase"] == "target-primary"
    finally:
        assert service.stop() == 0
    assert "Traceback" not in service.log.read_text()
    held = check_stores(tmp_path, ledger)
    assert intents_left(tmp_path) == 0

    answers = ledger.answers
    upserts, deletes = answers["upsert", 200], answers["delete", 200]
    in_flight = sum(k.in_flight for k in kills)
    inside_a_write = sum(k.inside_a_write for k in kills)
    print(
        f"{KILLS} kills in {time.monotonic() - began:.1f} s: {upserts} upserts and {deletes} deletes "
        f"acknowledged ({dict(answers)}), {len(ledger.failures)} requests unanswered; "
        f"{in_flight} kills with a request in flight, {inside_a_write} inside a write; "
        f"{held['legacy']} ids held at the end"
    )
    assert set(answers) == {("upsert", 200), ("delete", 200)}, answers
    assert upserts >= 300 and deletes >= 50
    assert in_flight >= KILLS * 3 // 4
    assert inside_a_write >= KILLS // 5
    assert 0 < held["legacy"] < THREADS * IDS_PER_THREAD
