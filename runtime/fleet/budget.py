"""The fleet-wide budget: USD and tokens per day and in total, persisted in the store.

Every model call anywhere adds its cost to the current budget day's row (the
day starts at `fleet.resets_at`, local time) in the same transaction that
records the call; `exhausted` is checked before every model call. A raise adds
allowance to today (or to the total); the next budget day starts afresh.
"""

from __future__ import annotations

import datetime as dt
import time

from loopwright.memory import budget as ledger
from loopwright.memory.budget import TOTAL
from loopwright.memory.store import Store
from loopwright.runtime.config import FleetBudgetConfig

SPENT = "fleet budget spent"


def budget_day(resets_at: str, now: float | None = None) -> str:
    """The budget day `now` falls in: the date of the most recent reset."""
    moment = dt.datetime.fromtimestamp(time.time() if now is None else now)
    hour, minute = (int(x) for x in resets_at.split(":"))
    reset = moment.replace(hour=hour, minute=minute, second=0, microsecond=0)
    return (moment.date() if moment >= reset else moment.date() - dt.timedelta(days=1)).isoformat()


class FleetBudget:
    def __init__(self, store: Store, config: FleetBudgetConfig):
        self.store, self.config = store, config

    def day(self) -> str:
        return budget_day(self.config.resets_at)

    def usage(self) -> dict:
        """Spent and allowed, today and in total (None: no limit)."""
        today = self.day()
        rows = ledger.usage(self.store)
        day = rows.get(today)
        total = rows.get(TOTAL)
        spent_usd = sum(r["usd"] for d, r in rows.items() if d != TOTAL)
        spent_tokens = sum(r["tokens"] for d, r in rows.items() if d != TOTAL)
        c = self.config

        def limit(base, extra):
            return None if base is None else base + extra

        return {
            "day": today,
            "day_usd": day["usd"] if day else 0.0, "day_tokens": day["tokens"] if day else 0,
            "day_usd_limit": limit(c.usd_per_day, day["extra_usd"] if day else 0.0),
            "day_tokens_limit": limit(c.tokens_per_day, day["extra_tokens"] if day else 0),
            "total_usd": spent_usd, "total_tokens": spent_tokens,
            "total_usd_limit": limit(c.usd_total, total["extra_usd"] if total else 0.0),
            "total_tokens_limit": limit(c.tokens_total, total["extra_tokens"] if total else 0),
        }

    def exhausted(self) -> str | None:
        """Why no model call may start now, or None."""
        c = self.config
        if all(v is None for v in (c.usd_per_day, c.tokens_per_day, c.usd_total, c.tokens_total)):
            return None
        u = self.usage()
        for what, spent, cap, unit in (("today", u["day_usd"], u["day_usd_limit"], "$"),
                                       ("today", u["day_tokens"], u["day_tokens_limit"], "tokens"),
                                       ("in total", u["total_usd"], u["total_usd_limit"], "$"),
                                       ("in total", u["total_tokens"], u["total_tokens_limit"], "tokens")):
            if cap is not None and spent >= cap:
                amount = f"${spent:.4f} of ${cap:.2f}" if unit == "$" else f"{spent:,} of {cap:,} tokens"
                when = f"resets at {self.config.resets_at}" if what == "today" else "no reset"
                return f"{SPENT} {what} ({amount}; {when}, or `loopwright budget raise`)"
        return None

    def raise_by(self, *, usd: float = 0.0, tokens: int = 0, total: bool = False) -> None:
        key = TOTAL if total else self.day()
        ledger.add_allowance(self.store, key, usd=usd, tokens=tokens)
