"""The worker's side of the store: a `RunLog` whose writes are batched to the head, and the loop's call
permit and command source, answered by the head in one round trip at each model boundary.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Callable, Sequence
from typing import Any

from pydantic import BaseModel

from loopwright.harness.budget import BudgetConfig, BudgetExceeded, FleetBudgetSpent, check_wall_time
from loopwright.harness.events import ModelCalled
from loopwright.harness.messages import Message
from loopwright.harness.retry import QuotaGate
from loopwright.memory.store import Command, Run
from loopwright.runtime.backends.ray.wire import RunSpec, await_ref
from loopwright.runtime.config import FleetBudgetConfig
from loopwright.runtime.fleet.budget import budget_day

PERMIT_SECONDS = 1.0  # a permission fetched at a model boundary serves the model call that follows within this
SYNC_ATTEMPTS = 6  # a batch the head could not take is sent again (the head applies each batch once)


class ProxyScratchpad:
    """The run's scratch pad on a worker: read from the proxy's copy, written to it and to the head."""

    def __init__(self, proxy: StoreProxy):
        self.proxy = proxy

    def read(self) -> str:
        return self.proxy.pad

    def append(self, text: str) -> None:
        self.proxy.pad = f"{self.proxy.pad}\n{text}" if self.proxy.pad else text
        self.proxy.ops.append(("scratch_append", (self.proxy.run_id, text), {}))

    def replace(self, text: str) -> None:
        self.proxy.pad = text
        self.proxy.ops.append(("scratch_replace", (self.proxy.run_id, text), {}))


class StoreProxy:
    """The run's `RunLog` on a worker (what an `AgentLoop` uses of the store): writes are batched to the head,
    reads are local.

    The head sent the run's row, conversation and scratch pad with the run; from then on this worker is the
    only writer of them, so its own copy is the truth and reading it costs nothing.
    """

    def __init__(self, head, spec: RunSpec):
        self.head, self.run_id, self.interval = head, spec.run_id, spec.flush_interval
        self._run, self._conversation, self.pad = spec.run, list(spec.conversation), spec.scratchpad
        self.ops: list[tuple[str, tuple, dict]] = []
        self.seq = 0
        self.sender = f"{spec.run_id}/{os.getpid()}/{time.time_ns()}"  # batches are numbered per worker
        self.listeners: list = []
        self._commands: list[Command] = []
        self._lock: asyncio.Lock | None = None
        self._flusher: asyncio.Task | None = None
        self.round_trips = 0

    # reads
    def run(self, run_id: str) -> Run:
        return self._run

    def conversation(self, run_id: str) -> list[Message]:
        return list(self._conversation)

    def scratchpad(self, run_id: str) -> ProxyScratchpad:
        return ProxyScratchpad(self)

    def take_commands(self, run_id: str) -> list[Command]:
        """The commands the last `sync(take=True)` brought from the head."""
        taken, self._commands = self._commands, []
        return taken

    # writes
    def append(self, run_id: str | None, event: BaseModel) -> int:
        self.ops.append(("append", (run_id, event), {}))
        return 0

    def record_model_call(self, run_id: str, call: ModelCalled, message: Message | None,
                          budget_day: str | None = None, progress: dict[str, Any] | None = None) -> None:
        self.ops.append(("record_model_call", (run_id, call, message, budget_day), {"progress": progress}))

    def update_run(self, run_id: str, **fields: Any) -> None:
        self.ops.append(("update_run", (run_id,), fields))

    def add_checkpoint(self, run_id: str, *, sha: str, step: int, message: str) -> None:
        self.ops.append(("add_checkpoint", (run_id,), {"sha": sha, "step": step, "message": message}))

    def finish_command(self, command_id: int, *, ok: bool, result: str) -> None:
        self.ops.append(("finish_command", (command_id,), {"ok": ok, "result": result}))

    # the wire
    async def sync(self, *, take: bool = False, check: tuple | None = None):
        """Send the pending batch (in order: one call at a time); take commands and ask permission if asked."""
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            ops, self.ops = self.ops, []
            if not ops and not take and check is None:
                return None
            self.seq += 1
            self.round_trips += 1
            for attempt in range(SYNC_ATTEMPTS):
                try:
                    commands, verdict = await await_ref(self.head.sync.remote(self.run_id, self.sender, self.seq, ops,
                                                                              take, check))
                    break
                except Exception as e:  # noqa: BLE001 — the head's actor restarting: the same batch again
                    if attempt == SYNC_ATTEMPTS - 1 or type(e).__name__ not in ("ActorUnavailableError",
                                                                                "RayActorError", "ActorDiedError"):
                        raise
                    await asyncio.sleep(0.5 * 2 ** attempt)
        if take:
            self._commands += commands
        return verdict

    def start(self) -> None:
        async def flusher() -> None:
            while True:
                await asyncio.sleep(self.interval)
                if self.ops:
                    await self.sync()
        self._flusher = asyncio.ensure_future(flusher())

    async def close(self) -> None:
        if self._flusher is not None:
            self._flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._flusher
        await self.sync()


class HeadLink:
    """The loop's call permit and command source on a worker: the head decides, before every model call, whether
    the call may start, and hands over the run's commands, in one round trip at each model boundary."""

    def __init__(self, proxy: StoreProxy, budget: BudgetConfig, fleet: FleetBudgetConfig,
                 quota_gate: QuotaGate | None):
        self.proxy, self.budget, self.fleet, self.quota_gate = proxy, budget, fleet, quota_gate
        self._permit: tuple[float, Any] | None = None

    async def take(self) -> Sequence[Command]:
        """The commands the head holds for the run; the head's verdict on the next model call comes with them."""
        verdict = await self.proxy.sync(take=True, check=(self.budget, self.fleet))
        self._permit = (time.monotonic(), verdict)
        return self.proxy.take_commands(self.proxy.run_id)

    def finish(self, command_id: int, *, ok: bool, result: str) -> None:
        self.proxy.finish_command(command_id, ok=ok, result=result)

    async def check(self, active_seconds: Callable[[], float]) -> None:
        """The head's verdict (fleet budget, the run's limits on the store): the one that came with the commands
        just now, else asked for; the time limit is the worker's own clock."""
        permit, self._permit = self._permit, None
        if permit is not None and time.monotonic() - permit[0] <= PERMIT_SECONDS:
            verdict = permit[1]
        else:
            verdict = await self.proxy.sync(check=(self.budget, self.fleet))
        if verdict is not None:
            kind, why = verdict
            raise FleetBudgetSpent(why) if kind == "fleet" else BudgetExceeded(why)
        check_wall_time(self.budget, active_seconds())

    def day(self) -> str:
        """Spend goes to the fleet's budget day (whether any is left, the head says)."""
        return budget_day(self.fleet.resets_at)
