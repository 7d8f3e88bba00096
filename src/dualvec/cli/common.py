"""What the subcommands share: loading settings, the exit codes and turning dualvec errors into
them, and the check before a command writes the flag file."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import click

from dualvec.errors import ConfigError, DualvecError
from dualvec.outbox import Role
from dualvec.protocol import VectorStore
from dualvec.settings import Settings, config_path, load_settings

__all__ = [
    "EXIT_DIFFERENCES",
    "EXIT_ERROR",
    "EXIT_INTERRUPTED",
    "EXIT_ROLLED_BACK",
    "chosen_collections",
    "collection_option",
    "collections_option",
    "echo_json",
    "errors_exit",
    "opened_stores",
    "require_flag_file_read_by_services",
    "settings",
]

EXIT_ERROR = 1
EXIT_DIFFERENCES = 3
EXIT_ROLLED_BACK = 4
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


collections_option = click.option(
    "--collection",
    "collections",
    multiple=True,
    metavar="NAME",
    help="A declared collection (repeatable); default: every collection.",
)
collection_option = click.option(
    "--collection",
    "collection",
    default=None,
    metavar="NAME",
    help="One declared collection; default: every collection.",
)


def chosen_collections(config: Settings, names: tuple[str, ...] | list[str]) -> list[str]:
    """The collections a command works on: those named, else every declared one. An unknown
    name is a usage error (exit 2) naming the declared ones."""
    declared = list(config.collections)
    unknown = [name for name in names if name not in config.collections]
    if unknown:
        raise click.UsageError(f"unknown collection(s) {unknown}; declared: {declared}")
    if not declared:
        raise click.UsageError("no collection is declared: add a [collections.NAME] table to the config")
    return list(dict.fromkeys(names)) or declared


@contextmanager
def opened_stores(config: Settings, collection: str) -> Iterator[dict[Role, VectorStore]]:
    """Both stores of `collection`, closed afterwards."""
    from dualvec.registry import open_store

    legacy_url, target_url = config.urls(collection)
    legacy_spec, target_spec = config.specs(collection)
    stores: dict[Role, VectorStore] = {}
    try:
        stores["legacy"] = open_store(legacy_url, legacy_spec)
        stores["target"] = open_store(target_url, target_spec)
        yield stores
    finally:
        for store in stores.values():
            store.close()


def require_flag_file_read_by_services(config: Settings) -> None:
    """Refuse to write a flag file no running service may be reading: with no config file and
    no DUALVEC_FLAG_FILE, the path is only this command's default."""
    if config_path() is None and "DUALVEC_FLAG_FILE" not in os.environ:
        raise ConfigError(
            "no config file (config/dualvec.toml or DUALVEC_CONFIG) and no DUALVEC_FLAG_FILE: "
            f"refusing to write {config.flag_file.resolve()}, which no running service may read"
        )
