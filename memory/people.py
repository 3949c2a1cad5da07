"""People who use the HTTP API and their tokens (made by the store's migration 15): the statements runtime/http/
needs. A token is never stored, only its SHA-256 (runtime/http/auth.py makes and checks them)."""

from __future__ import annotations

import time

from loopwright.memory.store import Store


def add(store: Store, name: str, token_hash: str) -> bool:
    """A new person, or a revoked one back with a new token; False when `name` has a token in use."""
    cur = store.conn.execute(
        "INSERT INTO people (name, token_hash, created_at) VALUES (?, ?, ?) ON CONFLICT (name) DO UPDATE SET"
        " token_hash = excluded.token_hash, created_at = excluded.created_at, revoked_at = NULL"
        " WHERE people.revoked_at IS NOT NULL", (name, token_hash, time.time()))
    return cur.rowcount != 0


def revoke(store: Store, name: str) -> bool:
    """Revoke the person's token; False when there is no such person or it was revoked already."""
    return store.conn.execute("UPDATE people SET revoked_at = ? WHERE name = ? AND revoked_at IS NULL",
                              (time.time(), name)).rowcount != 0


def holder(store: Store, token_hash: str) -> tuple[str, str] | None:
    """(name, stored hash) of the person whose token in use has this hash."""
    row = store.conn.execute("SELECT name, token_hash FROM people WHERE token_hash = ? AND revoked_at IS NULL",
                             (token_hash,)).fetchone()
    return None if row is None else (row[0], row[1])


def everyone(store: Store) -> list[dict]:
    """Every person: name, created_at, revoked_at (None while the token is in use)."""
    return [dict(r) for r in store.conn.execute("SELECT name, created_at, revoked_at FROM people ORDER BY name")]
