"""Opening a loopwright SQLite database: the connection (WAL, busy timeout, autocommit), transactions, migrations
by `PRAGMA user_version`, and telling a full disk from other failures. The store (`memory.store`) and the global
lessons database open theirs here.
"""

from __future__ import annotations

import errno
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import sqlite_utils

from loopwright.errors import LoopwrightError
from loopwright.memory.schema import Migration


class StoreError(LoopwrightError):
    """A lookup or state change the user asked for cannot be done; said in one line."""


def disk_full_error(e: BaseException) -> bool:
    """Whether `e` (or what caused it) is a write that failed for lack of disk: SQLite's "database or disk is
    full", ENOSPC, or a command that said so."""
    for _ in range(10):  # a chain of causes, never a cycle
        if e is None:
            return False
        if isinstance(e, sqlite3.OperationalError) and getattr(e, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL:
            return True
        if isinstance(e, OSError) and e.errno == errno.ENOSPC or "No space left on device" in str(e):  # git's too
            return True
        e = e.__cause__ or e.__context__  # type: ignore[assignment]
    return False


def connect(path: str | Path) -> sqlite_utils.Database:
    """A database opened as the store opens its own: WAL, a 30 s busy timeout, autocommit outside transactions."""
    conn = sqlite3.connect(str(path), timeout=30, isolation_level=None, check_same_thread=False)
    conn.row_factory = sqlite3.Row
    db = sqlite_utils.Database(conn)
    db.execute("PRAGMA busy_timeout = 30000")
    db.enable_wal()
    db.execute("PRAGMA synchronous = NORMAL")  # WAL + NORMAL: durable across process crashes
    return db


@contextmanager
def transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """BEGIN IMMEDIATE … COMMIT on `conn`; inside a transaction already, just that one."""
    if conn.in_transaction:
        yield conn
        return
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
        conn.execute("COMMIT")
    except BaseException:
        # SQLite may have rolled back already (a full disk): never leave the connection inside a transaction
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


def migrate(db: sqlite_utils.Database, migrations: list[Migration], path: str | Path) -> None:
    """Bring `db` to version len(migrations) (PRAGMA user_version), one transaction per migration."""
    latest = len(migrations)
    version = db.conn.execute("PRAGMA user_version").fetchone()[0]
    if version > latest:
        raise StoreError(f"{path} has schema version {version}, newer than this loopwright ({latest}): "
                         "upgrade loopwright")
    for number in range(version + 1, latest + 1):
        with transaction(db.conn) as conn:
            # another process may have migrated while we waited for the write lock
            if conn.execute("PRAGMA user_version").fetchone()[0] >= number:
                continue
            for step in migrations[number - 1]:
                if callable(step):
                    step(db)
                else:
                    conn.execute(step)
            conn.execute(f"PRAGMA user_version = {number}")
