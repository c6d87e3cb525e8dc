"""A database selected by URL: ``sqlite:///path`` (stdlib ``sqlite3``) or ``postgresql://...`` (psycopg 3).

Statements are written once with ``?`` placeholders and portable SQL (``INSERT ... ON CONFLICT
DO NOTHING``, ``BIGINT``, ``DOUBLE PRECISION``, ``BOOLEAN``); PostgreSQL gets ``%s`` placeholders.
Writes happen inside :meth:`AuditDB.transaction`; when it returns, the rows are durable
(SQLite: WAL with ``synchronous=FULL``; PostgreSQL: the COMMIT returned).
"""
from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from loopline.processors.errors import LooplineError

#: Rows per multi-row INSERT statement (SQLite allows 32,766 parameters per statement).
INSERT_CHUNK = 400


class AuditDBError(LooplineError):
    """The audit database URL is unusable or the database refused a statement."""


def sqlite_path(url: str) -> Path:
    """The file of an ``sqlite:///path`` URL (``sqlite:////abs/path`` for an absolute path).

    >>> str(sqlite_path("sqlite:///data/audit.db"))
    'data/audit.db'
    >>> str(sqlite_path("sqlite:////tmp/a.db"))
    '/tmp/a.db'
    """
    rest = url[len("sqlite:///"):]
    if not url.startswith("sqlite:///") or not rest:
        raise AuditDBError(f"an SQLite audit URL looks like sqlite:///path/to/audit.sqlite3, not {url!r}")
    return Path(rest)


class AuditDB:
    """One connection to the audit database. Not thread-safe: one per thread or process."""

    def __init__(self, url: str, connect_timeout: float = 10.0) -> None:
        self.url = url
        if url.startswith("sqlite:"):
            self.dialect = "sqlite"
            path = sqlite_path(url)
            path.parent.mkdir(parents=True, exist_ok=True)
            try:
                self._conn = sqlite3.connect(path, isolation_level=None, timeout=30.0, check_same_thread=False)
                self._conn.execute("PRAGMA journal_mode=WAL")
                self._conn.execute("PRAGMA synchronous=FULL")
            except sqlite3.Error as exc:
                raise AuditDBError(f"cannot open the SQLite audit database {path}: {exc}") from exc
        elif url.startswith(("postgresql://", "postgres://")):
            self.dialect = "postgresql"
            try:
                import psycopg
            except ImportError as exc:  # pragma: no cover - psycopg is a dependency
                raise AuditDBError("PostgreSQL needs psycopg 3: pip install 'psycopg[binary]'") from exc
            try:
                self._conn = psycopg.connect(url, autocommit=True, connect_timeout=max(1, int(connect_timeout)))
            except psycopg.Error as exc:
                raise AuditDBError(f"cannot connect to the PostgreSQL audit database: {exc}".strip()) from exc
        else:
            raise AuditDBError(f"unsupported audit database URL {url.split(':', 1)[0]!r}: "
                               "use sqlite:///path or postgresql://user@host:port/db")
        self._in_tx = False
        self._staged: set[str] = set()

    # ------------------------------------------------------------ statements
    def _sql(self, sql: str) -> str:
        return sql.replace("?", "%s") if self.dialect == "postgresql" else sql

    def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        """Run one statement; returns the rows it changed."""
        cur = self._conn.execute(self._sql(sql), tuple(params))
        return max(cur.rowcount, 0)

    def query(self, sql: str, params: Sequence[Any] = ()) -> tuple[list[str], list[tuple]]:
        """Run one SELECT; returns (column names, rows)."""
        cur = self._conn.execute(self._sql(sql), tuple(params))
        cols = [d[0] for d in cur.description or ()]
        return cols, [tuple(r) for r in cur.fetchall()]

    def iter_query(self, sql: str, params: Sequence[Any] = (), size: int = 5000) -> tuple[list[str], Iterator[tuple]]:
        """Run one SELECT; returns (column names, an iterator fetching ``size`` rows at a time)."""
        cur = self._conn.cursor()
        cur.execute(self._sql(sql), tuple(params))
        cols = [d[0] for d in cur.description or ()]

        def rows() -> Iterator[tuple]:
            while True:
                chunk = cur.fetchmany(size)
                if not chunk:
                    return
                yield from (tuple(r) for r in chunk)

        return cols, rows()

    def insert_ignore(self, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> int:
        """Insert ``rows``, skipping keys already present; returns the rows actually inserted.

        SQLite: multi-row ``INSERT ... ON CONFLICT DO NOTHING``. PostgreSQL: ``COPY`` into a session-local
        staging table, then one ``INSERT ... SELECT ... ON CONFLICT DO NOTHING``. Call inside :meth:`transaction`.
        """
        if not rows:
            return 0
        if self.dialect == "postgresql":
            return self._copy_insert(table, columns, rows)
        one = "(" + ",".join("?" * len(columns)) + ")"
        head = f"INSERT INTO {table} ({','.join(columns)}) VALUES "  # noqa: S608 (table and columns from rows.TABLES, never input)
        inserted = 0
        for a in range(0, len(rows), INSERT_CHUNK):
            chunk = rows[a:a + INSERT_CHUNK]
            sql = head + ",".join([one] * len(chunk)) + " ON CONFLICT DO NOTHING"
            inserted += self.execute(sql, [v for row in chunk for v in row])
        return inserted

    def _copy_insert(self, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> int:
        stage = f"_stage_{table}"
        cols = ",".join(columns)
        cur = self._conn.cursor()
        if stage not in self._staged:
            cur.execute(f"CREATE TEMP TABLE IF NOT EXISTS {stage} (LIKE {table}) ON COMMIT DELETE ROWS")
            self._staged.add(stage)
        with cur.copy(f"COPY {stage} ({cols}) FROM STDIN") as cp:
            for row in rows:
                cp.write_row(row)
        cur.execute(f"INSERT INTO {table} ({cols}) SELECT {cols} FROM {stage} ON CONFLICT DO NOTHING")  # noqa: S608 (names from rows.TABLES)
        inserted = max(cur.rowcount, 0)
        cur.execute(f"TRUNCATE {stage}")
        return inserted

    @contextlib.contextmanager
    def transaction(self) -> Iterator[AuditDB]:
        """A write transaction: everything inside commits together or not at all."""
        if self._in_tx:
            raise AuditDBError("nested audit transaction")
        self._in_tx = True
        try:
            if self.dialect == "sqlite":
                self._conn.execute("BEGIN IMMEDIATE")
                try:
                    yield self
                except BaseException:
                    self._conn.execute("ROLLBACK")
                    raise
                self._conn.execute("COMMIT")
            else:
                try:
                    with self._conn.transaction():
                        yield self
                except BaseException:
                    self._staged.clear()  # a staging table created in a rolled-back transaction is gone
                    raise
        finally:
            self._in_tx = False

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._conn.close()

    def __enter__(self) -> AuditDB:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
