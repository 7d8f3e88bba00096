"""A real dualvec process migrating two collections through one `Migration`, for the Prometheus
end-to-end test.

    python migration_process.py DATA_DIR [SECONDS]

Both collections are declared in the settings, each with its own store files, and take their
flags from one flag file (defaults plus an override), each at its own stage of the migration:

- claims: phase dual, half the reads on sqlite-vec, every read shadowed on the other store;
- faq: phase target-primary, every read on sqlite-vec, half of them shadowed on legacy.

Each collection gets live traffic, and each one's secondary store (claims' sqlite-vec, faq's
legacy) is locked by another process for 0.5 s every 2 s, so writes fail, both outboxes fill and
the shared replayer repairs them. Prints its /metrics URL, then stops cleanly on SIGTERM.
"""

from __future__ import annotations

import signal
import sys
import threading
import time
from contextlib import ExitStack
from pathlib import Path

from dualvec.flags import FlagFile, FlagOverrides, write_flag_file
from dualvec.logs import configure_logging
from dualvec.metrics import DualvecMetrics
from dualvec.metrics_server import start_metrics_server
from dualvec.migration import Migration
from dualvec.settings import CollectionConfig, Settings, ShadowSettings
from dualvec.testing import make_records
from dualvec.testing.data import SAMPLE_FIELDS
from dualvec.testing.faults import sqlite_locked
from dualvec.workload import Workload

DIM = 8
# What each collection is set to, and which of its stores is the secondary (locked now and then).
FLAGS = {
    "claims": {"phase": "dual", "read_percent": 50.0, "shadow_percent": 100.0},
    "faq": {"phase": "target-primary", "read_percent": 100.0, "shadow_percent": 50.0},
}
SECONDARY = {"claims": "target", "faq": "legacy"}


def store_file(data: Path, collection: str, store: str) -> Path:
    return data / f"{collection}-{store}.db"


def settings(data: Path) -> Settings:
    collections = {
        name: CollectionConfig(
            dim=DIM,
            model="test-embedder",
            fields=SAMPLE_FIELDS,
            # A short busy timeout: a write behind the lock fails fast instead of waiting 30 s.
            legacy_url=f"sqlite-blob://{store_file(data, name, 'legacy')}?busy_timeout=0.05",
            target_url=f"sqlite-vec://{store_file(data, name, 'target')}?busy_timeout=0.05",
        )
        for name in FLAGS
    }
    return Settings(
        collections=collections,
        flag_file=data / "flags.json",
        outbox_path=data / "outbox.db",
        replay_interval_seconds=0.2,
        flag_poll_seconds=0.1,
        shadow=ShadowSettings(mismatch_log=data / "mismatches.jsonl"),
    )


def serve(data: Path, seconds: float) -> None:
    claims, faq = FLAGS["claims"], FLAGS["faq"]
    write_flag_file(
        data / "flags.json",
        FlagFile(**claims, collections={"faq": FlagOverrides(**faq)}),
    )
    metrics = DualvecMetrics()
    migration = Migration.from_settings(settings(data), metrics=metrics)
    for name in migration:
        # Shadow reads compare real neighbours, on the ids the workload then rewrites.
        migration[name].upsert(make_records(500, DIM, prefix="live-"))
    server = start_metrics_server(metrics, port=0)
    workloads = [
        Workload(migration[name], readers=1, live_ids=500, seed=i) for i, name in enumerate(migration)
    ]
    for workload in workloads:
        workload.start()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda signum, frame: stop.set())
    print(server.url, flush=True)
    deadline = time.monotonic() + seconds
    while not stop.wait(1.5) and time.monotonic() < deadline:
        with ExitStack() as locks:
            for name, store in SECONDARY.items():
                locks.enter_context(sqlite_locked(store_file(data, name, store)))
            stop.wait(0.5)
    for workload in workloads:
        workload.stop()
    migration.close()
    server.close()


if __name__ == "__main__":
    configure_logging(json=True, level="ERROR")
    data_dir = Path(sys.argv[1])
    serve(data_dir, float(sys.argv[2]) if len(sys.argv) > 2 else 3600.0)
