"""Logging setup for applications and the CLI; the library itself never configures logging.

dualvec's modules log through `get_logger`, which stays silent until the application
configures structlog (``structlog.configure``, or `configure_logging` here): structlog's own
default would print every event on stdout, into the output of a CLI app or a pipe. What happens
to the events after that is the application's choice. Context bound with
``structlog.contextvars.bind_contextvars`` (a collection, a request id) is merged into every
event, including those the shadow workers emit for that request.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import structlog
from structlog.typing import Processor

from dualvec.errors import ConfigError

__all__ = ["configure_logging", "get_logger"]


def _drop(*args: Any, **kwargs: Any) -> None:
    """Where an event goes while the application has not configured logging."""


class _QuietLogger:
    """A structlog logger by name that drops every event until structlog is configured, and is
    looked up anew at each call, so configuring logging after import takes effect at once."""

    def __init__(self, name: str) -> None:
        self._name = name

    def __getattr__(self, method: str) -> Any:
        if not structlog.is_configured():
            return _drop
        return getattr(structlog.get_logger(self._name), method)


def get_logger(name: str) -> Any:
    """The logger dualvec's modules use: silent unless the application configured logging."""
    return _QuietLogger(name)


def _level_number(level: str | int) -> int:
    if isinstance(level, int):
        return level
    number = logging.getLevelName(level.upper())
    if not isinstance(number, int):
        raise ConfigError(f"unknown log level {level!r}; use DEBUG, INFO, WARNING, ERROR or CRITICAL")
    return number


def configure_logging(json: bool | None = None, level: str | int = "INFO") -> None:
    """Send structlog events at `level` and above to stderr, keeping stdout for data.

    `json`: True for one JSON object per line (production, log shippers), False for the
    human console renderer, None to choose by whether stderr is a terminal.
    """
    as_json = not sys.stderr.isatty() if json is None else json
    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.StackInfoRenderer(),
    ]
    renderer: list[Processor] = (
        [structlog.processors.dict_tracebacks, structlog.processors.JSONRenderer()]
        if as_json
        else [structlog.dev.ConsoleRenderer()]  # renders tracebacks itself
    )
    structlog.configure(
        processors=[*shared, *renderer],
        wrapper_class=structlog.make_filtering_bound_logger(_level_number(level)),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        # Not cached: a logger fetched at import time must follow a later reconfiguration.
        cache_logger_on_first_use=False,
    )
