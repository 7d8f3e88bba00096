"""A real process serving traffic through a Router, for the kill, concurrency and rollback
tests.

    python router_process.py MODE DATA_DIR [SECONDS]

MODE writer: 4 threads upsert and delete their own ids, logging each attempt before the call
and each acknowledgement after it returns (one O_APPEND line each, so a SIGKILL loses nothing
already written). MODE mixed: reads and writes shared ids; counts errors by message. MODE
reader: searches for a record only the target holds and prints each change of serving store.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from pathlib import Path

import numpy as np

from dualvec import Record, open_store
from dualvec.logs import configure_logging
from dualvec.router import Router
from dualvec.settings import Settings
from dualvec.testing import make_records, sample_spec

DIM = 8
SPEC = sample_spec(dim=DIM)


def open_router(data: Path, **settings) -> Router:
    config = Settings(
        phase=settings.pop("phase", "dual"),
        flag_file=data / "flags.json",
        outbox_path=data / "outbox.db",
        replay_interval_seconds=settings.pop("replay_interval_seconds", 3600),
        flag_poll_seconds=0.1,
        **settings,
    )
    legacy = open_store(f"sqlite-blob://{data}/legacy.db", SPEC)
    target = open_store(f"sqlite-vec://{data}/target.db", SPEC)
    return Router.over(legacy, target, config, start_replayer=False)


def writer(data: Path, seconds: float) -> None:
    router = open_router(data)
    log = os.open(data / f"acks-{os.getpid()}.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)

    def note(kind: str, record_id: str, version: int) -> None:
        os.write(log, f"{kind} {record_id} {version}\n".encode())

    def work(thread: int) -> None:
        rng = np.random.default_rng([os.getpid(), thread])
        version = int(time.time() * 1000) % 10**9
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            ids = [f"p{os.getpid()}-t{thread}-{n}" for n in rng.choice(50, size=4, replace=False)]
            version += 1
            if rng.random() < 0.25:
                for record_id in ids:
                    note("try", record_id, -1)
                router.delete(ids)
                for record_id in ids:
                    note("ack", record_id, -1)
            else:
                records = [
                    Record(i, r.vector, {**r.metadata, "year": version})
                    for i, r in zip(ids, make_records(4, DIM, seed=version), strict=True)
                ]
                for record_id in ids:
                    note("try", record_id, version)
                router.upsert(records)
                for record_id in ids:
                    note("ack", record_id, version)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(4)]
    for t in threads:
        t.start()
    print("ready", flush=True)
    for t in threads:
        t.join()
    router.close()


def mixed(data: Path, seconds: float) -> None:
    router = open_router(data)
    errors: dict[str, int] = {}
    ops = 0
    rng = np.random.default_rng(os.getpid())
    print("ready", flush=True)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if rng.random() < 0.5:
                router.upsert(
                    make_records(10, DIM, seed=int(rng.integers(1 << 30)), prefix=f"s{rng.integers(20)}-")
                )
            else:
                router.search(
                    rng.standard_normal(DIM).astype(np.float32), k=5, routing_key=str(rng.integers(100))
                )
            ops += 1
        except Exception as exc:
            errors[str(exc)[:200]] = errors.get(str(exc)[:200], 0) + 1
    router.close()
    print(json.dumps({"ops": ops, "errors": errors}), flush=True)


def reader(data: Path, seconds: float) -> None:
    router = open_router(data)
    marker = make_records(1, DIM, seed=4242, prefix="target-only-")[0]
    served_before = None
    print("ready", flush=True)
    # Reads until a second after it has gone back to legacy (or `seconds` at most), so a slow
    # start of its siblings cannot make it quit before the rollback it is there to see.
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        hits = router.search(marker.vector, k=1)
        served = "target" if hits and hits[0].id == marker.id else "legacy"
        if served != served_before:
            print(f"{time.time():.6f} {served}", flush=True)
            served_before = served
            if served == "legacy":
                deadline = min(deadline, time.monotonic() + 1.0)
    router.close()


if __name__ == "__main__":
    configure_logging(json=True, level="ERROR")
    mode, data_dir = sys.argv[1], Path(sys.argv[2])
    duration = float(sys.argv[3]) if len(sys.argv) > 3 else 3600.0
    {"writer": writer, "mixed": mixed, "reader": reader}[mode](data_dir, duration)
