"""What the SQLite-based stores share: the persisted spec and explicit write transactions."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from dualvec.errors import ConfigError
from dualvec.spec import CollectionSpec, check_same_spec
from dualvec.sqlite_driver import BUSY_TIMEOUT_SECONDS, write_transaction

__all__ = ["bind_spec", "bound_spec", "parse_seconds", "quote", "table_option"]


def quote(name: str) -> str:
    """Quote an SQL identifier. Names dualvec makes are plain ASCII (`check_name`); a table an
    application named (`?table=`) may hold anything, so quotes inside are doubled."""
    return '"' + name.replace('"', '""') + '"'


def table_option(value: str | None) -> str | None:
    """A store URL's `?table=` (the backend's own table name), refused if SQLite cannot name it."""
    if value is None:
        return None
    if not value or "\x00" in value or len(value) > 255:
        raise ConfigError(f"store URL option table={value!r}: expected a table name of 1-255 characters")
    return value


def bind_spec(conn: Any, spec: CollectionSpec, ddl: Sequence[str]) -> None:
    """Create the collection's tables (`ddl`) and record its spec, in one transaction, on first
    open; refuse a later open whose spec differs. A collection already bound opens without
    taking the write lock, so opening never waits on (or fails behind) a busy writer."""
    row = bound_spec(conn, spec.name)
    if row is None:
        with write_transaction(conn):
            conn.execute(
                "CREATE TABLE IF NOT EXISTS dualvec_collections (name TEXT PRIMARY KEY, spec TEXT NOT NULL)"
            )
            row = bound_spec(conn, spec.name)
            if row is None:
                for statement in ddl:
                    conn.execute(statement)
                conn.execute(
                    "INSERT INTO dualvec_collections (name, spec) VALUES (?, ?)",
                    (spec.name, spec.model_dump_json()),
                )
                return
    check_same_spec(CollectionSpec.model_validate(json.loads(row[0])), spec)


def bound_spec(conn: Any, name: str) -> tuple[str] | None:
    """The spec the collection `name` is bound to, as stored (JSON), or None if unbound."""
    exists = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'dualvec_collections'"
    ).fetchone()
    if exists is None:
        return None
    row: tuple[str] | None = conn.execute(
        "SELECT spec FROM dualvec_collections WHERE name = ?", (name,)
    ).fetchone()
    return row


def parse_seconds(option: str, value: str | None) -> float:
    """A store URL's seconds option (e.g. `?busy_timeout=0.5`), defaulting to SQLite's 30 s."""
    if value is None:
        return BUSY_TIMEOUT_SECONDS
    try:
        seconds = float(value)
    except ValueError:
        seconds = -1.0
    if not 0 <= seconds <= 3600:
        raise ConfigError(f"store URL option {option}={value!r}: expected seconds from 0 to 3600")
    return seconds
