"""A FastAPI app on a real uvicorn that serves searches and writes through dualvec and measures
its own event loop's lag, for test_async_fastapi.py.

    python async_app.py DATA_DIR MODE

DATA_DIR holds legacy.db (sqlite-blob) and target.db (sqlite-vec) of the `docs` collection
(`SPEC`). MODE `async` awaits an `AsyncRouter`; MODE `sync` calls the sync `Router` straight
from the same async endpoints, which is what an asyncio app must not do (the evidence that the
lag measurement can fail). It listens on 127.0.0.1, on a port it picks, and prints
"listening on URL" once it serves.

The lag monitor is a task that sleeps 1 ms at a time and records how late it wakes up: every
moment the loop spends blocked shows up there, whoever blocked it.
"""

from __future__ import annotations

import asyncio
import socket
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import numpy as np
import uvicorn
from fastapi import FastAPI
from pydantic import BaseModel

from dualvec import AsyncRouter, Record, Router, open_store
from dualvec.settings import Settings
from dualvec.testing import sample_spec

DIM = 384
SPEC = sample_spec(dim=DIM)
TICK_SECONDS = 0.001


class SearchBody(BaseModel):
    vector: list[float]
    k: int = 10
    routing_key: str | None = None


class RecordBody(BaseModel):
    id: str
    vector: list[float]
    metadata: dict[str, Any]


class UpsertBody(BaseModel):
    records: list[RecordBody]


class LagMonitor:
    """How late a 1 ms sleep wakes up, sample by sample, since the last reset."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.lags: list[float] = []
        self.since = time.perf_counter()

    async def run(self) -> None:
        while True:
            start = time.perf_counter()
            await asyncio.sleep(TICK_SECONDS)
            self.lags.append(time.perf_counter() - start - TICK_SECONDS)

    def summary(self) -> dict[str, float]:
        lags = np.asarray(self.lags) * 1000
        p50, p99 = np.percentile(lags, [50, 99]) if len(lags) else (0.0, 0.0)
        return {
            "seconds": time.perf_counter() - self.since,
            "samples": len(lags),
            "p50_ms": p50,
            "p99_ms": p99,
            "max_ms": float(lags.max(initial=0)),
        }


def open_router(data: Path) -> Router:
    settings = Settings(
        phase="dual",
        read_percent=50,
        shadow_percent=100,
        flag_file=data / "flags.json",
        outbox_path=data / "outbox.db",
        replay_interval_seconds=3600,
    )
    legacy = open_store(f"sqlite-blob://{data}/legacy.db", SPEC)
    target = open_store(f"sqlite-vec://{data}/target.db", SPEC)
    return Router.over(legacy, target, settings)


def make_app(data: Path, mode: str) -> FastAPI:
    lag = LagMonitor()
    stores: dict[str, Any] = {}

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        router = await asyncio.to_thread(open_router, data)
        stores["router"] = router
        stores["arouter"] = AsyncRouter(router)
        monitor = asyncio.create_task(lag.run())
        try:
            yield
        finally:
            monitor.cancel()
            await stores["arouter"].aclose()
            await asyncio.to_thread(router.close)
            print("closed", flush=True)

    app = FastAPI(lifespan=lifespan)

    @app.post("/search")
    async def search(body: SearchBody) -> dict[str, Any]:
        if mode == "async":
            hits = await stores["arouter"].search(body.vector, body.k, routing_key=body.routing_key)
        else:
            hits = stores["router"].search(body.vector, body.k, routing_key=body.routing_key)
        return {"hits": [{"id": h.id, "distance": h.distance} for h in hits]}

    @app.post("/records")
    async def upsert(body: UpsertBody) -> dict[str, int]:
        records = [Record(r.id, r.vector, r.metadata) for r in body.records]
        if mode == "async":
            await stores["arouter"].upsert(records)
        else:
            stores["router"].upsert(records)
        return {"upserted": len(records)}

    @app.get("/count")
    async def count() -> dict[str, int]:
        router = stores["router"]
        legacy, target = await asyncio.gather(
            asyncio.to_thread(router.stores["legacy"].count), asyncio.to_thread(router.stores["target"].count)
        )
        return {"legacy": legacy, "target": target, "outbox": router.outbox.stats().depth}

    @app.post("/lag/reset")
    async def reset_lag() -> dict[str, int]:
        lag.reset()
        return {"samples": 0}

    @app.get("/lag")
    async def lag_summary() -> dict[str, float]:
        return lag.summary()

    return app


def main() -> None:
    data, mode = Path(sys.argv[1]), sys.argv[2]
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    config = uvicorn.Config(make_app(data, mode), log_level="warning", timeout_keep_alive=60)
    server = uvicorn.Server(config)
    print(f"listening on http://127.0.0.1:{listener.getsockname()[1]}", flush=True)
    server.run(sockets=[listener])


if __name__ == "__main__":
    main()
