"""What prompt caching saves: a 60-turn run's billed input cost with caching against without, per provider.

A scripted run through the real adapters and SDKs against the loopback server, which bills every request the way
the provider does (harness/prompt_cache.py): a system prompt and tools of about 15,000 tokens, and each turn
adds about 2 KB (a tool call and its 2,000-character result). Printed for Anthropic (Sonnet prices, 5-minute
breakpoints) and OpenAI Chat (GPT-5.1 prices, automatic caching with the run's prompt_cache_key): the input cost
with caching over the cost of the same input tokens uncached (goal <= 0.25) and the cache hit share, cache-read
tokens over all input tokens (goal >= 0.85).

Then streaming's added CPU per turn (goal <= 1 ms): the same conversation replayed against the loopback server in
its own process (so this process's CPU time is the client's alone), each turn twice, interleaved: once through the
adapter as a run calls it (streamed: server-sent events parsed and assembled), once with the same request body
sent with "stream": false through the same SDK client's `post` and its whole JSON answer parsed. Added = streamed
minus not streamed, median over the turns (the mean beside it).

    python -m loopwright.bench.cost [--turns 60] [--prefix-tokens 15000] [--turn-bytes 2000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from pathlib import Path

import httpx2

from loopwright.bench.fleet_rig import Loopback
from loopwright.harness.adapters import build_adapter
from loopwright.harness.caching import CacheConfig
from loopwright.harness.loopback import LoopbackServer
from loopwright.harness.messages import Message, ToolResult, ToolSpec, Usage
from loopwright.harness.models import ModelInfo, cost_usd
from loopwright.harness.script import Script
from loopwright.runtime.config import DEFAULT_MODELS

RUNS = {"anthropic": "claude-sonnet-4-6", "openai": "gpt-5.1"}


def _prefix(tokens: int) -> tuple[str, list[ToolSpec]]:
    """A system prompt and ten tools of about `tokens` tokens together (a quarter in the tools)."""
    line = "Inspect before you change things; make focused changes; run the tests yourself. "
    system = (line * (tokens * 3 // len(line) + 1))[:tokens * 3]
    tools = [ToolSpec(name=f"tool_{i}", description=(f"tool {i}: " + line * 40)[:tokens * 4 // 40],
                      input_schema={"type": "object", "properties": {"arg": {"type": "string"}}}) for i in range(10)]
    return system, tools


def _turn_text(i: int, size: int) -> str:
    return (f"output of step {i}: " + "".join(f"line {i}.{j} of the command's output\n" for j in range(size)))[:size]


async def _run(provider: str, base_url: str, turns: int, prefix_tokens: int, turn_bytes: int) -> Usage:
    system, tools = _prefix(prefix_tokens)
    adapter = build_adapter(provider, RUNS[provider], api_key="bench-not-a-key", base_url=base_url,
                            cache=CacheConfig())
    adapter.cache_key = "bench-run"
    messages = [Message.user("Fix the failing test in calc.py.")]
    total = Usage()
    try:
        for i in range(turns):
            resp = await adapter.complete(system=system, messages=messages, tools=tools, max_tokens=1000)
            u = resp.usage
            total = Usage(input_tokens=total.input_tokens + u.input_tokens,
                          output_tokens=total.output_tokens + u.output_tokens,
                          cache_read_tokens=total.cache_read_tokens + u.cache_read_tokens,
                          cache_write_tokens=total.cache_write_tokens + u.cache_write_tokens,
                          cache_write_1h_tokens=total.cache_write_1h_tokens + u.cache_write_1h_tokens)
            call = resp.message.tool_calls[0]
            messages += [resp.message, Message(role="user", content=[
                ToolResult(tool_call_id=call.id, content=_turn_text(i, turn_bytes))])]
    finally:
        await adapter.aclose()
    return total


def measure(provider: str, turns: int = 60, prefix_tokens: int = 15_000, turn_bytes: int = 2000) -> dict:
    """One run's input accounting: cost with caching, without, their ratio and the cache hit share."""
    with LoopbackServer(_script(turns), keep_bodies=False) as server:
        base = server.anthropic_base_url if provider == "anthropic" else server.openai_base_url
        usage = asyncio.run(_run(provider, base, turns, prefix_tokens, turn_bytes))
    info: ModelInfo = DEFAULT_MODELS[RUNS[provider]]
    all_input = usage.input_tokens + usage.cache_read_tokens + usage.cache_write_tokens
    cached = cost_usd(usage.model_copy(update={"output_tokens": 0}), info)
    uncached = all_input * info.input_usd_per_mtok / 1e6
    return {"provider": provider, "model": RUNS[provider], "turns": turns, "input_tokens": all_input,
            "cache_read_tokens": usage.cache_read_tokens, "cache_write_tokens": usage.cache_write_tokens,
            "input_usd_cached": cached, "input_usd_uncached": uncached, "cost_ratio": cached / uncached,
            "hit_share": usage.cache_read_tokens / all_input}


