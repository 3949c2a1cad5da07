"""Chat threads and their messages in the store: every statement runtime/chat/ needs, one function each.

The tables are made by the store's migration 8 (threads, messages, and the
`parent_id` and `thread` of tasks). What the statements mean — leases, message
states, debouncing, fan-out — is runtime/chat/threads.py's; here are only the
reads and the guarded writes it builds on.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

from loopwright.memory.store import Store
from loopwright.memory.stream import add_thread_change


class MessageState(StrEnum):
    PENDING = "pending"  # a person's message, not yet acted on
    CONTEXT = "context"  # read as context when a later message starts work
    CONSUMED = "consumed"  # taken into a task (started it, or delivered to its run)
    CLEARED = "cleared"  # dropped by /stop
    DUPLICATE = "duplicate"
    REFUSED = "refused"  # over the author's rate
    DELETED = "deleted"
    POSTED = "posted"  # the agent's or the system's


class MessageKind(StrEnum):
    USER = "user"
    AGENT = "agent"
    STATUS = "status"
    SYSTEM = "system"


WAITING = (MessageState.PENDING, MessageState.CONTEXT)  # not yet read by the agent: still editable


@dataclass(frozen=True)
class Message:
    id: int
    thread: str
    author: str
    author_name: str
    text: str
    reply_to: int | None
    mentions: list[str]
    kind: str  # a MessageKind
    state: str  # a MessageState
    task_id: int | None
    edited: bool
    ts: float
    updated_at: float = 0.0

    @classmethod
    def of(cls, row) -> Message:
        return cls(id=row["id"], thread=row["thread"], author=row["author"], author_name=row["author_name"],
                   text=row["text"], reply_to=row["reply_to"], mentions=json.loads(row["mentions"]),
                   kind=row["kind"], state=row["state"], task_id=row["task_id"], edited=bool(row["edited"]),
                   ts=row["ts"], updated_at=row["updated_at"])


def _marks(values: Sequence) -> str:
    return ",".join("?" * len(values))


# -- threads ------------------------------------------------------------------------------------------------


def add_thread(store: Store, name: str, *, mode: str, owner: str | None, allow: list[str] | None,
               check: str | None) -> bool:
    """A new thread, and its row in the live stream's change feed; False when one of that name exists."""
    with store.transaction() as conn:
        cur = conn.execute(
            "INSERT OR IGNORE INTO threads (name, mode, owner, allow, check_cmd, created_at) VALUES (?, ?, ?, ?, ?, ?)",
            (name, mode, owner, json.dumps(allow) if allow else None, check, time.time()))
        if cur.rowcount == 0:
            return False
        add_thread_change(store, cur.lastrowid or 0)
    return True


def change_thread(store: Store, name: str, *, mode: str, allow: list[str] | None) -> bool:
    """Set a thread's mode and allow list, and write its row in the live stream's change feed; False when there is no
    such thread."""
    with store.transaction() as conn:
        row = conn.execute("SELECT rowid FROM threads WHERE name = ?", (name,)).fetchone()
        if row is None:
            return False
        conn.execute("UPDATE threads SET mode = ?, allow = ? WHERE name = ?",
                     (mode, json.dumps(allow) if allow else None, name))
        add_thread_change(store, row[0])
    return True


def thread(store: Store, name: str) -> dict | None:
    row = store.conn.execute("SELECT * FROM threads WHERE name = ?", (name,)).fetchone()
    return None if row is None else dict(row)


def thread_by_rowid(store: Store, rowid: int) -> dict | None:
    """The thread a change feed row names."""
    row = store.conn.execute("SELECT * FROM threads WHERE rowid = ?", (rowid,)).fetchone()
    return None if row is None else dict(row)


def thread_names(store: Store) -> list[str]:
    return [r[0] for r in store.conn.execute("SELECT name FROM threads ORDER BY name")]


def threads(store: Store) -> list[dict]:
    """Every thread with its number of messages and the time of its last one."""
    rows = store.conn.execute(
        "SELECT t.*, (SELECT count(*) FROM messages m WHERE m.thread = t.name) AS messages,"
        " (SELECT max(ts) FROM messages m WHERE m.thread = t.name) AS last_at FROM threads t ORDER BY t.name")
    return [dict(r) for r in rows]


