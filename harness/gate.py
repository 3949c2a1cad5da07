"""The turn gate: at most a few runs of a process do their turn's work at once, first come, first served.

A turn's work is what happens between a model answer and the next request: tools, the checkpoint, the
store's writes, each an `await` or several. A hundred runs whose answers arrive together would otherwise
interleave all those awaits (processor sharing), so every turn would last as long as all of them together,
and the runs would keep arriving together, turn after turn. With a few slots taken in order, turns end in the
order their answers came, the runs spread out over the model's latency, and a turn costs about its own work.
(Measured by `python -m loopwright.bench.fleet`; see the figures in bench/fleet.py's docstring.)

A run waiting on something that can take minutes (a shell command, the acceptance check, a merge) gives its
slot up meanwhile, through `released()`, and queues for one again after.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
from collections.abc import AsyncIterator

__all__ = ["TurnGate", "released"]


class _Slot:
    def __init__(self, gate: TurnGate):
        self.gate, self.held = gate, False


_slot: contextvars.ContextVar[_Slot | None] = contextvars.ContextVar("loopwright_turn_slot", default=None)


class TurnGate:
    """`slots` turns at once; waiters are let in in the order they came (asyncio.Semaphore is fair)."""

    def __init__(self, slots: int):
        if slots < 1:
            raise ValueError("a turn gate needs at least one slot")
        self.slots = slots
        self._semaphore = asyncio.Semaphore(slots)

    @contextlib.asynccontextmanager
    async def hold(self) -> AsyncIterator[None]:
        slot = _Slot(self)
        await self._semaphore.acquire()
        slot.held = True
        token = _slot.set(slot)
        try:
            yield
        finally:
            _slot.reset(token)
            if slot.held:  # not if a `released()` was cancelled while queueing to take it back
                slot.held = False
                self._semaphore.release()


@contextlib.asynccontextmanager
async def released() -> AsyncIterator[None]:
    """Give the current turn's slot up (if it holds one) while waiting on something slow; take one again after."""
    slot = _slot.get()
    if slot is None or not slot.held:
        yield
        return
    slot.held = False
    slot.gate._semaphore.release()
    try:
        yield
    finally:
        await slot.gate._semaphore.acquire()
        slot.held = True
