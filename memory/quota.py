"""The `quota_gates` table: one rate-limit gate per provider and model, shared by every run of the project.

What a gate does (closing on a 429, the backoff, the staggered release) is runtime/fleet/quota.py's; these are its
reads and writes.
"""

from __future__ import annotations

import sqlite3

from loopwright.memory.store import Store


def gate(store: Store, key: str) -> sqlite3.Row | None:
    """The gate's row (closed_until, next_slot, hits, reason, updated_at), or None when it never closed."""
    return store.conn.execute("SELECT * FROM quota_gates WHERE key = ?", (key,)).fetchone()


def take_slot(store: Store, key: str, stagger: float) -> float:
    """The next release time, `stagger` seconds after the one handed out before it (or the reopening)."""
    with store.transaction() as conn:
        return conn.execute(
            "UPDATE quota_gates SET next_slot = MAX(next_slot, closed_until) + ? WHERE key = ? RETURNING next_slot - ?",
            (stagger, key, stagger)).fetchone()[0]


def close(store: Store, key: str, *, until: float, hits: int, reason: str, now: float) -> None:
    """Close the gate until then (its `hits`: closings in a row)."""
    store.conn.execute(
        "INSERT INTO quota_gates (key, closed_until, next_slot, hits, reason, updated_at)"
        " VALUES (?, ?, 0, ?, ?, ?) ON CONFLICT(key) DO UPDATE SET closed_until = excluded.closed_until,"
        " hits = excluded.hits, reason = excluded.reason, updated_at = excluded.updated_at",
        (key, until, hits, reason, now))


def reset_hits(store: Store, key: str) -> None:
    store.conn.execute("UPDATE quota_gates SET hits = 0 WHERE key = ? AND hits > 0", (key,))


def closed(store: Store, now: float) -> list[sqlite3.Row]:
    """The gates closed at `now`."""
    return store.conn.execute("SELECT * FROM quota_gates WHERE closed_until > ?", (now,)).fetchall()
