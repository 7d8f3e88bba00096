"""dualvec: move a production vector index to sqlite-vec with no downtime and no lost write."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from dualvec.async_router import AsyncRouter
from dualvec.errors import (
    BackendMissingError,
    ConfigError,
    DualvecError,
    ExtensionLoadError,
    ModelMismatchError,
    StoreError,
    StoreLockedError,
    UnsupportedMetricError,
    ValidationError,
)
from dualvec.filters import Filter
from dualvec.logs import configure_logging
from dualvec.metrics import DualvecMetrics
from dualvec.migration import Migration
from dualvec.protocol import VectorStore
from dualvec.records import Hit, Record
from dualvec.registry import open_store
from dualvec.router import Router, routing_key
from dualvec.settings import Settings, load_settings
from dualvec.spec import CollectionSpec, FieldSpec
from dualvec.stores.memory import MemoryStore
from dualvec.validation import MAX_K

try:
    __version__ = version("dualvec")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"

__all__ = [
    "MAX_K",
    "AsyncRouter",
    "BackendMissingError",
    "CollectionSpec",
    "ConfigError",
    "DualvecError",
    "DualvecMetrics",
    "ExtensionLoadError",
    "FieldSpec",
    "Filter",
    "Hit",
    "MemoryStore",
    "Migration",
    "ModelMismatchError",
    "Record",
    "Router",
    "Settings",
    "StoreError",
    "StoreLockedError",
    "UnsupportedMetricError",
    "ValidationError",
    "VectorStore",
    "__version__",
    "configure_logging",
    "load_settings",
    "open_store",
    "routing_key",
]
