"""A real `dualvec serve` process for tests: its config, its start on a free port (read back
from what it prints), plain HTTP calls to it, and its stop."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Answer", "ServiceProcess", "call", "dualvec_command", "service_env", "start_service"]

CONFIG = """
phase = "dual"
flag_file = "{data}/flags.json"
outbox_path = "{data}/outbox.db"
replay_interval_seconds = 3600

[collections.docs]
dim = 4
model = "m"
metric = "l2"
fields = {{ lang = "str" }}
legacy_url = "sqlite-blob://{data}/docs-legacy.db"
target_url = "sqlite-vec://{data}/docs-target.db"

[collections.notes]
dim = 4
model = "m"
legacy_url = "sqlite-blob://{data}/notes-legacy.db"
target_url = "sqlite-vec://{data}/notes-target.db"
"""

_SERVING = re.compile(r"serving \d+ collection\(s\) on (http://\S+)")


def dualvec_command() -> str:
    return str(Path(sys.executable).with_name("dualvec"))  # the console script; no __main__ module


def service_env(data: Path, **extra: str) -> dict[str, str]:
    """The environment of a service over two collections whose files live in `data`."""
    config = data / "dualvec.toml"
    config.write_text(CONFIG.format(data=data))
    env = {k: v for k, v in os.environ.items() if not k.startswith("DUALVEC_")}
    return {**env, "DUALVEC_CONFIG": str(config), **extra}


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> dict:
        return json.loads(self.body)


def call(method: str, url: str, body: object = None, headers: dict[str, str] | None = None) -> Answer:
    """One HTTP request; an error status is an answer like any other."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return Answer(
                response.status, {k.lower(): v for k, v in response.headers.items()}, response.read()
            )
    except urllib.error.HTTPError as error:
        return Answer(error.code, {k.lower(): v for k, v in error.headers.items()}, error.read())


@dataclass
class ServiceProcess:
    proc: subprocess.Popen
    url: str
    log: Path

    def stop(self) -> int:
        """SIGTERM, then SIGKILL if it has not exited within 30 s; the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(timeout=30)


def start_service(data: Path, env: dict[str, str], *args: str, timeout: float = 30) -> ServiceProcess:
    """`dualvec serve --port 0 ARGS`, once it prints its URL and /readyz answers 200."""
    log = data / "serve.log"
    with log.open("wb") as sink:
        proc = subprocess.Popen(
            [dualvec_command(), "serve", "--port", "0", *args], cwd=data, env=env, stderr=sink
        )
    deadline = time.monotonic() + timeout
    url = None
    while url is None:
        assert proc.poll() is None, f"exited with {proc.returncode}: {log.read_text()}"
        assert time.monotonic() < deadline, f"no URL within {timeout} s: {log.read_text()}"
        found = _SERVING.search(log.read_text())
        url = found.group(1) if found else None
        time.sleep(0.05)
    service = ServiceProcess(proc, url, log)
    while True:
        try:
            if call("GET", f"{url}/readyz").status == 200:
                return service
        except (urllib.error.URLError, ConnectionError):
            pass
        if time.monotonic() > deadline:
            service.stop()
            raise AssertionError(f"not ready within {timeout} s: {log.read_text()}")
        time.sleep(0.05)
