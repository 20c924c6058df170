"""The database handle: one async engine per process, built in the lifespan.

SQLite (the zero-configuration default) allows one writer at a time, so write transactions are
serialised by an asyncio lock in this process; readers run beside them thanks to WAL. PostgreSQL
uses a connection pool and row locks. The same Core queries serve both.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, nullcontext
from pathlib import Path
from typing import Any

import asyncpg
import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from daarion_city.core.errors import Unavailable
from daarion_city.core.provided import Key


class Database:
    """Owns the engine; hands out transactions (``begin``) and read connections (``read``)."""

    def __init__(self, url: str, *, pool_size: int = 10, timeout: float = 5.0) -> None:
        self.url = make_url(url)
        self.is_sqlite = self.url.get_backend_name() == "sqlite"
        self.timeout = timeout
        self._write_lock: asyncio.Lock | None = asyncio.Lock() if self.is_sqlite else None
        kwargs: dict[str, Any] = {"pool_pre_ping": False}
        if self.is_sqlite:
            database = self.url.database
            if database and database != ":memory:":
                Path(database).parent.mkdir(parents=True, exist_ok=True)
            kwargs["connect_args"] = {"timeout": 30}
        else:
            kwargs.update(
                pool_size=pool_size,
                max_overflow=pool_size,
                pool_timeout=timeout,
                connect_args={
                    "command_timeout": timeout,
                    "timeout": timeout,
                    # Short statements only: JIT compiling one (17 ms seen for the unread
                    # counts of a user in a city of 5,000 rooms) costs more than running it.
                    "server_settings": {"jit": "off"},
                },
            )
        self.engine: AsyncEngine = create_async_engine(self.url, **kwargs)
        if self.is_sqlite:
            event.listen(self.engine.sync_engine, "connect", _sqlite_pragmas)

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @asynccontextmanager
    async def begin(self) -> AsyncIterator[AsyncConnection]:
        """One write transaction: committed when the block ends, rolled back on error."""
        lock = self._write_lock if self._write_lock is not None else nullcontext()
        async with lock, _translate_errors(), self.engine.begin() as conn:
            yield conn

    @asynccontextmanager
    async def autocommit(self) -> AsyncIterator[AsyncConnection]:
        """A connection whose every statement commits on its own (no BEGIN, no COMMIT): for a
        single statement that must be atomic by itself. PostgreSQL only."""
        assert not self.is_sqlite
        async with _translate_errors(), self.engine.connect() as conn:
            await conn.execution_options(isolation_level="AUTOCOMMIT")
            yield conn

    @asynccontextmanager
    async def driver(self) -> AsyncIterator[Any]:
        """The driver's own connection (asyncpg), from the pool, outside any transaction (each
        statement commits on its own): for the one statement of the hot path (the rooms' group
        commit), without SQLAlchemy's adapter around it (its execution cost a post as much as
        asyncpg's, bench/RESULTS.md issue 26). Errors as the rest of the city sees them: a
        refused row is ``IntegrityError``, a database that cannot serve is ``Unavailable`` (and
        a connection that failed leaves the pool). PostgreSQL only."""
        assert not self.is_sqlite
        async with _translate_errors(), self.engine.connect() as conn:
            fairy = await conn.get_raw_connection()
            try:
                yield fairy.driver_connection
            except asyncpg.IntegrityConstraintViolationError as exc:
                raise IntegrityError(str(exc.query or ""), None, exc) from exc
            except asyncpg.PostgresError as exc:  # the server's answer: the connection holds
                if _cannot_serve(exc.sqlstate or ""):
                    fairy.invalidate(exc)  # a shutdown or a lost connection ends it too
                    raise Unavailable("the database is unavailable") from exc
                raise
            except BaseException as exc:
                # The connection lost, a timeout or a cancel in mid-statement, the driver's own
                # state out of step: whatever it is, this connection is not handed out again.
                fairy.invalidate(exc if isinstance(exc, Exception) else None)
                if isinstance(exc, (asyncpg.InterfaceError, asyncpg.InternalClientError, OSError)):
                    raise Unavailable("the database connection was lost") from exc
                raise

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncConnection]:
        """A connection for reads (no write lock)."""
        async with _translate_errors(), self.engine.connect() as conn:
            yield conn

    async def ping(self) -> bool:
        try:
            async with asyncio.timeout(self.timeout), self.engine.connect() as conn:
                await conn.execute(sa.text("SELECT 1"))
        except (OSError, DBAPIError, PoolTimeoutError, TimeoutError):
            return False
        return True

    async def dispose(self) -> None:
        await self.engine.dispose()


def insert_for(dialect: str) -> Any:
    """The dialect's INSERT construct (``ON CONFLICT`` differs per dialect)."""
    return pg_insert if dialect == "postgresql" else sqlite_insert


# SQLSTATE classes that say "the server cannot serve you now", not "your statement is wrong":
# 08 connection exception, 53 insufficient resources (too many connections, disk full),
# 57 operator intervention (admin or crash shutdown, "the database system is starting up" or
# "not yet accepting connections" while it recovers, query cancelled); 25006 read-only
# transaction (a standby after a failover).
_UNAVAILABLE_CLASSES = frozenset({"08", "53", "57"})
_UNAVAILABLE_STATES = frozenset({"25006"})


def _cannot_serve(state: str) -> bool:
    return state[:2] in _UNAVAILABLE_CLASSES or state in _UNAVAILABLE_STATES


def _sqlstate(exc: DBAPIError) -> str:
    state = getattr(exc.orig, "sqlstate", None) or getattr(exc.orig, "pgcode", None)
    return state if isinstance(state, str) else ""


@asynccontextmanager
async def _translate_errors() -> AsyncIterator[None]:
    """A database that does not answer becomes a typed 503, never a hang or a 500."""
    try:
        yield
    except (OSError, PoolTimeoutError, TimeoutError) as exc:
        raise Unavailable("the database is unavailable") from exc
    except OperationalError as exc:
        raise Unavailable("the database is unavailable") from exc
    except DBAPIError as exc:
        if exc.connection_invalidated:
            raise Unavailable("the database connection was lost") from exc
        # asyncpg's server errors reach us as plain DBAPIError: without this, a PostgreSQL that
        # is restarting ("not yet accepting connections", 57P03, answered to every connect
        # during crash recovery) or shutting down was a 500 and killed room sockets.
        if _cannot_serve(_sqlstate(exc)):
            raise Unavailable("the database is unavailable") from exc
        raise


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cursor = dbapi_conn.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


DB: Key[Database] = Key("db")
