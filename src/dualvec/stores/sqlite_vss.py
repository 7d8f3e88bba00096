"""sqlite-vss 0.1.2 (Faiss inside SQLite): a legacy store, abandoned upstream, still in use.

Two layouts:

- The app's own, as sqlite-vss documents it (``?vss_table=NAME``): a content table (the
  collection's name, or ``?table=``) whose ``INTEGER PRIMARY KEY`` is the id, and a vss0 index
  whose rowid is that id. Vectors are read back from the index; a vector column in the content
  table, if the app keeps one, is written too. Checked at open: the index's column and
  dimension, its Faiss factory (only the exact default), the id column, each field's column,
  and, for cosine, that the index holds unit vectors (a cosine app indexes normalised vectors).
  The app's own ``vss_search`` on its index keeps finding what dualvec writes.
- dualvec's own, for a collection it creates: a table keyed by the caller's id (any text), with
  an AUTOINCREMENT rowid, the original vector and the metadata columns, and a vss0 table
  ``"<name>.vss"`` holding the vector under that rowid. A table that exists but that dualvec
  did not make is refused at open, naming the vss0 tables found, rather than given an empty
  index beside it.

Cosine collections index the normalised vector, whose squared L2 distance is twice the cosine
distance; l2 takes the square root; vss0 has no inner product. Its default index, Flat, is exact.

What vss0 does that this adapter works around, each seen on this machine:

- A connection loads the index once, and each COMMIT writes the whole index back from memory.
  A connection that missed another's commit answers from a stale index and, on its next write,
  overwrites the vectors that commit added. Every search and write therefore checks
  ``PRAGMA data_version`` inside its transaction and reopens the connection when another one
  has committed since the index was loaded.
- Searching an empty index aborts the whole process (a Faiss assertion, not an SQL error): a
  search first looks at the index's own rows table (``<index>_data``, one row per vector) and
  answers an empty index without asking vss0.
- ROLLBACK TO a savepoint leaves the rolled-back vectors in the index; only ROLLBACK is clean,
  and a failed write reopens the connection as well.
- No UPDATE, and inserts are searchable only after COMMIT: an upsert deletes the old rows and
  inserts new ones, in dualvec's layout under fresh rowids (never reused, so no stale entry can
  name a newer record), in the app's under the id itself (delete and insert of one rowid in one
  transaction leave the new vector, checked here).
- A lookup by rowid scans the whole index: gets and scans read it once per batch.
- vss_search ranks before any WHERE on metadata applies: a filtered search widens its top list
  until k rows pass the filter or the whole collection has been ranked.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from dualvec.distance import canonical
from dualvec.errors import ConfigError
from dualvec.filters import Condition
from dualvec.records import Hit, Record, Vector
from dualvec.spec import CollectionSpec, Metric
from dualvec.sqlite_driver import BUSY_TIMEOUT_SECONDS, connect
from dualvec.stores.sqlite_common import bind_spec, bound_spec, parse_seconds, quote, table_option
from dualvec.stores.sqlite_layout import check_app_table, foreign_table, table_columns
from dualvec.stores.sqlite_table import COLUMN_TYPES, SqliteTableStore, conditions_to_sql
from dualvec.stores.sqlite_vss_loader import load_vss

__all__ = ["SqliteVssStore"]

_VSS_HEADER = b"v\x01"
# vss0 reads k as a 32-bit int.
_MAX_VSS_K = 2**31 - 1
# One column of a vss0 definition: `name(dim)` and its options (`factory="..."` may hold commas).
_VSS_COLUMN = re.compile(r"""(\w+)\s*\(\s*(\d+)\s*\)((?:\s+\w+\s*=\s*(?:"[^"]*"|'[^']*'|[^\s,)]+))*)""")
# The only index dualvec can search exactly, and the one vss0 builds by default.
_EXACT_FACTORY = re.compile(r"""^factory\s*=\s*["']Flat,IDMap2["']$""", re.IGNORECASE)
_UNIT_NORM_TOLERANCE = 1e-3
_NORM_SAMPLE = 100


def _vss_columns(sql: str) -> list[tuple[str, int, str]]:
    """The (name, dim, options) of each column of a vss0 table, from its CREATE statement."""
    body = sql[sql.index("(") + 1 : sql.rindex(")")]
    return [(name, int(dim), options.strip()) for name, dim, options in _VSS_COLUMN.findall(body)]


class SqliteVssStore(SqliteTableStore):
    """sqlite-vss store. Exact search; metrics cosine and l2."""

    backend = "sqlite-vss"
    metrics: ClassVar[frozenset[Metric]] = frozenset({"cosine", "l2"})
    scan_order = "ORDER BY rowid"

    def __init__(
        self,
        path: str | Path,
        spec: CollectionSpec,
        *,
        busy_timeout: float = BUSY_TIMEOUT_SECONDS,
        table: str | None = None,
        vss_table: str | None = None,
    ) -> None:
        # The app's vss0 index; None for dualvec's own layout.
        self.vss_table = vss_table
        super().__init__(path, spec, busy_timeout=busy_timeout, table=table)

    @classmethod
    def from_location(
        cls,
        location: str,
        spec: CollectionSpec,
        busy_timeout: str | None = None,
        table: str | None = None,
        vss_table: str | None = None,
    ) -> SqliteVssStore:
        """`?vss_table=NAME` wraps the app's vss0 index NAME joined on the content table's
        INTEGER PRIMARY KEY; `?table=` names the content table; `?busy_timeout=` as for every
        SQLite store."""
        return cls(
            location,
            spec,
            busy_timeout=parse_seconds("busy_timeout", busy_timeout),
            table=table_option(table),
            vss_table=table_option(vss_table),
        )

    def _connect(self) -> Any:
        conn = connect(self.path, vec=False, busy_timeout=self._busy_timeout)
        try:
            load_vss(conn)
        except BaseException:
            conn.close()
            raise
        return conn

    def _create(self) -> None:
        """Open the layout (creating dualvec's own if needed), and note the data version the
        index in memory matches."""
        index = self.vss_table or f"{self.table_name}.vss"
        self._index = quote(index)
        self._index_rows = quote(f"{index}_data")
        if self.vss_table is None:
            self._create_own()
        else:
            self._open_app_index(self.vss_table)
        self._version = self._data_version()

    def _vss_tables(self) -> list[str]:
        return [
            row[0]
            for row in self._conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND sql LIKE '%USING vss0%'"
            )
        ]

    def _create_own(self) -> None:
        spec = self.spec
        self._index_column = "embedding"
        self._content_vector = True
        if foreign_table(self._conn, self.table_name, spec.name) is not None:
            raise ConfigError(
                f"table {self.table_name!r} exists but dualvec did not make it: to wrap an app's "
                "sqlite-vss layout, name its vss0 index on the URL with ?vss_table=NAME (vss0 tables "
                f"here: {self._vss_tables()}), and the content table with ?table= if it is not "
                "the collection's name"
            )
        self._insert = (
            f"INSERT INTO {self._table} ({self._select}) VALUES ({', '.join('?' * len(self._columns))})"
        )
        columns = [
            "rowid INTEGER PRIMARY KEY AUTOINCREMENT",
            f"{self._id} TEXT NOT NULL UNIQUE",
            f"{quote(spec.vector_source)} BLOB NOT NULL",
            *(f"{quote(source)} {COLUMN_TYPES[t]}" for _, source, t in self._fields),
        ]
        bind_spec(
            self._conn,
            spec,
            [
                f"CREATE TABLE IF NOT EXISTS {self._table} ({', '.join(columns)})",
                f"CREATE VIRTUAL TABLE IF NOT EXISTS {self._index} USING vss0(embedding({spec.dim}))",
            ],
        )

    def _open_app_index(self, index: str) -> None:
        """Check the app's content table and vss0 index against the spec, then bind to them."""
        spec = self.spec
        row = self._conn.execute(
            "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = ?", (index,)
        ).fetchone()
        if row is None or "vss0" not in str(row[0]).lower():
            raise ConfigError(
                f"?vss_table={index!r}: no vss0 table of that name in {str(self.path)!r} "
                f"(vss0 tables here: {self._vss_tables()})"
            )
        columns = _vss_columns(str(row[0]))
        names = [name for name, _, _ in columns]
        if not columns:
            raise ConfigError(f"cannot read the columns of vss0 table {index!r} from {row[0]!r}")
        if spec.vector_source in names:
            chosen = columns[names.index(spec.vector_source)]
        elif len(columns) == 1:
            chosen = columns[0]
        else:
            raise ConfigError(
                f"vss0 table {index!r} has columns {names}; set the collection's vector_source to one"
            )
        self._index_column, dim, options = chosen
        if dim != spec.dim:
            raise ConfigError(
                f"vss0 column {index}.{self._index_column} holds {dim}-dimensional vectors; the "
                f"collection declares dim = {spec.dim}"
            )
        if options and not _EXACT_FACTORY.match(options):
            raise ConfigError(
                f"vss0 column {index}.{self._index_column} is built with {options!r}; dualvec "
                'wraps only vss0\'s default exact index (factory="Flat,IDMap2")'
            )
        content = table_columns(self._conn, self.table_name)
        if content is None:
            raise ConfigError(
                f"no content table {self.table_name!r} beside vss0 table {index!r}; name it with "
                "?table= (the table whose INTEGER PRIMARY KEY is the index's rowid)"
            )
        if bound_spec(self._conn, spec.name) is None:
            check_app_table(self._conn, self.table_name, spec, content, vector=False)
            id_column = content[spec.id_source.lower()]
            if not (id_column.primary_key and id_column.declared.upper() == "INTEGER"):
                raise ConfigError(
                    f"table {self.table_name!r}: id column {id_column.name!r} must be its INTEGER "
                    f"PRIMARY KEY, the rowid that vss0 table {index!r} is joined on"
                )
            if spec.metric == "cosine":
                self._check_unit_vectors(index)
        self._content_vector = spec.vector_source.lower() in content
        managed = [c for c in self._columns if c != spec.vector_source or self._content_vector]
        updates = ", ".join(f"{quote(c)} = excluded.{quote(c)}" for c in managed[1:])
        self._insert = (
            f"INSERT INTO {self._table} ({', '.join(quote(c) for c in managed)}) "
            f"VALUES ({', '.join('?' * len(managed))}) ON CONFLICT ({self._id}) DO UPDATE SET {updates}"
        )
        bind_spec(self._conn, spec, [])

    def _check_unit_vectors(self, index: str) -> None:
        """A cosine app indexes normalised vectors, so L2 in the index ranks by cosine. Raw ones
        would give wrong cosine distances: refuse them, pointing at metric l2."""
        column = quote(self._index_column)
        sample = self._conn.execute(f"SELECT {column} FROM {self._index} LIMIT {_NORM_SAMPLE}").fetchall()
        for (blob,) in sample:
            norm = float(np.linalg.norm(np.frombuffer(blob, dtype=np.float32)))
            if abs(norm - 1.0) > _UNIT_NORM_TOLERANCE:
                raise ConfigError(
                    f"vss0 table {index!r} holds vectors of norm {norm:.3g}: a cosine collection "
                    "needs the unit vectors a cosine app indexes; if the app ranks by L2 over these "
                    "vectors, set metric = 'l2'"
                )

    def _data_version(self) -> int:
        return int(self._conn.execute("PRAGMA data_version").fetchone()[0])

    def _reopened(self) -> None:
        self._version = self._data_version()

    def _reconnect(self) -> None:
        """A new connection, whose vss0 index loads on first use, inside the next transaction."""
        self._conn.close()
        self._conn = self._connect()
        self._version = self._data_version()

    @contextmanager
    def _current(self, *, write: bool) -> Iterator[bool]:
        """A transaction in which the index in memory is the committed one; yields whether the
        index is empty (searching it would abort the process). Commits on success; on failure
        rolls back and reopens."""
        while True:
            self._conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")
            try:
                # The first read fixes the snapshot that data_version then describes.
                empty = self._conn.execute(
                    f"SELECT NOT EXISTS (SELECT 1 FROM {self._index_rows})"
                ).fetchone()[0]
                current = self._data_version() == self._version
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            if current:
                break
            self._conn.execute("ROLLBACK")
            self._reconnect()
        try:
            yield bool(empty)
            self._conn.execute("COMMIT")
        except BaseException:
            try:
                if self._conn.in_transaction:
                    self._conn.execute("ROLLBACK")
            finally:
                self._reconnect()
            raise

    def _indexed(self, vector: Vector) -> bytes:
        """The blob vss0 indexes. sqlite-vss reads a blob starting with b"v\\x01" as its own
        header and drops those two bytes, so a raw float32 vector that happens to start with
        them (about 1 in 65,536) would lose a dimension: every blob carries the header."""
        return _VSS_HEADER + canonical(vector, self.spec.metric).tobytes()

    def _distance(self, native: float) -> float:
        if self.spec.metric == "cosine":
            return min(max(native / 2.0, 0.0), 2.0)
        return float(np.sqrt(max(native, 0.0)))

    def _rowids(self, ids: list[str]) -> list[Any]:
        """The index rowids of `ids`: the ids themselves in the app's layout, else looked up."""
        if self.vss_table is not None:
            return [self._key(i) for i in ids]
        return [
            row[0]
            for row in self._conn.execute(
                f"SELECT rowid FROM {self._table} WHERE {self._id} IN (SELECT value FROM json_each(?))",
                (json.dumps(ids),),
            )
        ]

    def _remove(self, rowids: list[Any], tables: tuple[str, ...]) -> None:
        """Delete `rowids` from `tables` (inside the caller's transaction). One statement each:
        vss0 cannot look a rowid up, so every DELETE scans its rows."""
        if rowids:
            for table in tables:
                self._conn.execute(
                    f"DELETE FROM {table} WHERE rowid IN (SELECT value FROM json_each(?))",
                    (json.dumps(rowids),),
                )

    def _upsert(self, records: list[Record]) -> None:
        ids = [r.id for r in records]
        with self._lock, self._current(write=True):
            if self.vss_table is not None:
                # Content rows are updated in place, so the app's other columns keep their values.
                self._remove(self._rowids(ids), (self._index,))
                self._conn.executemany(self._insert, [self._app_row(r) for r in records])
                rowids = {r.id: self._key(r.id) for r in records}
            else:
                self._remove(self._rowids(ids), (self._index, self._table))
                self._conn.executemany(
                    self._insert,
                    [
                        (r.id, r.vector.tobytes(), *(r.metadata.get(name) for name, _, _ in self._fields))
                        for r in records
                    ],
                )
                rowids = dict(
                    self._conn.execute(
                        f"SELECT {self._id}, rowid FROM {self._table} "
                        f"WHERE {self._id} IN (SELECT value FROM json_each(?))",
                        (json.dumps(ids),),
                    ).fetchall()
                )
            self._conn.executemany(
                f"INSERT INTO {self._index} (rowid, {quote(self._index_column)}) VALUES (?, ?)",
                [(rowids[r.id], self._indexed(r.vector)) for r in records],
            )

    def _app_row(self, record: Record) -> tuple[Any, ...]:
        """The values `_insert` writes to the app's content table: id, vector if it has one, fields."""
        vector = [record.vector.tobytes()] if self._content_vector else []
        return (self._key(record.id), *vector, *(record.metadata.get(name) for name, _, _ in self._fields))

    def _delete(self, ids: list[str]) -> None:
        with self._lock, self._current(write=True):
            self._remove(self._rowids(ids), (self._index, self._table))

    def _from_index(self, conn: Any, rows: list[tuple[Any, bytes]]) -> list[Record]:
        """Records for (rowid, indexed vector) rows, with their content rows' ids and fields;
        a vector whose content row is gone is not a record."""
        fields = "".join(f", {quote(source)}" for _, source, _ in self._fields)
        content = {
            row[0]: row
            for row in conn.execute(
                f"SELECT rowid, {self._id}{fields} FROM {self._table} "
                "WHERE rowid IN (SELECT value FROM json_each(?))",
                (json.dumps([r[0] for r in rows]),),
            )
        }
        return [
            Record(
                str(content[rowid][1]),
                np.frombuffer(blob, dtype=np.float32).copy(),
                self._metadata(content[rowid][2:]),
            )
            for rowid, blob in rows
            if rowid in content
        ]

    def _index_select(self) -> str:
        return f"SELECT rowid, {quote(self._index_column)} FROM {self._index}"

    def _get(self, ids: list[str]) -> list[Record]:
        if self.vss_table is None:
            return super()._get(ids)
        with self._lock, self._current(write=False):
            rows = self._conn.execute(
                f"{self._index_select()} WHERE rowid IN (SELECT value FROM json_each(?))",
                (json.dumps(self._rowids(ids)),),
            ).fetchall()
            found = {r.id: r for r in self._from_index(self._conn, rows)}
        return [found[i] for i in ids if i in found]

    def _scan(self, batch_size: int) -> Iterator[list[Record]]:
        if self.vss_table is None:
            yield from super()._scan(batch_size)
            return
        # A connection of its own, whose index loads fresh: one consistent snapshot.
        conn = self._connect()
        try:
            cursor = conn.execute(f"{self._index_select()} ORDER BY rowid")
            while rows := cursor.fetchmany(batch_size):
                yield self._from_index(conn, rows)
        finally:
            conn.close()

    def _search(self, query: Vector, k: int, conditions: list[Condition]) -> list[Hit]:
        where, params = conditions_to_sql(self.spec, conditions)
        fields = "".join(f", {quote(source)}" for _, source, _ in self._fields)
        rows_sql = (
            f"SELECT rowid, {self._id}{fields} FROM {self._table} "
            "WHERE rowid IN (SELECT value FROM json_each(?))" + (f" AND {where}" if where else "")
        )
        rank_sql = (
            f"SELECT rowid, distance FROM {self._index} "
            f"WHERE vss_search({quote(self._index_column)}, ?) LIMIT ?"
        )
        limit = k
        with self._lock, self._current(write=False) as empty:
            if empty:
                return []
            while True:
                ranked = self._conn.execute(rank_sql, (self._indexed(query), limit)).fetchall()
                rows = {
                    row[0]: row
                    for row in self._conn.execute(rows_sql, [json.dumps([r[0] for r in ranked]), *params])
                }
                hits = [
                    Hit(str(rows[rowid][1]), self._distance(native), self._metadata(rows[rowid][2:]))
                    for rowid, native in ranked
                    if rowid in rows
                ]
                if len(hits) >= k or len(ranked) < limit or limit == _MAX_VSS_K:
                    return hits[:k]
                limit = min(limit * 4, _MAX_VSS_K)

    def _count(self) -> int:
        # In the app's layout a record is a vector with a content row: the index's own rows
        # table (a plain b-tree) joined on rowid.
        sql = (
            f"SELECT count(*) FROM {self._table}"
            if self.vss_table is None
            else f"SELECT count(*) FROM {self._index_rows} AS i JOIN {self._table} AS c ON c.rowid = i.rowid"
        )
        with self._lock:
            return int(self._conn.execute(sql).fetchone()[0])
