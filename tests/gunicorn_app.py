"""The WSGI application the gunicorn test serves: one Migration built at import time, so under
``--preload`` the master builds it and every worker inherits it through fork().

GET /upsert?n=N writes doc-N, /search?n=N searches with doc-N's vector, /flags reads the flags
and /metrics is the multiprocess exposition; every JSON answer names the worker's pid and the
flags it follows.
"""

from __future__ import annotations

import json
import os
from urllib.parse import parse_qs

import numpy as np
from prometheus_client import CONTENT_TYPE_LATEST

from dualvec import Record
from dualvec.migration import Migration
from dualvec.settings import load_settings

DIM = 8

migration = Migration.from_settings(load_settings())
router = migration["docs"]
# One search before the fork (it counts in the master's metrics): the workers inherit
# connections, a shadow pool and threads that have all been used.
WARMUP_SEARCHES = 1
router.search(np.ones(DIM, np.float32), k=1)


def vector(n: int) -> np.ndarray:
    return np.random.default_rng(n).standard_normal(DIM).astype(np.float32)


def app(environ, start_response):
    path = environ["PATH_INFO"]
    query = {key: values[0] for key, values in parse_qs(environ["QUERY_STRING"]).items()}
    if path == "/metrics":
        start_response("200 OK", [("Content-Type", CONTENT_TYPE_LATEST)])
        return [migration.metrics.render()]
    answer: dict = {}
    if path == "/upsert":
        n = int(query["n"])
        router.upsert([Record(f"doc-{n}", vector(n), {})])
    elif path == "/search":
        answer["ids"] = [hit.id for hit in router.search(vector(int(query["n"])), k=3)]
    flags = router.flags.flags
    answer.update(pid=os.getpid(), phase=flags.phase.value, read_percent=flags.read_percent)
    start_response("200 OK", [("Content-Type", "application/json")])
    return [json.dumps(answer).encode()]
