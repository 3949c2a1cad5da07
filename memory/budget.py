"""The `fleet_usage` table: the fleet's spend and raises per budget day (`TOTAL` holds raises of the all-time limits).

The store adds each model call's spend in the transaction that records the call (`Store.record_model_call`); the
limits and the budget day are runtime/fleet/budget.py's.
"""

from __future__ import annotations

import sqlite3

from loopwright.memory.store import Store

TOTAL = "*"  # the row that holds raises of the all-time limits


def usage(store: Store) -> dict[str, sqlite3.Row]:
    """Every budget day's row (day, usd, tokens, extra_usd, extra_tokens), by day."""
    return {r["day"]: r for r in store.conn.execute("SELECT * FROM fleet_usage")}


def add_allowance(store: Store, day: str, *, usd: float, tokens: int) -> None:
    """Raise the limits of a budget day (or, for `TOTAL`, the all-time ones) by this much."""
    store.conn.execute(
        "INSERT INTO fleet_usage (day, extra_usd, extra_tokens) VALUES (?, ?, ?) ON CONFLICT(day) DO UPDATE"
        " SET extra_usd = extra_usd + excluded.extra_usd, extra_tokens = extra_tokens + excluded.extra_tokens",
        (day, usd, tokens))
