"""Open a store from a URL; each backend is imported only when used.

``sqlite-vec:///abs/path.db`` (absolute) or ``sqlite-vec://rel/path.db`` (relative to the
working directory); ``memory://``. Query parameters are the backend's options, e.g.
``sqlite-vec:///data/vec.db?busy_timeout=0.5`` (seconds a write waits for SQLite's lock). A
backend whose package is missing says which extra to install.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from urllib.parse import parse_qsl, unquote, urlsplit

from dualvec.errors import BackendMissingError, ConfigError
from dualvec.protocol import VectorStore
from dualvec.spec import CollectionSpec

__all__ = ["BACKENDS", "Backend", "backend_for", "open_store", "store_location"]


@dataclass(frozen=True)
class Backend:
    """Where a backend's adapter lives and what it needs installed."""

    scheme: str
    module: str
    cls: str
    packages: tuple[str, ...] = ()
    extra: str | None = None
    needs_path: bool = True


BACKENDS: dict[str, Backend] = {
    b.scheme: b
    for b in (
        Backend("memory", "dualvec.stores.memory", "MemoryStore", needs_path=False),
        Backend("sqlite-vec", "dualvec.stores.sqlite_vec", "SqliteVecStore", ("sqlite_vec",)),
        Backend("sqlite-blob", "dualvec.stores.sqlite_blob", "SqliteBlobStore"),
        Backend("lancedb", "dualvec.stores.lancedb", "LanceDBStore", ("lancedb", "pyarrow"), "lancedb"),
        Backend(
            "qdrant-local",
            "dualvec.stores.qdrant_local",
            "QdrantLocalStore",
            ("qdrant_client",),
            "qdrant",
        ),
        Backend("sqlite-vss", "dualvec.stores.sqlite_vss", "SqliteVssStore", ("sqlite_vss",), "vss"),
    )
}


def backend_for(url: str) -> Backend:
    scheme = urlsplit(url).scheme
    if scheme not in BACKENDS:
        raise ConfigError(f"store URL {url!r}: unknown scheme {scheme!r}; use one of {sorted(BACKENDS)}")
    return BACKENDS[scheme]


def store_location(url: str) -> str:
    """The filesystem path a store URL names."""
    parts = urlsplit(url)
    location = unquote(parts.netloc + parts.path)
    if not location and backend_for(url).needs_path:
        raise ConfigError(f"store URL {url!r} names no path; e.g. {parts.scheme}:///data/store")
    return location


def open_store(url: str, spec: CollectionSpec) -> VectorStore:
    """Open (creating if needed) the collection `spec` describes in the store at `url`."""
    backend = backend_for(url)
    location = store_location(url)
    try:
        module = importlib.import_module(backend.module)
    except ImportError as exc:
        missing = getattr(exc, "name", None) or str(exc)
        if backend.extra is None or not any(str(missing).startswith(p) for p in backend.packages):
            raise
        raise BackendMissingError(
            f"the {backend.scheme} backend needs {missing!r}: pip install 'dualvec[{backend.extra}]'"
        ) from exc
    options = dict(parse_qsl(urlsplit(url).query, keep_blank_values=True))
    factory = getattr(module, backend.cls).from_location
    try:
        store: VectorStore = factory(location, spec, **options)
    except TypeError as exc:
        if not options:
            raise
        raise ConfigError(f"store URL {url!r}: unsupported option in {sorted(options)} ({exc})") from exc
    return store
