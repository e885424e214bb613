"""aiosqlite's interface over the standard sqlite3 module, run on the event loop's own thread.

aiosqlite hands every call (cursor, execute, fetch, close: three or four per statement) to a thread of its
own and back; measured here, that traffic cost half of each service's CPU per event. A statement on the
local SQLite file takes microseconds and, with the units of work of a process taking turns on an asyncio
lock (shared.db), never waits for another writer, so running it inline is cheaper and blocks nothing.
SQLAlchemy's aiosqlite dialect drives this module instead of aiosqlite (see shared.db.make_engine).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Generator, Iterable
from sqlite3 import (  # noqa: F401  (the DB-API names the dialect reads from its driver module)
    DatabaseError,
    Error,
    IntegrityError,
    NotSupportedError,
    OperationalError,
    ProgrammingError,
    sqlite_version,
    sqlite_version_info,
)
from typing import Any, Self


class Cursor:
    def __init__(self, cursor: sqlite3.Cursor):
        self._cursor = cursor

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self._cursor.close()

    async def execute(self, sql: str, parameters: Iterable[Any] = ()) -> Cursor:
        self._cursor.execute(sql, parameters)
        return self

    async def executemany(self, sql: str, seq_of_parameters: Iterable[Iterable[Any]]) -> Cursor:
        self._cursor.executemany(sql, seq_of_parameters)
        return self

    async def fetchone(self) -> Any:
        return self._cursor.fetchone()

    async def fetchmany(self, size: int | None = None) -> list[Any]:
        return self._cursor.fetchmany(size or self._cursor.arraysize)

    async def fetchall(self) -> list[Any]:
        return self._cursor.fetchall()

    async def close(self) -> None:
        self._cursor.close()

    @property
    def description(self) -> Any:
        return self._cursor.description

    @property
    def rowcount(self) -> int:
        return self._cursor.rowcount

    @property
    def lastrowid(self) -> int | None:
        return self._cursor.lastrowid

    @property
    def arraysize(self) -> int:
        return self._cursor.arraysize

    @arraysize.setter
    def arraysize(self, value: int) -> None:
        self._cursor.arraysize = value


class _RunNow:
    """Stands in for aiosqlite's queue to its thread, which the dialect uses to set isolation_level."""

    def put_nowait(self, item: tuple[Any, Callable[[], Any]]) -> None:
        future, function = item
        try:
            result = function()
        except Exception as exc:  # noqa: BLE001  (handed to the caller, like aiosqlite does)
            future.set_exception(exc)
        else:
            future.set_result(result)


class Connection:
    def __init__(self, connection: sqlite3.Connection):
        self._conn = self._connection = connection
        self._tx = _RunNow()

    @property
    def isolation_level(self) -> str | None:
        return self._conn.isolation_level

    def cursor(self) -> Cursor:
        return Cursor(self._conn.cursor())

    async def commit(self) -> None:
        self._conn.commit()

    async def rollback(self) -> None:
        self._conn.rollback()

    async def close(self) -> None:
        self._conn.close()

    async def create_function(self, *args: Any, **kwargs: Any) -> None:
        self._conn.create_function(*args, **kwargs)

    def stop(self) -> None:
        self._conn.close()


class _Opening:
    """What connect() returns: awaitable like aiosqlite's; `_thread` is looked at by the dialect."""

    class _thread:
        daemon = True

    def __init__(self, database: str, kwargs: dict[str, Any]):
        self._database, self._kwargs = database, kwargs

    def __await__(self) -> Generator[Any, None, Connection]:
        return self._open().__await__()

    async def _open(self) -> Connection:
        return Connection(sqlite3.connect(self._database, **{**self._kwargs, "check_same_thread": False}))


def connect(database: str, **kwargs: Any) -> _Opening:
    return _Opening(database, kwargs)
