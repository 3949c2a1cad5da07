"""The `notifications` table (each event's key claimed once, then its delivery recorded), the outbox the daemon's
notifier takes events from (a trigger adds a row in the very transaction that moves a task to a status that may be
announced, memory/schema.py), and what the notifier reads to describe an event: tasks, a task's last run.

When to notify, and how, is runtime/fleet/notify.py's; the TUI's feed reads new rows with `since`.
"""

from __future__ import annotations

import json
import sqlite3
import time
from enum import StrEnum

from loopwright.harness.statuses import CommandKind
from loopwright.memory.store import Store


class NotificationStatus(StrEnum):
    PENDING = "pending"  # claimed, being delivered (a daemon that died first left it: the next one sends it)
    SENT = "sent"
    FAILED = "failed"


def write_mark(store: Store) -> tuple[int, int]:
    """Commits by other connections (`PRAGMA data_version`) and this connection's own writes: equal marks mean
    nothing was written in between."""
    conn = store.conn
    return conn.execute("PRAGMA data_version").fetchone()[0], conn.total_changes


# -- the notifications table ---------------------------------------------------------------------------------


def claim(store: Store, key: str, kind: str, event: dict) -> bool:
    """Record the event under its key; False when that key was claimed before (by this daemon or an earlier one)."""
    return store.conn.execute(
        "INSERT OR IGNORE INTO notifications (key, kind, payload, created_at) VALUES (?, ?, ?, ?)",
        (key, kind, json.dumps(event, ensure_ascii=False), time.time())).rowcount == 1


def record_result(store: Store, key: str, ok: bool, result: str) -> None:
    store.conn.execute("UPDATE notifications SET status = ?, result = ? WHERE key = ?",
                       (NotificationStatus.SENT if ok else NotificationStatus.FAILED, result, key))


def last_rowid(store: Store) -> int:
    return store.conn.execute("SELECT coalesce(max(rowid), 0) FROM notifications").fetchone()[0]


def since(store: Store, rowid: int) -> list[tuple[int, str, str, str, float]]:
    """Notifications after `rowid`, oldest first: (rowid, key, kind, payload, created_at)."""
    return [tuple(r) for r in store.conn.execute(
        "SELECT rowid, key, kind, payload, created_at FROM notifications WHERE rowid > ? ORDER BY rowid", (rowid,))]


# -- the outbox --------------------------------------------------------------------------------------------


def start_session(store: Store) -> None:
    """A notifier starts: after a clean stop (`end_session`), the outbox holds only what changed while no daemon ran,
    which is not announced, and is emptied; after a crash it is kept, to be announced now."""
    with store.transaction() as conn:
        if conn.execute("SELECT stopped_cleanly FROM notifier_state").fetchone()[0]:
            conn.execute("DELETE FROM notification_outbox")
        conn.execute("UPDATE notifier_state SET stopped_cleanly = 0")


def end_session(store: Store) -> None:
    store.conn.execute("UPDATE notifier_state SET stopped_cleanly = 1")


def outbox(store: Store, limit: int) -> list[sqlite3.Row]:
    """The oldest outbox rows: (id, task_id, status, reason, at, title), the title None when the task is gone."""
    return store.conn.execute(
        "SELECT o.id, o.task_id, o.status, o.reason, o.at, t.title FROM notification_outbox o"
        " LEFT JOIN tasks t ON t.id = o.task_id ORDER BY o.id LIMIT ?", (limit,)).fetchall()


def take_outbox(store: Store, up_to: int) -> None:
    store.conn.execute("DELETE FROM notification_outbox WHERE id <= ?", (up_to,))


def unsent(store: Store) -> list[tuple[str, dict]]:
    """Claimed notifications whose delivery never finished (a daemon died first), oldest first: (key, event)."""
    return [(r[0], json.loads(r[1])) for r in store.conn.execute(
        "SELECT key, payload FROM notifications WHERE status = ? ORDER BY rowid", (NotificationStatus.PENDING,))]


# -- what the notifier reads ---------------------------------------------------------------------------------


def last_run(store: Store, task_id: int) -> sqlite3.Row | None:
    """The task's newest run (id, status, reason, branch) with `cost`, the cost of all its runs."""
    return store.conn.execute(
        "SELECT id, status, reason, branch, (SELECT sum(cost_usd) FROM runs WHERE task_id = ?) AS cost"
        " FROM runs WHERE task_id = ? ORDER BY started_at DESC, rowid DESC LIMIT 1", (task_id, task_id)).fetchone()


def pause_commands(store: Store, run_id: str) -> list[str]:
    """The arguments (JSON) of every pause command sent to the run."""
    return [r[0] for r in store.conn.execute("SELECT args FROM commands WHERE run_id = ? AND kind = ?",
                                             (run_id, CommandKind.PAUSE))]