def threads_with_pending(store: Store) -> list[str]:
    return [r[0] for r in store.conn.execute("SELECT DISTINCT thread FROM messages WHERE state = ?",
                                             (MessageState.PENDING,))]


def busy_threads(store: Store) -> list[tuple[str, int]]:
    """(thread, its active task) of every thread working on a task."""
    return [(r[0], r[1]) for r in
            store.conn.execute("SELECT name, active_task FROM threads WHERE active_task IS NOT NULL")]


def take_lease(store: Store, name: str, task_id: int, until: float, now: float) -> bool:
    """Make `task_id` the thread's active task, unless another holds a lease that has not run out."""
    return store.conn.execute("UPDATE threads SET active_task = ?, lease_until = ? WHERE name = ? AND "
                              "(active_task IS NULL OR lease_until < ?)", (task_id, until, name, now)).rowcount != 0


def renew_lease(store: Store, name: str, until: float, *, if_before: float) -> None:
    store.conn.execute("UPDATE threads SET lease_until = ? WHERE name = ? AND lease_until < ?",
                       (until, name, if_before))


def release(store: Store, name: str, task_id: int) -> None:
    store.conn.execute("UPDATE threads SET active_task = NULL, lease_until = 0 WHERE name = ? AND "
                       "active_task = ?", (name, task_id))


# -- messages -----------------------------------------------------------------------------------------------


def messages(store: Store, name: str, *, after: int = 0, limit: int | None = None,
             state: str | None = None) -> list[Message]:
    """The thread's messages after an id, oldest first; with `state`, only those in it (an index finds them in a
    long thread)."""
    sql = "SELECT * FROM messages WHERE thread = ? AND id > ? AND state != ?"
    params: list = [name, after, MessageState.DELETED]
    if state is not None:
        sql += " AND state = ?"
        params.append(state)
    rows = store.conn.execute(sql + " ORDER BY id" + (f" LIMIT {int(limit)}" if limit else ""), params)
    return [Message.of(r) for r in rows]


def edited(store: Store, name: str, *, since: float, up_to: int) -> list[Message]:
    """Messages up to id `up_to` edited after `since`, oldest edit first (a display shows them again)."""
    return [Message.of(r) for r in store.conn.execute(
        "SELECT * FROM messages WHERE thread = ? AND edited = 1 AND updated_at > ? AND id <= ? ORDER BY updated_at",
        (name, since, up_to))]


def message(store: Store, message_id: int) -> Message | None:
    row = store.conn.execute("SELECT * FROM messages WHERE id = ?", (message_id,)).fetchone()
    return None if row is None else Message.of(row)


def by_external_id(store: Store, external_id: str) -> Message | None:
    row = store.conn.execute("SELECT * FROM messages WHERE external_id = ?", (external_id,)).fetchone()
    return None if row is None else Message.of(row)


def is_posted(store: Store, key: str) -> bool:
    """Whether a message with this key was posted (replies are posted at most once)."""
    return store.conn.execute("SELECT 1 FROM messages WHERE reply_key = ?", (key,)).fetchone() is not None


def authors(store: Store, name: str) -> list[str]:
    return [r[0] for r in store.conn.execute("SELECT DISTINCT author FROM messages WHERE thread = ?", (name,))]


def has_duplicate(store: Store, name: str, author: str, text: str, *, since: float) -> bool:
    """The same text from the same author in this thread since then (a double send)."""
    return store.conn.execute(
        "SELECT id FROM messages WHERE thread = ? AND author = ? AND text = ? AND ts > ? AND kind = ? AND state != ?"
        " LIMIT 1", (name, author, text, since, MessageKind.USER, MessageState.DELETED)).fetchone() is not None


def requests_since(store: Store, author: str, since: float) -> int:
    """The author's messages since then that started or wait to start work (the rate limit counts them)."""
    return store.conn.execute(
        "SELECT count(*) FROM messages WHERE author = ? AND kind = ? AND ts > ? AND state IN (?, ?)",
        (author, MessageKind.USER, since, MessageState.PENDING, MessageState.CONSUMED)).fetchone()[0]


def last_request(store: Store, name: str) -> Message | None:
    """The thread's newest person's message that was taken into a task (not a command)."""
    row = store.conn.execute("SELECT * FROM messages WHERE thread = ? AND kind = ? AND state = ? AND text NOT LIKE "
                             "'/%' ORDER BY id DESC LIMIT 1",
                             (name, MessageKind.USER, MessageState.CONSUMED)).fetchone()
    return None if row is None else Message.of(row)


