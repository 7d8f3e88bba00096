"""Logging setup for applications and the CLI; the library itself never configures logging.

dualvec's modules only call ``structlog.get_logger``: what happens to their events is the
application's choice. An application that has no setup of its own calls `configure_logging`
once at start-up. Context bound with ``structlog.contextvars.bind_contextvars`` (a collection,
a request id) is merged into every event, including those the shadow workers emit for that
request.
"""

from __future__ import annotations

import logging
import sys

import structlog
from structlog.typing import Processor

from dualvec.errors import ConfigError

__all__ = ["configure_logging"]


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
