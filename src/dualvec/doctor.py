"""What `dualvec doctor` checks: the Python, the SQLite driver, sqlite-vec and each backend."""

from __future__ import annotations

import platform
import sys
from dataclasses import asdict, dataclass, field
from importlib.metadata import PackageNotFoundError, version
from importlib.util import find_spec

from dualvec.errors import DualvecError
from dualvec.registry import BACKENDS
from dualvec.sqlite_driver import DRIVER_MODULES, choose_driver, connect

__all__ = ["BackendReport", "DoctorReport", "diagnose"]

_DISTRIBUTIONS = {
    "sqlite_vec": "sqlite-vec",
    "lancedb": "lancedb",
    "pyarrow": "pyarrow",
    "qdrant_client": "qdrant-client",
    "sqlite_vss": "sqlite-vss",
}


@dataclass
class BackendReport:
    scheme: str
    available: bool
    versions: dict[str, str] = field(default_factory=dict)
    problem: str | None = None


@dataclass
class DoctorReport:
    python: str
    executable: str
    platform: str
    stdlib_can_load_extensions: bool
    driver: str | None
    driver_sqlite_version: str | None
    sqlite_vec_version: str | None
    backends: list[BackendReport]
    problems: list[str]

    @property
    def ok(self) -> bool:
        return self.sqlite_vec_version is not None

    def as_dict(self) -> dict[str, object]:
        return {**asdict(self), "ok": self.ok}


def _package_version(module: str) -> str | None:
    if find_spec(module) is None:
        return None
    try:
        return version(_DISTRIBUTIONS.get(module, module))
    except PackageNotFoundError:
        return "unknown"


def _probe_backend(scheme: str) -> BackendReport:
    backend = BACKENDS[scheme]
    versions = {p: v for p in backend.packages if (v := _package_version(p)) is not None}
    missing = [p for p in backend.packages if p not in versions]
    if missing:
        hint = f"pip install 'dualvec[{backend.extra}]'" if backend.extra else "reinstall dualvec"
        return BackendReport(scheme, False, versions, f"missing {missing}: {hint}")
    if scheme == "sqlite-vss":
        from dualvec.stores.sqlite_vss_loader import vss_load_problem

        problem = vss_load_problem()
        return BackendReport(scheme, problem is None, versions, problem)
    return BackendReport(scheme, True, versions)


def diagnose() -> DoctorReport:
    """Everything that decides whether dualvec can run here, without raising."""
    import sqlite3

    problems: list[str] = []
    driver_name = driver_version = vec_version = None
    try:
        driver = choose_driver()
        driver_name = f"{driver.name} ({DRIVER_MODULES[driver.name]})"
        driver_version = driver.sqlite_version
        conn = connect(":memory:")
        try:
            vec_version = str(conn.execute("SELECT vec_version()").fetchone()[0])
        finally:
            conn.close()
    except DualvecError as exc:
        problems.append(str(exc))
    backends = [_probe_backend(scheme) for scheme in BACKENDS]
    return DoctorReport(
        python=sys.version.split()[0],
        executable=sys.executable,
        platform=f"{platform.system()} {platform.machine()}",
        stdlib_can_load_extensions=hasattr(sqlite3.Connection, "enable_load_extension"),
        driver=driver_name,
        driver_sqlite_version=driver_version,
        sqlite_vec_version=vec_version,
        backends=backends,
        problems=problems,
    )