def _script(turns: int) -> Script:
    return Script.parse([{"text": f"step {i}", "tool_calls": [{"name": "tool_0", "arguments": {"arg": str(i)}}]}
                         for i in range(turns)])


async def _cpu_per_turn(provider: str, base_url: str, turns: int, prefix_tokens: int,
                        turn_bytes: int) -> tuple[list[float], list[float]]:
    """CPU seconds of each turn's call, streamed (the adapter's own path) and not streamed (the same body)."""
    system, tools = _prefix(prefix_tokens)
    adapter = build_adapter(provider, RUNS[provider], api_key="bench-not-a-key", base_url=base_url,
                            cache=CacheConfig())
    adapter.cache_key = "bench-run"
    bodies: list[dict] = []

    async def keep_body(body: dict) -> list:  # the adapter's request body, to send whole below
        bodies.append(body)
        return []

    whole = build_adapter(provider, RUNS[provider], api_key="bench-not-a-key", base_url=base_url, cache=CacheConfig())
    whole.cache_key = "bench-run"
    whole._stream = keep_body  # type: ignore[method-assign]  # builds bodies only; sent by `unstreamed`
    path = "/v1/messages" if provider == "anthropic" else "/chat/completions"

    async def unstreamed() -> dict:
        await whole.complete(system=system, messages=messages, tools=tools, max_tokens=1000)
        body = {k: v for k, v in bodies.pop().items() if k != "stream_options"} | {"stream": False}
        content = json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()
        response = await whole.client.post(path, content=content, cast_to=httpx2.Response)
        return response.json()

    messages = [Message.user("Fix the failing test in calc.py.")]
    streamed, not_streamed = [], []
    try:
        for i in range(turns):
            t0 = time.process_time()
            resp = await adapter.complete(system=system, messages=messages, tools=tools, max_tokens=1000)
            t1 = time.process_time()
            await unstreamed()
            t2 = time.process_time()
            streamed.append(t1 - t0)
            not_streamed.append(t2 - t1)
            call = resp.message.tool_calls[0]
            messages += [resp.message, Message(role="user", content=[
                ToolResult(tool_call_id=call.id, content=_turn_text(i, turn_bytes))])]
    finally:
        await adapter.aclose()
        await whole.aclose()
    return streamed, not_streamed


def streaming_cpu(provider: str, turns: int = 60, prefix_tokens: int = 15_000, turn_bytes: int = 2000) -> dict:
    """Streaming's added CPU per turn against the same calls not streamed, in ms (see the module's docstring)."""
    with tempfile.TemporaryDirectory(prefix="lw-bench-cost-") as tmp:
        script = Path(tmp) / "script.json"
        script.write_text(_script(turns).model_dump_json())
        server = Loopback(Path(tmp), 0.0, script=script)
        try:
            base = server.base_url if provider == "anthropic" else server.openai_base_url
            streamed, not_streamed = asyncio.run(_cpu_per_turn(provider, base, turns, prefix_tokens, turn_bytes))
        finally:
            server.stop()
    added = [s - n for s, n in zip(streamed, not_streamed, strict=True)]
    return {"provider": provider, "turns": turns, "streamed_ms": 1000 * statistics.median(streamed),
            "not_streamed_ms": 1000 * statistics.median(not_streamed), "added_ms": 1000 * statistics.median(added),
            "added_mean_ms": 1000 * statistics.mean(added)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--turns", type=int, default=60)
    ap.add_argument("--prefix-tokens", type=int, default=15_000)
    ap.add_argument("--turn-bytes", type=int, default=2000)
    args = ap.parse_args()
    for provider in RUNS:
        r = measure(provider, args.turns, args.prefix_tokens, args.turn_bytes)
        print(f"{r['provider']:<10} {r['model']:<18} {r['turns']} turns, {r['input_tokens']:,} input tokens: "
              f"${r['input_usd_cached']:.4f} cached vs ${r['input_usd_uncached']:.4f} uncached = "
              f"{r['cost_ratio']:.3f}x (goal <= 0.25); cache hit share {r['hit_share']:.3f} (goal >= 0.85)")
    for provider in RUNS:
        r = streaming_cpu(provider, args.turns, args.prefix_tokens, args.turn_bytes)
        print(f"{r['provider']:<10} streaming's added CPU per turn: {r['added_ms']:.2f} ms (goal <= 1 ms; mean "
              f"{r['added_mean_ms']:.2f}); per call {r['streamed_ms']:.2f} ms streamed, {r['not_streamed_ms']:.2f} ms "
              f"not (medians over {r['turns']} turns)")


if __name__ == "__main__":
    main()
