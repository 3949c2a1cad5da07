"""What the TUI's feed reads from the store, each a small indexed query: events after an id, runs and tasks by
primary key or by `updated_at`, the newest events of one run. tui/feed.py decides when to read what.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from loopwright.harness.events import parse_event
from loopwright.memory.store import Run, Store, Task, run_of, task_of


@contextmanager
def snapshot(store: Store) -> Iterator[None]:
    """One read transaction (BEGIN … COMMIT): every read inside sees the store as it was at the first one, whatever
    other processes commit meanwhile (WAL). Inside a transaction already, just that one."""
    conn = store.conn
    if conn.in_transaction:
        yield
        return
    conn.execute("BEGIN")
    try:
        yield
    finally:
        if conn.in_transaction:
            conn.execute("COMMIT")


def events_after(store: Store, event_id: int, limit: int) -> list[tuple[int, str | None, float, str, str | None]]:
    """Up to `limit` events after `event_id`, oldest first: (id, run, ts, type, data), data only for tool calls and stop
    requests (what the fleet view reads)."""
    return [tuple(r) for r in store.conn.execute(
        "SELECT id, run_id, ts, type, CASE WHEN type IN ('tool_started', 'stop_requested') THEN data END"
        " FROM events WHERE id > ? ORDER BY id LIMIT ?", (event_id, limit))]


def recent_events(store: Store, run_id: str, limit: int) -> list[tuple[int, float, Any]]:
    """The run's last `limit` events, oldest first, as `Store.events` gives them: (id, ts, event)."""
    return [(r[0], r[1], parse_event(r[2])) for r in store.conn.execute(
        "SELECT id, ts, data FROM (SELECT id, ts, data FROM events WHERE run_id = ? ORDER BY id DESC LIMIT ?)"
        " ORDER BY id", (run_id, limit))]


def last_event_ts(store: Store, run_id: str) -> float | None:
    row = store.conn.execute("SELECT ts FROM events WHERE run_id = ? ORDER BY id DESC LIMIT 1", (run_id,)).fetchone()
    return row[0] if row else None


def recent_tool_calls(store: Store, run_id: str, limit: int) -> list[dict]:
    """The payloads of the run's last `limit` tool calls, newest first."""
    return [json.loads(r[0]) for r in store.conn.execute(
        "SELECT data FROM events WHERE run_id = ? AND type = 'tool_started' ORDER BY id DESC LIMIT ?",
        (run_id, limit))]


def all_runs(store: Store) -> list[Run]:
    """Every run, in the order they started."""
    return [run_of(r) for r in store.conn.execute("SELECT * FROM runs ORDER BY started_at, rowid")]


def runs(store: Store, ids: Sequence[str]) -> list[Run]:
    """These runs (one IN (...) query: keep `ids` to a few hundred), in no particular order."""
    return [run_of(r) for r in
            store.conn.execute(f"SELECT * FROM runs WHERE id IN ({','.join('?' * len(ids))})", list(ids))]


def task(store: Store, task_id: int) -> Task | None:
    row = store.conn.execute("SELECT * FROM tasks WHERE id = ?", (task_id,)).fetchone()
    return None if row is None else task_of(row)


def all_tasks(store: Store) -> list[Task]:
    return [task_of(r) for r in store.conn.execute("SELECT * FROM tasks ORDER BY id")]


def tasks_after(store: Store, task_id: int) -> list[Task]:
    """Tasks newer than `task_id`, oldest first."""
    return [task_of(r) for r in
            store.conn.execute("SELECT * FROM tasks WHERE id > ? ORDER BY id", (task_id,))]


def tasks_updated(store: Store, since: float, *, up_to: int) -> list[Task]:
    """Tasks up to id `up_to` changed after `since` (tasks_updated index)."""
    return [task_of(r) for r in
            store.conn.execute("SELECT * FROM tasks WHERE updated_at > ? AND id <= ?", (since, up_to))]