def add_message(store: Store, name: str, *, author: str, author_name: str, text: str, kind: str, state: str,
                mentions: Sequence[str] = (), reply_to: int | None = None, task_id: int | None = None,
                external_id: str | None = None, reply_key: str | None = None, now: float | None = None,
                once: bool = False) -> int | None:
    """Insert a message; its id. With `once`, a message whose `reply_key` is there already is not added (None)."""
    now = time.time() if now is None else now
    cur = store.conn.execute(
        f"INSERT {'OR IGNORE ' if once else ''}INTO messages (thread, author, author_name, text, reply_to, mentions,"
        " kind, state, task_id, external_id, reply_key, ts, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (name, author, author_name, text, reply_to, json.dumps(list(mentions)), kind, state, task_id, external_id,
         reply_key, now, now))
    return cur.lastrowid if cur.rowcount else None


def edit_waiting(store: Store, message_id: int, text: str, now: float) -> bool:
    """Replace the text of a message the agent has not read yet; False when it has."""
    return store.conn.execute(f"UPDATE messages SET text = ?, edited = 1, updated_at = ? WHERE id = ? AND "
                              f"state IN ({_marks(WAITING)})", (text, now, message_id, *WAITING)).rowcount != 0


def mark_edited(store: Store, message_id: int, now: float) -> None:
    store.conn.execute("UPDATE messages SET edited = 1, updated_at = ? WHERE id = ?", (now, message_id))


def edit_by_key(store: Store, key: str, text: str, now: float) -> None:
    """Edit the message posted with this key in place (a request's status message), when its text changes."""
    store.conn.execute("UPDATE messages SET text = ?, edited = 1, updated_at = ? WHERE reply_key = ? AND "
                       "text != ?", (text, now, key, text))


def delete_waiting(store: Store, message_id: int, now: float) -> bool:
    """Delete a message the agent has not read yet; False when it has."""
    return store.conn.execute(f"UPDATE messages SET state = ?, deleted = 1, updated_at = ? WHERE id = ? AND "
                              f"state IN ({_marks(WAITING)})",
                              (MessageState.DELETED, now, message_id, *WAITING)).rowcount != 0


def consume(store: Store, ids: Sequence[int], task_id: int, now: float, *, only_pending: bool = False) -> int:
    """Mark messages taken into a task; how many were (with `only_pending`, only those still pending)."""
    sql = f"UPDATE messages SET state = ?, task_id = ?, updated_at = ? WHERE id IN ({_marks(ids)})"
    params: list = [MessageState.CONSUMED, task_id, now, *ids]
    if only_pending:
        sql += " AND state = ?"
        params.append(MessageState.PENDING)
    return store.conn.execute(sql, params).rowcount


def mark_pending(store: Store, ids: Sequence[int], state: str, now: float) -> None:
    """Move those of these messages that are still pending to `state`."""
    store.conn.execute(f"UPDATE messages SET state = ?, updated_at = ? WHERE id IN ({_marks(ids)}) AND state = ?",
                       (state, now, *ids, MessageState.PENDING))


def clear_pending(store: Store, name: str) -> int:
    """/stop: the thread's people's messages still waiting are dropped; how many."""
    return store.conn.execute("UPDATE messages SET state = ? WHERE thread = ? AND state = ? AND kind = ?",
                              (MessageState.CLEARED, name, MessageState.PENDING, MessageKind.USER)).rowcount


# -- the tasks of a thread ------------------------------------------------------------------------------------


def set_task_thread(store: Store, task_id: int, name: str) -> None:
    store.conn.execute("UPDATE tasks SET thread = ? WHERE id = ?", (name, task_id))


def set_task_parent(store: Store, task_id: int, parent_id: int) -> None:
    store.conn.execute("UPDATE tasks SET parent_id = ? WHERE id = ?", (parent_id, task_id))


def child_ids(store: Store, task_id: int) -> list[int]:
    """The parts a chat request fanned out to, in order."""
    return [r[0] for r in store.conn.execute("SELECT id FROM tasks WHERE parent_id = ? ORDER BY id", (task_id,))]
