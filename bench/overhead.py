"""Runtime overhead per turn, against a bare SDK loop, measured in one run.

Both loops call the Anthropic SDK against the same loopback server with the
same growing conversation. The loopwright loop does everything a real turn
does (events, counters, budget check, context estimate, tool dispatch through
the Toolbox, command polling). Reported per turn, at 100 and at 1,000 turns:
loopwright's own work outside model calls and tools (from the run's events),
and the whole difference against the bare loop. Neither may grow with run
length. Goal: <= 2 ms per turn. The SDK's own cost per call grows with the
conversation in both loops alike.

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

from loopwright.harness.loopback import LoopbackServer
from loopwright.harness.script import Script
from loopwright.runtime.project import open_project
from loopwright.runtime.runner import Runner

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


def loopwright_loop(root: Path, base_url: str, turns: int) -> tuple[float, float, float]:
    """(time from the run's start event to its last event, time inside model calls, time inside tools)."""
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
    model = sum(e.duration_ms for _, _, e in events if e.type == "model_called") / 1000
    tools = sum(e.duration_ms for _, _, e in events if e.type == "tool_finished") / 1000
    return end - start - check, model, tools


def make_repo() -> Path:
    root = Path(tempfile.mkdtemp(prefix="lw-bench-"))
    for cmd in (["init", "-q", "-b", "main"], ["config", "user.name", "bench"], ["config", "user.email", "b@x"],
                ["commit", "-q", "--allow-empty", "-m", "init"]):
        subprocess.run(["git", *cmd], cwd=root, check=True)
    return root


def measure(turns: int) -> dict:
    with LoopbackServer(_script(turns), accounting=False) as server:
        bare = asyncio.run(bare_loop(server.anthropic_base_url, turns))
    with LoopbackServer(_script(turns), accounting=False) as server:
        total, model, tools = loopwright_loop(make_repo(), server.anthropic_base_url, turns)
    per = 1000 / turns
    return {"turns": turns, "bare": bare * per, "model": model * per, "tools": tools * per,
            "runtime": (total - model - tools) * per, "vs_bare": (total - tools - bare) * per,
            "ratio": (total - tools) / bare}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--turns", type=int, nargs="+", default=[100, 1000])
    args = ap.parse_args()
    rows = [measure(n) for n in args.turns]
    print("ms per turn; 'runtime' = loopwright's own work outside model calls and tools (events, store, budget,")
    print("context, tool dispatch); 'vs bare' = (loopwright run - tools - bare SDK loop) / turns, adapters included")
    print(f"{'turns':>6} {'bare SDK':>9} {'lw model call':>14} {'tools':>6} {'runtime':>8} "
          f"{'vs bare':>8} {'lw/bare':>8}")
    for r in rows:
        print(f"{r['turns']:>6} {r['bare']:>9.2f} {r['model']:>14.2f} {r['tools']:>6.2f} {r['runtime']:>8.2f} "
              f"{r['vs_bare']:>8.2f} {r['ratio']:>7.2f}x")
    if len(rows) >= 2:
        print(f"runtime overhead at {rows[-1]['turns']} vs {rows[0]['turns']} turns: "
              f"{rows[-1]['runtime'] / rows[0]['runtime']:.2f}x (flat = does not grow); goal <= 2 ms per turn")


if __name__ == "__main__":
    main()
