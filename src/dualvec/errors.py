"""Every error dualvec raises, as one tree, so callers can catch at the level they care about.

::

    DualvecError
    ├── ConfigError              settings, specs or URLs that cannot work
    │   └── UnsupportedMetricError   a backend that cannot compute the spec's metric
    ├── ValidationError          bad input; nothing was written
    │   └── ModelMismatchError   a write or query names another embedding model
    ├── StoreError               a backend failed; the original is chained as __cause__
    │   └── StoreLockedError     another process holds the store's exclusive lock
    ├── ExtensionLoadError       a SQLite extension or its driver cannot load
    └── BackendMissingError      a backend's Python package is not installed
"""

from __future__ import annotations

__all__ = [
    "BackendMissingError",
    "ConfigError",
    "DualvecError",
    "ExtensionLoadError",
    "ModelMismatchError",
    "StoreError",
    "StoreLockedError",
    "UnsupportedMetricError",
    "ValidationError",
]


class DualvecError(Exception):
    """Base of every error dualvec raises on purpose."""


class ConfigError(DualvecError):
    """A setting, spec or store URL that cannot work as given."""


class UnsupportedMetricError(ConfigError):
    """The backend cannot compute the collection's metric."""


class ValidationError(DualvecError, ValueError):
    """Input rejected before any store was touched."""


class ModelMismatchError(ValidationError):
    """The caller names an embedding model other than the collection's."""


class StoreError(DualvecError):
    """A backend operation failed."""


class StoreLockedError(StoreError):
    """The store is held exclusively by another process or client."""


class ExtensionLoadError(DualvecError):
    """A SQLite extension, or a driver able to load one, is unavailable."""


class BackendMissingError(DualvecError, ImportError):
    """The Python package a backend needs is not installed."""
