"""What the subcommands share: loading settings and turning dualvec errors into exit codes."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import click

from dualvec.errors import DualvecError
from dualvec.outbox import Role
from dualvec.protocol import VectorStore
from dualvec.settings import Settings, load_settings

__all__ = [
    "EXIT_DIFFERENCES",
    "EXIT_ERROR",
    "EXIT_INTERRUPTED",
    "echo_json",
    "errors_exit",
    "opened_stores",
    "settings",
]

EXIT_ERROR = 1
EXIT_DIFFERENCES = 3
EXIT_INTERRUPTED = 130
F = TypeVar("F", bound=Callable[..., Any])


@contextmanager
def errors_exit() -> Iterator[None]:
    """A dualvec error becomes its message on stderr and exit 1; Ctrl-C exits 130."""
    try:
        yield
    except DualvecError as exc:
        click.echo(f"error: {exc}", err=True)
        raise SystemExit(EXIT_ERROR) from exc
    except KeyboardInterrupt as exc:
        click.echo("interrupted; run the same command again to resume", err=True)
        raise SystemExit(EXIT_INTERRUPTED) from exc


def settings() -> Settings:
    with errors_exit():
        return load_settings()


def echo_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, default=str))


@contextmanager
def opened_stores(config: Settings) -> Iterator[dict[Role, VectorStore]]:
    """Both stores of the configured collection, closed afterwards."""
    from dualvec.registry import open_store

    if not config.legacy_url or not config.target_url:
        raise click.ClickException("set legacy_url and target_url (DUALVEC_LEGACY_URL, DUALVEC_TARGET_URL)")
    legacy_spec, target_spec = config.specs()
    stores: dict[Role, VectorStore] = {}
    try:
        stores["legacy"] = open_store(config.legacy_url, legacy_spec)
        stores["target"] = open_store(config.target_url, target_spec)
        yield stores
    finally:
        for store in stores.values():
            store.close()
