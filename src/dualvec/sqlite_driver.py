"""A SQLite DB-API module that can load extensions, chosen automatically.

Many Pythons (pyenv builds, macOS's system Python) compile `sqlite3` without
`enable_load_extension`. dualvec then uses a module that ships its own SQLite with loading
enabled, in this order: the standard library when it can load, `pysqlite3` (from the
`pysqlite3-binary` wheel on Linux x86_64), then `sqlean` (`sqlean.py`, Linux and macOS).
`DUALVEC_SQLITE_DRIVER` forces one of `sqlite3`, `pysqlite3`, `sqlean`.
"""

from __future__ import annotations

import functools
import importlib
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from dualvec.errors import ConfigError, ExtensionLoadError

__all__ = ["DRIVER_MODULES", "Driver", "choose_driver", "connect", "load_extension", "write_transaction"]

DRIVER_MODULES: dict[str, str] = {
    "sqlite3": "sqlite3",
    "pysqlite3": "pysqlite3.dbapi2",
    "sqlean": "sqlean",
}
BUSY_TIMEOUT_SECONDS = 30.0


@dataclass(frozen=True)
class Driver:
    """The DB-API module in use and the SQLite it carries."""

    name: str
    module: ModuleType

    @property
    def sqlite_version(self) -> str:
        return str(self.module.sqlite_version)

    @property
    def errors(self) -> tuple[type[Exception], ...]:
        return (self.module.Error,)


def _can_load_extensions(module: ModuleType) -> bool:
    return hasattr(module.Connection, "enable_load_extension")


def _import(name: str) -> ModuleType | None:
    try:
        return importlib.import_module(DRIVER_MODULES[name])
    except ImportError:
        return None


@functools.cache
def choose_driver() -> Driver:
    """The first module that can load extensions; cached for the life of the process."""
    forced = os.environ.get("DUALVEC_SQLITE_DRIVER")
    if forced:
        if forced not in DRIVER_MODULES:
            raise ConfigError(
                f"DUALVEC_SQLITE_DRIVER={forced!r} is unknown; use one of {sorted(DRIVER_MODULES)}"
            )
        candidates = [forced]
    else:
        candidates = list(DRIVER_MODULES)
    tried = []
    for name in candidates:
        module = _import(name)
        if module is None:
            tried.append(f"{name}: not installed")
        elif not _can_load_extensions(module):
            tried.append(f"{name}: built without enable_load_extension")
        else:
            return Driver(name, module)
    raise ExtensionLoadError(
        "no SQLite module that can load extensions: "
        + "; ".join(tried)
        + ". Install one: pip install pysqlite3-binary (Linux x86_64) or sqlean.py (Linux, macOS)"
    )


def load_extension(conn: Any, loader: Callable[[Any], None], name: str) -> None:
    """Load one extension into `conn`, leaving extension loading switched off afterwards."""
    try:
        conn.enable_load_extension(True)
        try:
            loader(conn)
        finally:
            conn.enable_load_extension(False)
    except Exception as exc:
        raise ExtensionLoadError(f"cannot load the {name} SQLite extension: {exc}") from exc


def _load_sqlite_vec(conn: Any) -> None:
    import sqlite_vec

    load_extension(conn, sqlite_vec.load, "sqlite-vec")


def connect(
    path: str | Path,
    *,
    vec: bool = True,
    readonly: bool = False,
    busy_timeout: float = BUSY_TIMEOUT_SECONDS,
    cache_mib: int = 64,
) -> Any:
    """Open `path` in autocommit mode (callers own their transactions), WAL, busy timeout.

    WAL lets readers run beside one writer; with synchronous=NORMAL a committed transaction
    survives the process being killed (not a power cut), which is the durability dualvec claims.
    """
    driver = choose_driver()
    target = Path(path)
    if not readonly:
        target.parent.mkdir(parents=True, exist_ok=True)
    conn = driver.module.connect(
        str(target),
        timeout=busy_timeout,
        isolation_level=None,
        check_same_thread=False,
    )
    try:
        conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout * 1000)}")
        if not readonly:
            conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = NORMAL")
        # 64 MiB keeps bulk inserts of wide vectors fast; a one-pass scan needs almost none.
        conn.execute(f"PRAGMA cache_size = -{int(cache_mib) * 1024}")
        if vec:
            _load_sqlite_vec(conn)
    except BaseException:
        conn.close()
        raise
    return conn


@contextmanager
def write_transaction(conn: Any) -> Iterator[None]:
    """BEGIN IMMEDIATE so the write lock is taken up front (waiting on busy_timeout) instead of
    failing at the first write; ROLLBACK on any error so no half-written row can commit."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
