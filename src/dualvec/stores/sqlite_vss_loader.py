"""Loading sqlite-vss, whose wheel links against system BLAS/LAPACK that many machines lack."""

from __future__ import annotations

from typing import Any

from dualvec.errors import ExtensionLoadError
from dualvec.sqlite_driver import connect, load_extension

__all__ = ["load_vss", "vss_load_problem"]

INSTALL_HINT = (
    "sqlite-vss needs the system libraries libblas.so.3 and liblapack.so.3: "
    "apt-get install libblas3 liblapack3 (Debian/Ubuntu); "
    "and the Python package: pip install 'dualvec[vss]'"
)


def load_vss(conn: Any) -> None:
    """Load vector0 and vss0 into `conn`, or raise saying what is missing and how to install it."""
    try:
        import sqlite_vss
    except ImportError as exc:
        raise ExtensionLoadError(f"sqlite-vss is not installed. {INSTALL_HINT}") from exc
    try:
        load_extension(conn, sqlite_vss.load, "sqlite-vss")
    except ExtensionLoadError as exc:
        raise ExtensionLoadError(f"{exc}. {INSTALL_HINT}") from exc


def vss_load_problem() -> str | None:
    """Why sqlite-vss cannot load here, or None when it can."""
    try:
        conn = connect(":memory:", vec=False)
    except ExtensionLoadError as exc:
        return str(exc)
    try:
        load_vss(conn)
    except ExtensionLoadError as exc:
        return str(exc)
    finally:
        conn.close()
    return None
