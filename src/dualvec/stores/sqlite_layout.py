"""Checking a SQLite table an application made before dualvec wraps it.

Wrapping must never change the app's table, so a table that cannot hold what the spec
declares is refused at open, naming what was found and what was expected, rather than
failing (or silently converting values) on the first write. SQLite is loosely typed: what is
checked is each column's type affinity (the rules of SQLite's "Datatypes" page, section 3.1),
because affinity decides what a stored value turns into.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from dualvec.errors import ConfigError
from dualvec.spec import CollectionSpec, FieldType
from dualvec.stores.sqlite_common import bound_spec

__all__ = ["Column", "affinity", "check_app_table", "foreign_table", "table_columns"]

Affinity = Literal["INTEGER", "TEXT", "BLOB", "REAL", "NUMERIC"]

# Which affinities keep each kind of value as written. A TEXT value in a NUMERIC column that
# looks like a number becomes one; a float 2.0 in an INTEGER column becomes the integer 2.
_KEEPS: dict[FieldType, frozenset[Affinity]] = {
    "str": frozenset({"TEXT", "BLOB"}),
    "int": frozenset({"INTEGER", "NUMERIC", "BLOB"}),
    "bool": frozenset({"INTEGER", "NUMERIC", "BLOB"}),
    "float": frozenset({"REAL", "NUMERIC", "BLOB"}),
}


@dataclass(frozen=True)
class Column:
    """One column of an existing table, as `PRAGMA table_info` describes it."""

    name: str
    declared: str
    primary_key: bool

    @property
    def affinity(self) -> Affinity:
        return affinity(self.declared)


def affinity(declared: str) -> Affinity:
    """SQLite's type affinity of a declared column type."""
    upper = declared.upper()
    if "INT" in upper:
        return "INTEGER"
    if any(word in upper for word in ("CHAR", "CLOB", "TEXT")):
        return "TEXT"
    if "BLOB" in upper or not upper:
        return "BLOB"
    if any(word in upper for word in ("REAL", "FLOA", "DOUB")):
        return "REAL"
    return "NUMERIC"


def table_columns(conn: Any, table: str) -> dict[str, Column] | None:
    """The table's columns by lower-cased name, or None when there is no such table."""
    rows = conn.execute("SELECT name, type, pk FROM pragma_table_info(?)", (table,)).fetchall()
    if not rows:
        return None
    return {
        str(name).lower(): Column(str(name), str(declared or ""), bool(pk)) for name, declared, pk in rows
    }


def foreign_table(conn: Any, table: str, collection: str) -> dict[str, Column] | None:
    """The columns of `table` if it exists and `collection` was never bound to it: a table the
    application made, to check before anything binds to it. None otherwise."""
    columns = table_columns(conn, table)
    return columns if columns is not None and bound_spec(conn, collection) is None else None


def _unique(conn: Any, table: str, column: Column, columns: dict[str, Column]) -> bool:
    """Whether `column` alone identifies a row: the sole primary key, or a unique index."""
    if column.primary_key and sum(c.primary_key for c in columns.values()) == 1:
        return True
    for name, unique in conn.execute('SELECT name, "unique" FROM pragma_index_list(?)', (table,)):
        if unique:
            indexed = [row[0] for row in conn.execute("SELECT name FROM pragma_index_info(?)", (name,))]
            if [c.lower() for c in indexed if c] == [column.name.lower()]:
                return True
    return False


def check_app_table(
    conn: Any, table: str, spec: CollectionSpec, columns: dict[str, Column], *, vector: bool
) -> None:
    """Refuse a table whose columns cannot hold the spec's records: the id column (its affinity
    must match `id_type`, and it must identify one row), the vector column (when `vector`) and
    every field's column."""
    where = f"table {table!r}"
    found = ", ".join(f"{c.name} {c.declared or '(no type)'}" for c in columns.values())

    def column(source: str, what: str) -> Column:
        if source.lower() not in columns:
            raise ConfigError(
                f"{where} has no column {source!r} for {what} (it has: {found}); map names with "
                "the collection's id_source, vector_source or a field's source"
            )
        return columns[source.lower()]

    id_column = column(spec.id_source, "the id")
    integer_ids = id_column.affinity == "INTEGER"
    if integer_ids != (spec.id_type == "int"):
        wanted = "int" if integer_ids else "str"
        raise ConfigError(
            f"{where}: id column {id_column.name!r} is {id_column.declared or 'untyped'} but the "
            f"collection's id_type is {spec.id_type!r}; set id_type = {wanted!r} in its config"
        )
    if not _unique(conn, table, id_column, columns):
        raise ConfigError(
            f"{where}: id column {id_column.name!r} is neither the primary key nor unique, so an "
            "id could name several rows; give it a UNIQUE index or map id_source to a unique column"
        )
    if vector:
        vector_column = column(spec.vector_source, "the vector")
        if vector_column.affinity != "BLOB":
            raise ConfigError(
                f"{where}: vector column {vector_column.name!r} is {vector_column.declared}; dualvec "
                "reads vectors as float32 BLOBs"
            )
    for name, field in spec.fields.items():
        field_column = column(spec.source_of(name), f"field {name!r}")
        if field_column.affinity not in _KEEPS[field.type]:
            raise ConfigError(
                f"{where}: column {field_column.name!r} has {field_column.affinity} affinity "
                f"({field_column.declared}), which does not keep {field.type} values as written; "
                f"declare field {name!r} with the column's type"
            )
