"""Settings: pydantic-settings with the `DUALVEC_` prefix and a TOML file.

Precedence, highest first:

1. the live flag file (`phase`, `read_percent`, `shadow_percent` only; see `dualvec.flags`),
   re-read by every process while it runs, so a ramp or rollback needs no restart;
2. keyword arguments given in code;
3. environment variables (`DUALVEC_READ_PERCENT=10`, nested with `__`:
   `DUALVEC_SHADOW__TIMEOUT_SECONDS=0.5`);
4. the TOML file named by `DUALVEC_CONFIG` (default `config/dualvec.toml` when it exists);
5. the defaults below.

Every model forbids unknown keys, so a typo stops start-up with the setting's name.
"""

from __future__ import annotations

import os
import re
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from dualvec.errors import ConfigError
from dualvec.spec import CollectionSpec, FieldSpec, describe

__all__ = [
    "DEFAULT_CONFIG",
    "Duration",
    "Flags",
    "GuardSettings",
    "Phase",
    "Settings",
    "ShadowSettings",
    "config_path",
    "load_settings",
    "parse_duration",
]

DEFAULT_CONFIG = Path("config/dualvec.toml")


class Phase(str, Enum):
    """Where the migration stands; see the phase table in the README."""

    LEGACY = "legacy"
    DUAL = "dual"
    TARGET_PRIMARY = "target-primary"
    TARGET = "target"


class Flags(BaseModel):
    """The values an operator flips at run time. Frozen: a reload swaps in a new snapshot."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    phase: Phase = Phase.LEGACY
    read_percent: float = Field(default=0.0, ge=0.0, le=100.0)
    shadow_percent: float = Field(default=0.0, ge=0.0, le=100.0)


class ShadowSettings(BaseModel):
    """How shadow reads run and what counts as a mismatch (defaults suit exact stores)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    workers: int = Field(default=2, ge=1, le=64)
    max_pending: int = Field(default=64, ge=1, le=100_000)
    timeout_seconds: float = Field(default=2.0, gt=0.0, le=60.0)
    # Shadow workers run at this niceness (Linux, per thread) so they yield the CPU to callers.
    niceness: int = Field(default=10, ge=0, le=19)
    min_recall: float = Field(default=1.0, ge=0.0, le=1.0)
    max_distance_delta: float = Field(default=1e-4, ge=0.0)
    mismatch_log: Path = Path(".dualvec/mismatches.jsonl")


_DURATION = re.compile(r"\s*(\d+(?:\.\d+)?|\.\d+)\s*(ms|s|m|h)?\s*")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(value: object) -> float:
    """Seconds from "500ms", "30s", "5m", "1h" or a plain number of seconds; ValueError saying
    what is accepted otherwise."""
    if isinstance(value, bool):
        raise ValueError(f"expected a duration such as 30s or 5m, got {value!r}")
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        found = _DURATION.fullmatch(str(value))
        if found is None:
            raise ValueError(f"expected a duration such as 500ms, 30s, 5m or 1h, got {value!r}")
        seconds = float(found.group(1)) * _UNIT_SECONDS[found.group(2) or "s"]
    if not seconds > 0:
        raise ValueError(f"a duration must be more than 0, got {value!r}")
    return seconds


Duration = Annotated[float, BeforeValidator(parse_duration)]
"""Seconds, written as "30s", "5m", "250ms" or a number of seconds."""


class GuardSettings(BaseModel):
    """What the automatic guard checks over each interval, and what it does about it (see
    `dualvec.guard`). Every check applies; relax one with a generous value."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # Run the guard inside `dualvec serve`, rolling back a collection that breaches at any
    # read_percent, not only during `dualvec ramp`.
    enabled: bool = False
    interval: Duration = 300.0
    # Share of shadow comparisons that found a real difference (in-flight ones excluded).
    max_mismatch_ratio: float = Field(default=0.01, ge=0.0, le=1.0)
    # Mean recall@k of the target against legacy over the interval's comparisons.
    min_recall: float = Field(default=0.95, ge=0.0, le=1.0)
    # The target's p99 search latency over legacy's.
    max_p99_ratio: float = Field(default=1.5, gt=0.0)
    # The target's failed operations over all its operations.
    max_error_ratio: float = Field(default=0.01, ge=0.0, le=1.0)
    # Fewer comparisons than this in an interval is "no data": too few to judge.
    min_comparisons: int = Field(default=100, ge=1)
    # Failed intervals before a rollback: over a whole ramp (Flagger's threshold, Argo's
    # failureLimit); in a row for the guard inside serve.
    failure_limit: int = Field(default=2, ge=1, le=1000)
    # An interval without enough data: counts as a failure, holds the ramp at its step, or
    # passes.
    on_no_data: Literal["fail", "pause", "ignore"] = "pause"


class LegacyNames(BaseModel):
    """The legacy store's own names for the id, the vector and metadata fields."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id_source: str | None = None
    vector_source: str | None = None
    fields: dict[str, str] = Field(default_factory=dict)


