"""The base of the SQLite-backed stores (sqlite-vec, sqlite-blob, sqlite-vss): one table keyed
by the caller's id with the vector and one column per metadata field, one connection guarded
by a lock, and what follows from that alone (get by key, scan on a connection of its own)."""

from __future__ import annotations

import threading
from abc import abstractmethod
from collections.abc import Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import numpy as np

from dualvec.filters import Condition
from dualvec.forking import close_or_keep
from dualvec.records import Metadata, Record
from dualvec.spec import CollectionSpec, FieldType
from dualvec.sqlite_driver import BUSY_TIMEOUT_SECONDS, connect
from dualvec.stores.base import BaseStore
from dualvec.stores.sqlite_common import parse_seconds, quote, table_option

__all__ = ["COLUMN_TYPES", "SqliteTableStore", "conditions_to_sql", "from_sql"]

COLUMN_TYPES: dict[FieldType, str] = {"str": "TEXT", "int": "INTEGER", "float": "REAL", "bool": "INTEGER"}
S = TypeVar("S", bound="SqliteTableStore")
_SQL_OPS = {"$eq": "=", "$ne": "!=", "$gt": ">", "$gte": ">=", "$lt": "<", "$lte": "<="}


def from_sql(field_type: FieldType, value: Any) -> Any:
    """SQLite hands booleans back as 0/1, and a NUMERIC column a float 2.0 as 2; restore the
    declared type."""
    if value is None:
        return None
    if field_type == "bool":
        return bool(value)
    return float(value) if field_type == "float" else value


def conditions_to_sql(spec: CollectionSpec, conditions: list[Condition]) -> tuple[str, list[Any]]:
    """AND-ed SQL terms with `?` placeholders; names are spec-checked identifiers, values bound."""
    terms: list[str] = []
    params: list[Any] = []
    for c in conditions:
        column = quote(spec.source_of(c.field))
        if c.op == "$in":
            terms.append(f"{column} IN ({', '.join('?' * len(c.value))})")
            params.extend(c.value)
        elif c.op == "$nin":
            # vec0 0.1.9 applies NOT IN after the KNN step (fewer than k rows); != it filters during.
            terms.extend(f"{column} != ?" for _ in c.value)
            params.extend(c.value)
        else:
            terms.append(f"{column} {_SQL_OPS[c.op]} ?")
            params.append(c.value)
    return " AND ".join(terms), params


class SqliteTableStore(BaseStore):
    """Subclasses create their tables in `_create` and may load extensions in `_connect`."""

    loads_vec: ClassVar[bool] = False
    # Reads on a connection of their own never wait behind a write blocked on SQLite's lock
    # (WAL lets them run beside it); stores whose reads depend on their own connection's state
    # keep one connection.
    separate_reader: ClassVar[bool] = False
    # Appended to the scan's SELECT, for stores whose natural order is not their insert order.
    scan_order: ClassVar[str] = ""

    def __init__(
        self,
        path: str | Path,
        spec: CollectionSpec,
        *,
        busy_timeout: float = BUSY_TIMEOUT_SECONDS,
        table: str | None = None,
    ) -> None:
        super().__init__(spec)
        self.path = Path(path)
        self._busy_timeout = busy_timeout
        self._lock = threading.RLock()
        self._fields = [(name, spec.source_of(name), f.type) for name, f in spec.fields.items()]
        self._columns = [spec.id_source, spec.vector_source, *(source for _, source, _ in self._fields)]
        # The backend's own name for the table: the collection's, or the URL's `?table=`.
        self.table_name = table or spec.name
        self._table = quote(self.table_name)
        self._id = quote(spec.id_source)
        self._select = ", ".join(quote(c) for c in self._columns)
        self._conn = self._guard("open", self._connect)
        self._separate: Any | None = None
        self._separate_lock = threading.Lock()
        try:
            with self._lock:
                self._guard("open", self._create)
            if self.separate_reader:
                self._separate = self._guard("open", self._connect)
        except BaseException:
            self._conn.close()
            raise

    @property
    def _reader(self) -> Any:
        """The connection reads use: the store's own, or one kept for reads alone."""
        return self._conn if self._separate is None else self._separate

    @property
    def _read_lock(self) -> AbstractContextManager[Any]:
        return self._lock if self._separate is None else self._separate_lock

    @classmethod
    def from_location(
        cls: type[S],
        location: str,
        spec: CollectionSpec,
        busy_timeout: str | None = None,
        table: str | None = None,
    ) -> S:
        """`?busy_timeout=SECONDS`: how long a write waits for SQLite's lock (default 30);
        `?table=NAME`: the table's name when it is not the collection's."""
        return cls(
            location,
            spec,
            busy_timeout=parse_seconds("busy_timeout", busy_timeout),
            table=table_option(table),
        )

    def _connect(self) -> Any:
        return connect(self.path, vec=self.loads_vec, busy_timeout=self._busy_timeout)

    @abstractmethod
    def _create(self) -> None:
        """Create the tables if needed and bind the spec (`sqlite_common.bind_spec`)."""

    def _key(self, record_id: str) -> str | int:
        """The id as the table holds it: an integer in an `id_type = "int"` collection."""
        return int(record_id) if self.spec.id_type == "int" else record_id

    def _metadata(self, values: tuple[Any, ...]) -> Metadata:
        return {
            name: from_sql(field_type, value)
            for (name, _, field_type), value in zip(self._fields, values, strict=True)
            if value is not None
        }

    def _record(self, row: tuple[Any, ...]) -> Record:
        """A row selected as `self._select`: id, vector blob, then the fields."""
        return Record(str(row[0]), np.frombuffer(row[1], dtype=np.float32).copy(), self._metadata(row[2:]))

    def _get(self, ids: list[str]) -> list[Record]:
        sql = f"SELECT {self._select} FROM {self._table} WHERE {self._id} = ?"
        found = []
        with self._read_lock:
            for record_id in ids:
                row = self._reader.execute(sql, (self._key(record_id),)).fetchone()
                if row is not None:
                    found.append(self._record(row))
        return found

    def _scan(self, batch_size: int) -> Iterator[list[Record]]:
        # A connection of its own: one consistent snapshot, and the store stays usable meanwhile.
        conn = connect(self.path, vec=self.loads_vec, busy_timeout=self._busy_timeout, cache_mib=2)
        try:
            cursor = conn.execute(f"SELECT {self._select} FROM {self._table} {self.scan_order}")
            while rows := cursor.fetchmany(batch_size):
                yield [self._record(row) for row in rows]
        finally:
            conn.close()

    def _close(self) -> None:
        with self._lock, self._separate_lock:
            self._conn.close()
            if self._separate is not None:
                self._separate.close()

    def _forget_parent(self, clean: bool) -> None:
        self._lock = threading.RLock()
        self._separate_lock = threading.Lock()
        close_or_keep(clean, self._conn, self._separate)

    def _reopen(self) -> None:
        with self._lock, self._separate_lock:
            if not self._stale:
                return
            self._conn = self._connect()
            if self._separate is not None:
                self._separate = self._connect()
            self._reopened()
            self._stale = False

    def _reopened(self) -> None:
        """Hook: reset what described the parent's connection (a cache's data version)."""
