"""`dualvec --server URL COMMAND`: the command runs through a `dualvec serve` admin API instead of
opening the stores itself; it needs no config file and touches no store.

The client is the standard library's `urllib`: a handful of JSON requests to one service do not
justify a dependency, and the CLI stays installable without the server extra. The admin token
travels as `Authorization: Bearer $DUALVEC_ADMIN_TOKEN` when that variable is set.

Answers map onto the local command's exit codes: 404 (an unknown collection, naming the declared
ones) and 422 are usage errors (2); any other refusal, such as a flag change the phase rules
refuse (409), is `error: MESSAGE` and 1, as is a service that cannot be reached.
"""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.parse
import urllib.request
from contextlib import ExitStack
from typing import Any

import click

from dualvec.cli.common import EXIT_INTERRUPTED
from dualvec.cli.progress import progress_reporter
from dualvec.errors import DualvecError
from dualvec.progress import Progress, ProgressCallback

__all__ = ["REMOTE_COMMANDS", "Remote", "RemoteError", "remote_client", "run_job", "unsupported"]

# The subcommands that can run through a service.
REMOTE_COMMANDS = frozenset({"status", "flags", "rollback", "replay", "backfill", "verify", "ramp"})
# How often a job is polled; how long one request may take (a replay may have a backlog to clear).
_POLL_SECONDS = 0.5
_TIMEOUT_SECONDS = 600.0


class RemoteError(DualvecError):
    """The service refused the request, failed, or could not be reached."""


class Remote:
    """The admin API of one service."""

    def __init__(self, url: str, token: str | None) -> None:
        self.url = url.rstrip("/")
        self.token = token

    def call(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None = None,
        query: list[tuple[str, str]] | None = None,
    ) -> Any:
        """The JSON answer of one request; a refusal raises (see the module docstring)."""
        url = self.url + path + (f"?{urllib.parse.urlencode(query)}" if query else "")
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(url, data=data, method=method)
        request.add_header("Accept", "application/json")
        if data is not None:
            request.add_header("Content-Type", "application/json")
        if self.token:
            request.add_header("Authorization", f"Bearer {self.token}")
        try:
            with urllib.request.urlopen(request, timeout=_TIMEOUT_SECONDS) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as error:
            status, message = error.code, _message(error)
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise RemoteError(f"cannot reach the service at {self.url}: {reason}") from exc
        if status in (404, 422) and not message.startswith("no route"):
            raise click.UsageError(message)
        if status == 401:
            raise RemoteError(f"{message} (set DUALVEC_ADMIN_TOKEN to the service's token)")
        raise RemoteError(message)


def _message(error: urllib.error.HTTPError) -> str:
    body = error.read()
    try:
        return str(json.loads(body)["error"]["message"])
    except (ValueError, KeyError, TypeError):
        return f"HTTP {error.code} from the service: {body[:200]!r}"


def remote_client() -> Remote | None:
    """The service named by the root `--server` option (or DUALVEC_SERVER), if any."""
    root = click.get_current_context().find_root()
    server = (root.obj or {}).get("server")
    if not server:
        return None
    return Remote(server, os.environ.get("DUALVEC_ADMIN_TOKEN") or None)


def unsupported(option: str, given: object) -> None:
    """Refuse an option that has no meaning through a service."""
    if given:
        raise click.UsageError(f"{option} is not available with --server (the service keeps its own files)")


def run_job(remote: Remote, body: dict[str, Any], *, silent: bool) -> dict[str, Any]:
    """Submit a backfill or verify job, show its progress on stderr as the local command does,
    and return its result; a failed job raises. Interrupted, the job goes on in the service."""
    job = remote.call("POST", "/admin/jobs", body)
    try:
        with ExitStack() as reporter:
            current: str | None = None
            on_progress: ProgressCallback = lambda progress: None  # noqa: E731
            while True:
                names = list(job["progress"])
                for name in names[names.index(current) if current in names else 0 :]:
                    if name != current:
                        reporter.close()
                        on_progress = reporter.enter_context(
                            progress_reporter(f"{job['kind']} {name}", silent=silent)
                        )
                        current = name
                    entry = job["progress"][name]
                    on_progress(Progress(entry["done"], entry["total"], entry["elapsed"], entry["resumed"]))
                if job["state"] != "running":
                    break
                time.sleep(_POLL_SECONDS)
                job = remote.call("GET", f"/admin/jobs/{job['id']}")
    except KeyboardInterrupt as exc:
        click.echo(f"interrupted; job {job['id']} goes on in the service", err=True)
        raise SystemExit(EXIT_INTERRUPTED) from exc
    if job["state"] == "failed":
        raise RemoteError(job["error"]["message"])
    result: dict[str, Any] = job["result"]
    return result