class CollectionConfig(BaseModel):
    """A collection as written in the TOML file (the name comes from its table key)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # Where this collection's stores are, when not the top-level legacy_url / target_url.
    legacy_url: str | None = None
    target_url: str | None = None

    dim: int
    metric: str = "cosine"
    model: str
    fields: dict[str, FieldSpec] = Field(default_factory=dict)
    id_source: str = "id"
    vector_source: str = "vector"
    id_type: str = "str"
    legacy: LegacyNames = LegacyNames()
    # The sqlite-vec target's index (see dualvec.stores.quantize), added to the target URL's
    # query where the URL does not set them: per collection, even on a shared target_url.
    quantize: Literal["none", "bit", "int8"] | None = None
    oversample: int | None = Field(default=None, ge=1, le=4096)
    matryoshka_dim: int | None = Field(default=None, ge=1)


class Settings(BaseSettings):
    """Everything a dualvec process needs, validated at start-up."""

    model_config = SettingsConfigDict(
        env_prefix="DUALVEC_",
        env_nested_delimiter="__",
        extra="forbid",
        frozen=True,
    )

    phase: Phase = Phase.LEGACY
    read_percent: float = Field(default=0.0, ge=0.0, le=100.0)
    shadow_percent: float = Field(default=0.0, ge=0.0, le=100.0)
    legacy_url: str = ""
    target_url: str = ""
    collection: str = ""
    collections: dict[str, CollectionConfig] = Field(default_factory=dict)
    flag_file: Path = Path(".dualvec/flags.json")
    outbox_path: Path = Path(".dualvec/outbox.db")
    replay_interval_seconds: float = Field(default=1.0, gt=0.0, le=3600.0)
    replay_batch_size: int = Field(default=500, ge=1, le=100_000)
    flag_poll_seconds: float = Field(default=0.2, gt=0.0, le=1.0)
    shadow: ShadowSettings = ShadowSettings()
    guard: GuardSettings = GuardSettings()

    @model_validator(mode="after")
    def _collection_is_declared(self) -> Settings:
        if self.collection and self.collection not in self.collections:
            raise ValueError(
                f"collection {self.collection!r} is not declared; add [collections.{self.collection}] "
                f"to the config file (declared: {sorted(self.collections)})"
            )
        return self

    @model_validator(mode="after")
    def _one_table_per_collection(self) -> Settings:
        """Two collections writing one table would overwrite each other's records."""
        owners: dict[tuple[str, str, str], str] = {}
        for name, config in self.collections.items():
            for url in (config.legacy_url or self.legacy_url, config.target_url or self.target_url):
                if not url:
                    continue
                place = _table_of(url, name)
                if place in owners and owners[place] != name:
                    raise ValueError(
                        f"collections {owners[place]!r} and {name!r} both use table {place[2]!r} of "
                        f"{place[0]}://{place[1]}; give one its own table (?table=) or its own store"
                    )
                owners[place] = name
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (
            init_settings,
            env_settings,
            TomlConfigSettingsSource(settings_cls, toml_file=config_path()),
        )

    @property
    def flags(self) -> Flags:
        """The flags as configured, before any flag file."""
        return Flags(phase=self.phase, read_percent=self.read_percent, shadow_percent=self.shadow_percent)

    def state_file(self, kind: str, collection: str | None = None) -> Path:
        """Where a state file of `kind` ("backfill", "verify", ...) lives: next to the outbox, per
        collection, so every process of a deployment finds the same one."""
        return self.outbox_path.with_name(f"{kind}-{collection or self.default_collection()}.json")

    def default_collection(self) -> str:
        """The collection single-collection entry points open: `collection`, or the only one."""
        if self.collection:
            return self.collection
        if len(self.collections) == 1:
            return next(iter(self.collections))
        raise ConfigError(
            "name the collection to open: set collection (DUALVEC_COLLECTION) to one of "
            f"{sorted(self.collections)}" + ("" if self.collections else "; none is declared")
        )

    def collection_config(self, name: str) -> CollectionConfig:
        if name not in self.collections:
            raise ConfigError(
                f"collection {name!r} is not declared; add [collections.{name}] to the config "
                f"file (declared: {sorted(self.collections)})"
            )
        return self.collections[name]

    def urls(self, name: str | None = None) -> tuple[str, str]:
        """The (legacy, target) store URLs of a collection: its own, else the top-level ones."""
        name = name or self.default_collection()
        config = self.collection_config(name)
        legacy, target = config.legacy_url or self.legacy_url, config.target_url or self.target_url
        if not legacy or not target:
            raise ConfigError(
                f"collection {name!r} has no legacy_url or target_url: set them at the top level "
                f"(DUALVEC_LEGACY_URL, DUALVEC_TARGET_URL) or in [collections.{name}]"
            )
        return legacy, _with_index_options(target, config, name)

    def specs(self, name: str | None = None) -> tuple[CollectionSpec, CollectionSpec]:
        """The (legacy, target) specs of a collection: same data, each store's own names."""
        name = name or self.default_collection()
        config = self.collection_config(name)
        base = config.model_dump(exclude={"legacy", "legacy_url", "target_url", *_INDEX_KEYS})
        names = config.legacy
        unknown = sorted(set(names.fields) - set(config.fields))
        try:
            if unknown:
                raise ValueError(f"legacy.fields names undeclared fields {unknown}")
            target = CollectionSpec(name=name, **base)
            legacy = target.model_copy(
                update={
                    "id_source": names.id_source or target.id_source,
                    "vector_source": names.vector_source or target.vector_source,
                    "fields": {
                        field: spec.model_copy(update={"source": names.fields.get(field, spec.source)})
                        for field, spec in target.fields.items()
                    },
                }
            )
            legacy = CollectionSpec.model_validate(legacy.model_dump())
        except (ValidationError, ValueError, ConfigError) as exc:
            raise ConfigError(f"collection {name!r}: {exc}") from exc
        return legacy, target


