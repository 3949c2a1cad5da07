"""Runtime overhead per turn, against a bare SDK loop, measured in one run.

Both loops call the Anthropic SDK against the same loopback server with the
same growing conversation. The loopwright loop does everything a real turn
does (events, counters, budget check, context estimate, tool dispatch through
the Toolbox, command polling); tool time is subtracted. Overhead per turn =
(loopwright time − tool time − bare time) / turns, at 100 and at 1,000 turns:
the figure must not grow with run length. Goal: <= 2 ms per turn.

    python -m loopwright.bench.overhead [--turns 100 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import tempfile
import time
from pathlib import Path

import anthropic

from ..harness.loopback import LoopbackServer
from ..harness.script import Script
from ..runtime.project import open_project
from ..runtime.runner import Runner

MODEL = "bench-loopback"


def _script(turns: int) -> Script:
    body = [{"text": "", "tool_calls": [{"name": "scratchpad", "arguments": {"action": "read"}}]}
            for _ in range(turns - 1)]
    return Script.parse(body + [{"text": "done", "tool_calls": [{"name": "finish", "arguments": {"summary": "ok"}}]}])


async def bare_loop(base_url: str, turns: int) -> float:
    """The baseline: the same SDK calls with the same conversation growth, and nothing else."""
    client = anthropic.AsyncAnthropic(api_key="bench-not-a-key", base_url=base_url, max_retries=0)
    messages: list[dict] = [{"role": "user", "content": "task"}]
    tools = [{"name": "scratchpad", "description": "d", "input_schema": {"type": "object", "properties": {}}},
             {"name": "finish", "description": "d", "input_schema": {"type": "object", "properties": {}}}]
    t0 = time.perf_counter()
    for _ in range(turns):
        msg = await client.messages.create(model=MODEL, max_tokens=1024, messages=messages, tools=tools)
        messages.append({"role": "assistant", "content": [b.model_dump() for b in msg.content]})
        results = [{"type": "tool_result", "tool_use_id": b.id, "content": ""} for b in msg.content
                   if b.type == "tool_use"]
        messages.append({"role": "user", "content": results})
    elapsed = time.perf_counter() - t0
    await client.close()
    return elapsed


def loopwright_loop(root: Path, base_url: str, turns: int) -> tuple[float, float]:
    """(time from the run's start event to its last event, time spent inside tools)."""
    overrides = {"provider": "anthropic", "model": MODEL, "base_url": base_url, "on_success": "keep",
                 "budget.max_turns": turns + 10, "models": {MODEL: {"input_usd_per_mtok": 0, "output_usd_per_mtok": 0,
                                                                  "context_window": 100_000_000}}}
    project = open_project(root, create=True, overrides=overrides)
    result = asyncio.run(Runner(project).start("bench task", check="true"))
    assert result.run.status == "succeeded", result.run.reason
    events = project.store.events(result.run.id)
    start = next(ts for _, ts, e in events if e.type == "run_started")
    end = max(ts for _, ts, e in events if e.type in ("tool_finished", "check_ran"))
    check = sum(e.duration_ms for _, _, e in events if e.type == "check_ran") / 1000
    tools = sum(e.duration_ms for _, _, e in events if e.type == "tool_finished") / 1000
    return end - start - check, tools


def make_repo() -> Path:
    root = Path(tempfile.mkdtemp(prefix="lw-bench-"))
    for cmd in (["init", "-q", "-b", "main"], ["config", "user.name", "bench"], ["config", "user.email", "b@x"],
                ["commit", "-q", "--allow-empty", "-m", "init"]):
        subprocess.run(["git", *cmd], cwd=root, check=True)
    return root


def measure(turns: int) -> dict:
    with LoopbackServer(_script(turns)) as server:
        bare = asyncio.run(bare_loop(server.anthropic_base_url, turns))
    with LoopbackServer(_script(turns)) as server:
        total, tools = loopwright_loop(make_repo(), server.anthropic_base_url, turns)
    overhead = (total - tools - bare) / turns * 1000
    return {"turns": turns, "bare_ms_per_turn": bare / turns * 1000, "loopwright_ms_per_turn": (total - tools) / turns * 1000,
            "tool_ms_per_turn": tools / turns * 1000, "overhead_ms_per_turn": overhead}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--turns", type=int, nargs="+", default=[100, 1000])
    args = ap.parse_args()
    rows = [measure(n) for n in args.turns]
    print(f"{'turns':>6} {'bare ms/turn':>13} {'loopwright ms/turn':>19} {'tools ms/turn':>14} {'overhead ms/turn':>17}")
    for r in rows:
        print(f"{r['turns']:>6} {r['bare_ms_per_turn']:>13.2f} {r['loopwright_ms_per_turn']:>19.2f} "
              f"{r['tool_ms_per_turn']:>14.2f} {r['overhead_ms_per_turn']:>17.2f}")
    if len(rows) >= 2:
        print(f"overhead growth {rows[0]['turns']} -> {rows[-1]['turns']} turns: "
              f"{rows[-1]['overhead_ms_per_turn'] / max(rows[0]['overhead_ms_per_turn'], 1e-6):.2f}x "
              f"(loopwright/bare time ratio at {rows[-1]['turns']}: "
              f"{rows[-1]['loopwright_ms_per_turn'] / rows[-1]['bare_ms_per_turn']:.2f}x); goal <= 2 ms per turn")


if __name__ == "__main__":
    main()
