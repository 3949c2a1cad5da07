"""One rate-limit gate per provider and model, shared by every run of the project through the store.

When any run gets a 429, the gate closes until the provider's reset time
(`retry-after` or its rate-limit reset headers; without them an exponential
backoff that grows with each closing in a row). Every model call of every run
for that provider and model — in this process or another — waits at the gate
instead of hammering the provider. When it reopens, the waiting runs go one at
a time, `quota.stagger_seconds` apart: each takes the next slot from the
store (`next_slot`), so the order holds across processes too.

A run waits at a closed gate at most `quota.max_wait_seconds` in all since
its last call that went through (each wait is said, with how long and the
count so far); a gate that stays closed longer, or whose reset time lies
beyond that, pauses the run instead, and the daemon notifies (a
`run_needs_input`). With `quota.auto_resume = false` a closed gate pauses the
run at once; the person resumes it (`loopwright resume`) when they choose.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from loopwright.harness.models import NeedsAttention
from loopwright.harness.retry import RetryPolicy
from loopwright.memory import quota as gates
from loopwright.memory.store import Store
from loopwright.runtime.config import QuotaConfig

MAX_CLOSED_SECONDS = 24 * 3600  # a reset time further away than this is not believed


class QuotaPaused(NeedsAttention):
    """The gate is closed and automatic resume is off, or the run waited at it long enough: it pauses."""


def gate_key(provider: str, model: str, base_url: str | None) -> str:
    return f"{provider}/{model}" + (f"@{base_url}" if base_url else "")


class StoreQuotaGate:
    """The gate for one key, its state in the `quota_gates` table (see the module docstring)."""

    def __init__(self, store: Store, key: str, config: QuotaConfig, policy: RetryPolicy, *,
                 clock: Callable[[], float] = time.time, sleep=asyncio.sleep):
        self.store, self.key, self.config, self.policy = store, key, config, policy
        self.clock, self.sleep = clock, sleep
        self._hits_seen = 0
        self._waited = 0.0  # seconds this run waited at the gate since its last call that went through

    def _row(self):
        return gates.gate(self.store, self.key)

    async def wait(self, on_wait: Callable[[float, str], None]) -> None:
        """Return when this run may call the model: at once when the gate is open and nobody queues."""
        while True:
            row = self._row()
            now = self.clock()
            self._hits_seen = row["hits"] if row else 0
            if row is None or (row["closed_until"] <= now and row["next_slot"] <= now):
                return
            closed = row["closed_until"] > now
            until = time.strftime("%H:%M:%S", time.localtime(row["closed_until"]))
            if closed and not self.config.auto_resume:
                raise QuotaPaused(f"{row['reason']}: the fleet's gate for {self.key} is closed until {until}; "
                                  f"automatic resume is off (quota.auto_resume): `loopwright resume` after that")
            limit = self.config.max_wait_seconds
            if closed and self._waited + row["closed_until"] - now > limit:
                raise QuotaPaused(f"{row['reason']}: the fleet's gate for {self.key} stays closed until {until}, "
                                  f"past the {limit:g}s a run waits at it (quota.max_wait_seconds; waited "
                                  f"{self._waited:.1f}s): `loopwright resume` after that")
            slot = self._take_slot()
            if slot > now:
                if closed:  # a wait in the queue that drains after a reopening is not news
                    on_wait(slot - now, f"{row['reason']}: waiting at the fleet's rate-limit gate for {self.key} "
                                        f"({self._waited:.1f}s of at most {limit:g}s waited so far)")
                await self.sleep(slot - now)
                self._waited += slot - now
            again = self._row()
            if again is None or again["closed_until"] <= self.clock():
                return
            # closed again while we waited: queue again

    def _take_slot(self) -> float:
        """The next release time, `stagger_seconds` after the one handed out before it."""
        return gates.take_slot(self.store, self.key, self.config.stagger_seconds)

    def close(self, reason: str, server_wait: float | None, sent_at: float) -> None:
        """A 429 for a request sent at `sent_at`. Only the first of a wave counts as a new closing (backoff grows)."""
        now = self.clock()
        with self.store.transaction():
            row = gates.gate(self.store, self.key)
            fresh = row is None or row["closed_until"] <= sent_at  # nobody closed it since this request went out
            hits = (row["hits"] if row else 0) + fresh
            if server_wait is not None:
                delay = min(server_wait, MAX_CLOSED_SECONDS)
            else:
                delay = min(self.policy.initial_backoff * 2 ** (hits - 1), self.policy.max_backoff)
            until = max(row["closed_until"] if row else 0.0, now + delay)
            gates.close(self.store, self.key, until=until, hits=hits, reason=reason, now=now)

    def opened(self) -> None:
        """A call went through: the next closing starts the backoff afresh, and the run's waiting time too."""
        self._waited = 0.0
        if self._hits_seen:
            self._reset_hits()
            self._hits_seen = 0

    def _reset_hits(self) -> None:
        gates.reset_hits(self.store, self.key)


def closed_gates(store: Store, now: float | None = None) -> list[dict]:
    """Gates closed now, for `status`."""
    now = time.time() if now is None else now
    return [{"gate": r["key"], "closed_for_seconds": round(r["closed_until"] - now, 1), "reason": r["reason"],
             "closings_in_a_row": r["hits"]}
            for r in gates.closed(store, now)]