_INDEX_KEYS = ("quantize", "oversample", "matryoshka_dim")


def _with_index_options(url: str, config: CollectionConfig, name: str) -> str:
    """The target URL with the collection's index keys added to its query; a key the URL
    sets to another value is refused rather than silently overridden."""
    wanted = {key: str(getattr(config, key)) for key in _INDEX_KEYS if getattr(config, key) is not None}
    if not wanted:
        return url
    parts = urlsplit(url)
    if parts.scheme != "sqlite-vec":
        raise ConfigError(
            f"[collections.{name}] sets {sorted(wanted)}, which only a sqlite-vec target has; "
            f"its target is {url!r}"
        )
    given = dict(parse_qsl(parts.query, keep_blank_values=True))
    clash = sorted(key for key in wanted if key in given and given[key] != wanted[key])
    if clash:
        raise ConfigError(
            f"[collections.{name}] sets {', '.join(f'{k} = {wanted[k]}' for k in clash)} but its "
            f"target URL {url!r} says {', '.join(f'{k}={given[k]}' for k in clash)}; keep one"
        )
    added = urlencode({key: value for key, value in wanted.items() if key not in given})
    if not added:
        return url
    # Appended as text: urlunsplit would turn sqlite-vec:///abs into sqlite-vec:/abs.
    return url + ("&" if parts.query else "" if url.endswith("?") else "?") + added


def _table_of(url: str, collection: str) -> tuple[str, str, str]:
    """The (scheme, location, table) a store URL gives a collection."""
    parts = urlsplit(url)
    table = dict(parse_qsl(parts.query)).get("table", collection)
    return parts.scheme, os.path.normpath(unquote(parts.netloc + parts.path)), table


def config_path() -> Path | None:
    """The TOML file settings are read from: DUALVEC_CONFIG, else config/dualvec.toml if present."""
    named = os.environ.get("DUALVEC_CONFIG")
    if named:
        return Path(named)
    return DEFAULT_CONFIG if DEFAULT_CONFIG.exists() else None


def load_settings(**overrides: Any) -> Settings:
    """Build settings or raise `ConfigError` naming each bad setting and what it expects."""
    path = config_path()
    if os.environ.get("DUALVEC_CONFIG") and path is not None and not path.exists():
        raise ConfigError(f"DUALVEC_CONFIG={path} does not exist; point it at a TOML file")
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        raise ConfigError(
            f"invalid settings ({path or 'no config file'}, DUALVEC_* env): {describe(exc)}"
        ) from exc
