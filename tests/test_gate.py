"""The turn gate (harness.gate): turns in arrival order, a few at a time, slots given up around slow waits."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from loopwright.harness.gate import TurnGate, released
from loopwright.harness.tools import run_command


def test_turns_take_the_slots_in_the_order_they_came():
    async def main() -> list[str]:
        gate, log = TurnGate(1), []

        async def turn(name: str, steps: int) -> None:
            async with gate.hold():
                for i in range(steps):
                    log.append(f"{name}{i}")
                    await asyncio.sleep(0)  # an await inside the turn: without the gate the others would interleave

        await asyncio.gather(*(turn(n, 3) for n in "abc"))
        return log

    assert asyncio.run(main()) == ["a0", "a1", "a2", "b0", "b1", "b2", "c0", "c1", "c2"]


def test_a_turn_waiting_on_a_command_lets_the_next_one_in(tmp_path: Path):
    async def main() -> list[str]:
        gate, log = TurnGate(1), []
        started = asyncio.Event()

        async def slow() -> None:
            async with gate.hold():
                log.append("slow starts its command")
                started.set()
                result = await run_command("sleep 0.5; echo done", cwd=tmp_path, timeout=10)
                log.append(f"slow's command: {result.output.strip()}")

        async def quick() -> None:
            await started.wait()
            async with gate.hold():
                log.append("quick's turn")

        await asyncio.wait_for(asyncio.gather(slow(), quick()), 10)
        return log

    assert asyncio.run(main()) == ["slow starts its command", "quick's turn", "slow's command: done"]


def test_released_outside_a_turn_is_a_no_op_and_a_cancelled_turn_frees_its_slot():
    async def main() -> None:
        gate = TurnGate(1)
        async with released():  # no turn held: nothing to give up
            pass
        blocker = asyncio.Event()

        async def holder() -> None:
            async with gate.hold():
                async with released():
                    await blocker.wait()

        async def other() -> None:
            async with gate.hold():
                await asyncio.sleep(0.2)  # holds the slot while holder() wants it back

        h = asyncio.ensure_future(holder())
        await asyncio.sleep(0.05)
        o = asyncio.ensure_future(other())
        await asyncio.sleep(0.05)
        blocker.set()
        await asyncio.sleep(0)
        h.cancel()  # cancelled while queueing to take its slot back
        await asyncio.gather(h, o, return_exceptions=True)
        async with asyncio.timeout(1):  # the one slot is free again: nothing leaked, nothing released twice
            async with gate.hold():
                assert gate._semaphore.locked()
        assert not gate._semaphore.locked()

    asyncio.run(main())


def test_a_gate_needs_a_slot():
    with pytest.raises(ValueError):
        TurnGate(0)
