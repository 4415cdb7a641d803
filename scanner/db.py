"""The application database: engine set-up and versioned migrations.

SQLite is the default (one file under the data directory); PostgreSQL serves many machines.
Both are reached through SQLAlchemy Core, so queries are written once.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from weakref import WeakKeyDictionary

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.sql.compiler import SQLCompiler

from scanner import schema
from scanner.errors import ConfigError

log = logging.getLogger(__name__)


def _normalise_url(url: str) -> sa.URL:
    parsed = sa.make_url(url)
    # psycopg (3) is the one PostgreSQL driver we depend on; Huey's Postgres storage uses it too.
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed


def _casefold(text: str | None) -> str | None:
    return None if text is None else text.casefold()


def create_engine(url: str) -> Engine:
    """An engine for ``url``, tuned so many threads and processes can share one SQLite file."""
    parsed = _normalise_url(url)
    if parsed.get_backend_name() != "sqlite":
        return sa.create_engine(parsed, pool_pre_ping=True, future=True)

    if parsed.database and parsed.database != ":memory:":
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    engine = sa.create_engine(parsed, connect_args={"timeout": 30}, future=True)
    _write_locks[engine] = threading.RLock()

    @sa.event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Let SQLAlchemy (below) decide when a transaction begins, not the sqlite3 module.
        dbapi_conn.isolation_level = None
        cursor = dbapi_conn.cursor()
        # WAL lets readers run while one writer writes; NORMAL sync is crash-safe under WAL.
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()
        dbapi_conn.create_function("casefold", 1, _casefold, deterministic=True)

    def _do_begin(dbapi_conn: Any) -> None:
        # Reads see one snapshot from BEGIN to the end; ``write`` has begun its own already.
        if not dbapi_conn.in_transaction:
            dbapi_conn.execute("BEGIN")

    # The dialect's hook, not a "begin" event: any engine event makes SQLAlchemy dispatch
    # every event of every statement, 15 % of a job's cost in the consumer (benchmarks.md).
    engine.dialect.do_begin = _do_begin  # type: ignore[method-assign,assignment]

    return engine


# SQLite has one writer at a time. Threads of one process take turns on a lock of their own:
# SQLite's busy handler would make them sleep in steps of up to 100 ms instead. Processes
# still wait on the busy timeout.
_write_locks: WeakKeyDictionary[Engine, threading.RLock] = WeakKeyDictionary()


def _new_locks_after_fork() -> None:
    for engine in list(_write_locks):
        _write_locks[engine] = threading.RLock()  # a forked child must not inherit a held one


os.register_at_fork(after_in_child=_new_locks_after_fork)


@contextmanager
def write(engine: Engine) -> Iterator[Connection]:
    """A short write transaction, committed on success and rolled back on error."""
    lock = _write_locks.get(engine)
    if lock is None:  # not SQLite
        with engine.begin() as conn:
            yield conn
        return
    with lock, engine.connect() as conn:
        # Take the write lock up front: a deferred transaction that later tries to upgrade
        # can fail at once with "database is locked", whatever the busy timeout says.
        conn.connection.driver_connection.execute("BEGIN IMMEDIATE")  # type: ignore[union-attr]
        with conn.begin():
            yield conn


class Prepared:
    """A Core statement compiled once for a dialect, run straight on the driver's cursor.

    For the few statements every job runs (submit, claim, finish, progress, the status read):
    SQLAlchemy's execution path costs about 40 µs a statement on top of the driver's own,
    more than SQLite takes to run them (docs/benchmarks.md). The statement is still written
    once in Core for every database, and the column types' own processors convert values in
    and out, so rows read exactly as through ``Connection.execute``. A statement SQLAlchemy
    completes at run time (an expanding ``IN``) cannot be prepared.
    """

    def __init__(self, dialect: sa.Dialect, statement: sa.ClauseElement) -> None:
        compiled = statement.compile(dialect=dialect)
        assert isinstance(compiled, SQLCompiler)
        if "__[POSTCOMPILE" in compiled.string:
            raise ValueError(f"SQLAlchemy completes this statement at run time: {compiled}")
        self._dialect = dialect
        self._compiled = compiled
        self._order = compiled.positiontup if dialect.positional else None
        self._bind = {
            name: proc
            for bind, name in compiled.bind_names.items()
            if (proc := bind.type.dialect_impl(dialect).bind_processor(dialect)) is not None
        }
        columns = list(statement.exported_columns) if isinstance(statement, sa.ReturnsRows) else []
        self._types = [c.type for c in columns]
        self.keys = [str(c.key) for c in columns]
        self._result: list[tuple[int, Callable[[Any], Any]]] | None = None  # from the first rows

    def execute(self, conn: Connection, params: Mapping[str, Any]) -> Any:
        """Run on ``conn``'s driver connection, returning the driver's cursor: in the
        transaction ``write`` began, or for a read alone (a statement is its own snapshot),
        with no BEGIN and ROLLBACK around it."""
        values: Any = self._compiled.construct_params(params)  # a new dict, all binds
        for name, proc in self._bind.items():
            values[name] = proc(values[name])
        cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
        if self._order is not None:
            values = [values[name] for name in self._order]
        try:
            cursor.execute(self._compiled.string, values)
        except self._dialect.loaded_dbapi.Error as exc:
            # Raised as SQLAlchemy raises it (IntegrityError, OperationalError...).
            cursor.close()
            raise sa.exc.DBAPIError.instance(
                self._compiled.string, values, exc, self._dialect.loaded_dbapi.Error
            ) from exc
        return cursor

    def all(self, conn: Connection, params: Mapping[str, Any]) -> list[dict[str, Any]]:
        """The rows, each a dict of column keys."""
        cursor = self.execute(conn, params)
        try:
            rows = cursor.fetchall()
            if self._result is None:
                # A processor may depend on the type the driver reports (PostgreSQL's numerics).
                described = [d[1] for d in cursor.description]
                self._result = [
                    (i, proc)
                    for i, (type_, code) in enumerate(zip(self._types, described, strict=True))
                    if (
                        proc := type_.dialect_impl(self._dialect).result_processor(
                            self._dialect, code
                        )
                    )
                    is not None
                ]
        finally:
            cursor.close()
        found = []
        for row in rows:
            values = list(row)
            for i, proc in self._result:
                values[i] = proc(values[i])
            found.append(dict(zip(self.keys, values, strict=True)))
        return found

    def first(self, conn: Connection, params: Mapping[str, Any]) -> dict[str, Any] | None:
        """The first row as a dict of column keys, or None."""
        rows = self.all(conn, params)
        return rows[0] if rows else None

    def rowcount(self, conn: Connection, params: Mapping[str, Any]) -> int:
        """How many rows the statement changed."""
        cursor = self.execute(conn, params)
        count: int = cursor.rowcount
        cursor.close()
        return count


Migration = Callable[[Connection], None]


def schema_version(engine: Engine) -> int:
    with engine.connect() as conn:
        if not sa.inspect(conn).has_table("schema_version"):
            return 0
        return int(
            conn.execute(sa.select(sa.func.max(schema.schema_version.c.version))).scalar() or 0
        )


def migrate(engine: Engine, migrations: list[Migration] | None = None) -> int:
    """Bring the database to the newest schema version; returns the version it is at.

    Each migration runs in its own transaction together with the bump of ``schema_version``,
    so a crash mid-upgrade leaves the database at the last whole version.
    """
    steps = schema.MIGRATIONS if migrations is None else migrations
    with write(engine) as conn:
        if engine.dialect.name == "postgresql":
            # Web and consumers start together; one of them migrates, the others wait.
            conn.exec_driver_sql("SELECT pg_advisory_xact_lock(7248661)")
        schema.schema_version.create(conn, checkfirst=True)
    current = schema_version(engine)
    if current > len(steps):
        raise ConfigError(
            f"the database is at schema version {current}, newer than this scanner knows "
            f"({len(steps)}); upgrade scanner, or restore a backup made for this version"
        )
    for version, step in enumerate(steps[current:], start=current + 1):
        with write(engine) as conn:
            if engine.dialect.name == "postgresql":
                conn.exec_driver_sql("SELECT pg_advisory_xact_lock(7248661)")
            done = conn.execute(sa.select(sa.func.max(schema.schema_version.c.version))).scalar()
            if (done or 0) >= version:
                continue  # another process got there first
            log.info("migrating database to schema version %d", version)
            step(conn)
            conn.execute(schema.schema_version.insert().values(version=version))
    return len(steps)
