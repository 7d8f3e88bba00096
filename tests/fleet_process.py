"""One real application process of a fleet, for the guarded-ramp fleet test (test_guard_fleet.py).

    python fleet_process.py DATA_DIR PORT [SECONDS]

It embeds dualvec as an application does, over the deployment's config DATA_DIR/dualvec.toml
(`write_config`): two collections, docs and notes, each a sqlite-blob legacy file and a
sqlite-vec target file in DATA_DIR; the flag file DATA_DIR/flags.json, polled every 0.1 s; one
outbox. One `Migration` routes both, and its one `DualvecMetrics` is served on
http://127.0.0.1:PORT/metrics. Shadowed reads with varied routing keys run on both collections
until SIGTERM (or SECONDS).

The one fake part: docs' target is wrapped in `SlowSearches`, which sleeps `DELAY_SECONDS` in
every search, a stand-in for a target that became slow.

Prints one JSON line on stdout each time it sees a collection's flags change (and once per
collection at start, once its /metrics is served): collection, phase, read_percent and the
time.time() it saw them, looking every 10 ms.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from pathlib import Path

import numpy as np
from helpers import SlowSearches

from dualvec import open_store
from dualvec.logs import configure_logging
from dualvec.metrics import DualvecMetrics
from dualvec.metrics_server import start_metrics_server
from dualvec.migration import Migration
from dualvec.protocol import VectorStore
from dualvec.router import Router
from dualvec.settings import Flags, load_settings

COLLECTIONS = ("docs", "notes")
SLOW = "docs"
DIM = 4
# How much slower docs' target is on every search. On a busy 2-core machine the p99 of a tiny
# search is itself 10-200 ms (scheduling stalls), so a few tens of ms would be lost in it.
DELAY_SECONDS = 0.25
# Three readers per collection, each pausing this long between searches: ~15-30 searches a
# second per collection, all shadowed, which sixteen shadow workers keep up with even while every
# docs shadow waits on the slow target (a backlog would crowd notes' shadows out).
READERS = 3
READ_PAUSE_SECONDS = 0.1
WATCH_SECONDS = 0.01

CONFIG = """
flag_file = "{data}/flags.json"
outbox_path = "{data}/outbox.db"
flag_poll_seconds = 0.1

[shadow]
workers = 16
mismatch_log = "{data}/mismatches.jsonl"

[collections.docs]
dim = {dim}
model = "m"
legacy_url = "sqlite-blob://{data}/docs-legacy.db"
target_url = "sqlite-vec://{data}/docs-target.db"

[collections.notes]
dim = {dim}
model = "m"
legacy_url = "sqlite-blob://{data}/notes-legacy.db"
target_url = "sqlite-vec://{data}/notes-target.db"
"""


def write_config(data: Path) -> Path:
    """The deployment's config, which every fleet process and every `dualvec` command reads."""
    path = data / "dualvec.toml"
    path.write_text(CONFIG.format(data=data, dim=DIM))
    return path


def read(router: Router, stop: threading.Event, seed: int) -> None:
    queries = np.random.default_rng(seed).standard_normal((256, DIM)).astype(np.float32)
    i = 0
    while not stop.wait(READ_PAUSE_SECONDS):
        router.search(queries[i % len(queries)], k=5, routing_key=f"user-{i % 97}")
        i += 1


def watch(migration: Migration, stop: threading.Event) -> None:
    seen: dict[str, Flags] = {}
    while True:
        for name in migration:
            flags = migration[name].flags.flags
            if seen.get(name) != flags:
                seen[name] = flags
                line = {
                    "collection": name,
                    "phase": flags.phase.value,
                    "read_percent": flags.read_percent,
                    "time": time.time(),
                }
                print(json.dumps(line), flush=True)
        if stop.wait(WATCH_SECONDS):
            return


def serve(data: Path, port: int, seconds: float) -> None:
    os.environ["DUALVEC_CONFIG"] = str(data / "dualvec.toml")
    settings = load_settings()
    stores: dict[str, tuple[VectorStore, VectorStore]] = {}
    for name in COLLECTIONS:
        (legacy_url, target_url), (legacy_spec, target_spec) = settings.urls(name), settings.specs(name)
        target = open_store(target_url, target_spec)
        stores[name] = (
            open_store(legacy_url, legacy_spec),
            SlowSearches(target, DELAY_SECONDS) if name == SLOW else target,
        )
    metrics = DualvecMetrics()
    migration = Migration(stores, settings, metrics=metrics)
    server = start_metrics_server(metrics, port=port)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda signum, frame: stop.set())
    threads = [threading.Thread(target=watch, args=(migration, stop))] + [
        threading.Thread(target=read, args=(migration[name], stop, seed))
        for seed, name in enumerate(name for name in migration for _ in range(READERS))
    ]
    for thread in threads:
        thread.start()
    stop.wait(seconds)
    stop.set()
    for thread in threads:
        thread.join()
    migration.close()
    server.close()


if __name__ == "__main__":
    configure_logging(json=True, level="ERROR")
    serve(Path(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]) if len(sys.argv) > 3 else 120.0)
