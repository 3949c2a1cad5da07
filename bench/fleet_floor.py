"""The fleet's floor: N bare Anthropic SDK loops in one event loop against the fleet's loopback, nothing else.

What this machine and the SDK allow before loopwright does anything: no store, tools, worktrees, git, jails or
merges. Each agent calls the model the way loopwright's adapter does (its own `AsyncAnthropic` over the SDK's
aiohttp transport with the adapter's one TLS context, the client's `post` with a JSON body, the answer streamed and
read to its end), sends back a short
result for each tool call, and stops after the script's turns. Run by bench/fleet.py as its own process (so the
bench's polling does not share its GIL); prints one JSON line: wall (first request -> last answer), e2e ratio
(ideal / wall), the mean model call, and this process's CPU per turn.

    python -m loopwright.bench.fleet_floor --base-url URL --agents N [--turns 10] [--latency 1]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import statistics
import time

import anthropic
import httpx2

from loopwright.bench.fleet_rig import API_KEY, MODEL
from loopwright.harness.adapters import SSEParser, tls_context
from loopwright.harness.tools import Toolbox

SYSTEM = "You are a coding agent working in a git worktree. " * 60  # about the size of loopwright's own prompt


async def _agent(base_url: str, number: int, turns: int, calls: list[tuple[float, float]]) -> None:
    client = anthropic.AsyncAnthropic(api_key=API_KEY, base_url=base_url, max_retries=0,
                                      http_client=anthropic.DefaultAioHttpClient(verify=tls_context()))
    tools = [spec.model_dump() for spec in Toolbox().specs()]
    messages: list[dict] = [{"role": "user", "content": f"# Task {number}: the fleet floor"}]
    try:
        for _ in range(turns):
            body = {"model": MODEL, "max_tokens": 4096, "system": SYSTEM, "tools": tools, "messages": messages,
                    "stream": True}
            started = time.time()
            response = await client.post("/v1/messages", content=json.dumps(body).encode(), cast_to=httpx2.Response,
                                         stream=True)
            sse, blocks = SSEParser(), []
            try:
                async for chunk in response.aiter_bytes():
                    for name, data in sse.feed(chunk):
                        event = json.loads(data)
                        if name == "content_block_start":
                            blocks.append(event["content_block"])
                        elif name == "content_block_delta" and event["delta"].get("type") == "text_delta":
                            blocks[-1]["text"] = blocks[-1].get("text", "") + event["delta"]["text"]
            finally:
                await response.aclose()
            calls.append((started, time.time()))
            for block in blocks:
                if block["type"] == "tool_use":
                    block["input"] = {}
            messages.append({"role": "assistant", "content": blocks})
            results = [{"type": "tool_result", "tool_use_id": b["id"], "content": "ok"} for b in blocks
                       if b["type"] == "tool_use"]
            messages.append({"role": "user", "content": results or "Go on."})
    finally:
        await client.close()


async def floor(base_url: str, agents: int, turns: int, latency: float) -> dict:
    """Run the agents; the figures bench/fleet.py prints beside loopwright's."""
    calls: list[tuple[float, float]] = []
    before = resource.getrusage(resource.RUSAGE_SELF)
    await asyncio.gather(*(_agent(base_url, i + 1, turns, calls) for i in range(agents)))
    after = resource.getrusage(resource.RUSAGE_SELF)
    wall = max(end for _, end in calls) - min(start for start, _ in calls)
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    return {"agents": agents, "calls": len(calls), "wall": wall, "ratio": turns * latency / wall,
            "call_mean": statistics.mean(end - start for start, end in calls), "cpu_ms": 1000 * cpu / len(calls)}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base-url", required=True)
    ap.add_argument("--agents", type=int, required=True)
    ap.add_argument("--turns", type=int, default=10)
    ap.add_argument("--latency", type=float, default=1.0, help="the loopback's latency (for the ideal)")
    args = ap.parse_args(argv)
    print(json.dumps(asyncio.run(floor(args.base_url, args.agents, args.turns, args.latency))))


if __name__ == "__main__":
    main()
