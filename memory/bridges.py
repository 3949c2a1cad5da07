"""The delivery cursors of chat bridges: per bridge, the last message of its thread posted to its service.

When and how a bridge posts is runtime/chat/bridge.py's; the table is made by migration 16.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from loopwright.memory.chat import Message, MessageState
from loopwright.memory.store import Store


def start(store: Store, name: str, thread: str) -> None:
    """A bridge new to the store, or now mapped to another thread, starts after that thread's last message (its
    history is not sent); a known one keeps its cursor."""
    with store.transaction() as conn:
        row = conn.execute("SELECT thread FROM bridge_cursors WHERE name = ?", (name,)).fetchone()
        if row is not None and row[0] == thread:
            return
        conn.execute("INSERT OR REPLACE INTO bridge_cursors (name, thread, delivered, updated_at) VALUES (?, ?, ?, ?)",
                     (name, thread, last_id(store, thread), time.time()))


def undelivered(store: Store, name: str, kinds: Sequence[str], limit: int, *, after: int = 0) -> list[Message]:
    """The oldest messages of the bridge's thread of these kinds past its cursor (and past `after`: what the caller
    knows holds none of them, so a thread's people's messages since the last reply are not read again)."""
    marks = ",".join("?" * len(kinds))
    return [Message.of(r) for r in store.conn.execute(
        f"SELECT m.* FROM messages m JOIN bridge_cursors c ON c.name = ? AND m.thread = c.thread"
        f" WHERE m.id > max(c.delivered, ?) AND m.kind IN ({marks}) AND m.state != ? ORDER BY m.id LIMIT ?",
        (name, after, *kinds, MessageState.DELETED, limit))]


def last_id(store: Store, thread: str) -> int:
    return store.conn.execute("SELECT coalesce(max(id), 0) FROM messages WHERE thread = ?", (thread,)).fetchone()[0]


def advance(store: Store, name: str, message_id: int) -> None:
    """Record the message as delivered (never moves the cursor back)."""
    store.conn.execute("UPDATE bridge_cursors SET delivered = ?, updated_at = ? WHERE name = ? AND delivered < ?",
                       (message_id, time.time(), name, message_id))

