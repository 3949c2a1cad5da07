"""Adapters, retries and the loopback server, through the real Anthropic and OpenAI SDKs (nothing mocked)."""

from __future__ import annotations

import asyncio
import socket

import pytest

from loopwright.harness.adapters import build_adapter
from loopwright.harness.loopback import LoopbackServer
from loopwright.harness.messages import Message, TextBlock, ToolCall, ToolResult, ToolSpec
from loopwright.harness.models import FatalModelError, ModelUnavailable, WireCache
from loopwright.harness.retry import RetryPolicy, call_model
from loopwright.harness.script import Script

PROVIDERS = ["anthropic", "openai", "openai-responses"]
TOOLS = [ToolSpec(name="read_file", description="read a file",
                  input_schema={"type": "object", "properties": {"path": {"type": "string"}}, "required": ["path"]})]
TOOL_TURN = {"text": "Looking.", "tool_calls": [{"name": "read_file", "arguments": {"path": "a.py"}}],
             "usage": {"input_tokens": 120, "output_tokens": 15}}
TEXT_TURN = {"text": "All done.", "usage": {"input_tokens": 200, "output_tokens": 5}, "expect": "contents of a.py"}
FAST = RetryPolicy(max_attempts=4, initial_backoff=0.01, max_backoff=5)


def _adapter(provider: str, server: LoopbackServer):
    base = server.anthropic_base_url if provider == "anthropic" else server.openai_base_url
    return build_adapter(provider, "test-model", api_key="test-not-a-key", base_url=base, timeout=10)


async def _two_turns(adapter):
    task = Message.user("read a.py")
    first = await adapter.complete(system="be brief", messages=[task], tools=TOOLS, max_tokens=100)
    call = first.message.tool_calls[0]
    results = Message(role="user", content=[ToolResult(tool_call_id=call.id, content="contents of a.py")])
    second = await adapter.complete(system="be brief", messages=[task, first.message, results], tools=TOOLS,
                                    max_tokens=100)
    await adapter.aclose()
    return first, second


@pytest.mark.parametrize("provider", PROVIDERS)
def test_tool_turn_then_text_turn(provider):
    with LoopbackServer(Script.parse([TOOL_TURN, TEXT_TURN])) as server:
        first, second = asyncio.run(_two_turns(_adapter(provider, server)))
        requests = server.requests
    call = first.message.tool_calls[0]
    assert (call.name, call.arguments, call.id, call.parse_error) == ("read_file", {"path": "a.py"}, "call_0_0", None)
    assert first.message.text == "Looking." and first.stop_reason == "tool_use"
    assert (first.usage.input_tokens, first.usage.output_tokens) == (120, 15)
    assert second.message.text == "All done." and second.stop_reason == "end_turn"
    body = requests[1]["body"]
    if provider == "anthropic":
        assert body["system"] == "be brief" and body["tools"][0]["input_schema"]["required"] == ["path"]
        assert body["messages"][1]["content"][-1] == {"type": "tool_use", "id": "call_0_0", "name": "read_file",
                                                      "input": {"path": "a.py"}}
        assert body["messages"][2]["content"][0]["type"] == "tool_result"
    elif provider == "openai":
        assert body["messages"][0] == {"role": "system", "content": "be brief"}
        assert body["messages"][2]["tool_calls"][0]["function"]["name"] == "read_file"
        assert body["messages"][3] == {"role": "tool", "tool_call_id": "call_0_0", "content": "contents of a.py"}
    else:
        assert body["instructions"] == "be brief" and body["store"] is False
        kinds = [i["type"] for i in body["input"]]
        assert kinds == ["message", "message", "function_call", "function_call_output"]


@pytest.mark.parametrize("provider", ["openai", "openai-responses"])
def test_malformed_tool_json_becomes_a_parse_error(provider):
    with LoopbackServer(Script.parse([{"fault": "malformed_tool_json"}, TOOL_TURN])) as server:
        adapter = _adapter(provider, server)
        resp = asyncio.run(adapter.complete(system="s", messages=[Message.user("go")], tools=TOOLS, max_tokens=50))
    call = resp.message.tool_calls[0]
    assert call.arguments == {} and call.parse_error and "a.py" not in str(call.arguments)


def _call(provider: str, entries: list, policy: RetryPolicy = FAST):
    waits: list[float] = []
    retries: list[str] = []

    async def fake_sleep(seconds: float) -> None:
        waits.append(seconds)

    async def go():
        with LoopbackServer(Script.parse(entries)) as server:
            adapter = _adapter(provider, server)
            try:
                return await call_model(adapter, policy, on_retry=lambda a, w, r: retries.append(r), sleep=fake_sleep,
                                        system="s", messages=[Message.user("go")], tools=TOOLS, max_tokens=50), server
            finally:
                await adapter.aclose()

    resp, server = asyncio.run(go())
    return resp, waits, retries, server


def test_retry_after_is_honoured():
    resp, waits, retries, _ = _call("anthropic", [{"fault": "429", "retry_after": 3}, TOOL_TURN])
    assert waits == [3.0] and retries == ["429 rate limited"]
    assert resp.message.tool_calls[0].name == "read_file"


@pytest.mark.parametrize("provider", PROVIDERS)
def test_every_transient_fault_is_retried(provider):
    entries = [{"fault": "500"}, {"fault": "529"}, {"fault": "reset"}, {"fault": "truncated"},
               {"fault": "slow", "delay": 0.05}, TOOL_TURN]
    policy = RetryPolicy(max_attempts=6, initial_backoff=0.01, max_backoff=1)
    resp, waits, retries, server = _call(provider, entries, policy)
    assert resp.message.tool_calls[0].arguments == {"path": "a.py"}
    assert len(retries) == 4 and retries[0] == "500 server error" and server.remaining == 0
    assert all(w <= 1.0 for w in waits)


def test_anthropic_malformed_body_is_retried_as_unreadable():
    resp, _, retries, _ = _call("anthropic", [{"fault": "malformed_tool_json"}, TOOL_TURN])
    assert retries == ["unreadable response"] and resp.message.tool_calls[0].arguments == {"path": "a.py"}


def test_retry_ceiling_raises_model_unavailable():
    with pytest.raises(ModelUnavailable, match=r"429 rate limited 3 time\(s\)"):
        _call("openai", [{"fault": "429", "retry_after": 0.01}] * 3 + [TOOL_TURN], RetryPolicy(max_attempts=3))


def test_total_wait_ceiling():
    with pytest.raises(ModelUnavailable):
        _call("openai", [{"fault": "429", "retry_after": 50}] * 3 + [TOOL_TURN],
              RetryPolicy(max_attempts=10, max_total_wait_seconds=60, max_backoff=100))


@pytest.mark.parametrize("provider", PROVIDERS)
def test_auth_error_is_fatal_and_not_retried(provider):
    with pytest.raises(FatalModelError, match="refused the API key"):
        _call(provider, [{"fault": "401"}, TOOL_TURN])


def test_exhausted_script_and_failed_expectation_are_fatal():
    with pytest.raises(FatalModelError, match="script exhausted"):
        _call("anthropic", [])
    with pytest.raises(FatalModelError, match="expects 'contents of a.py'"):
        _call("openai", [TEXT_TURN])


def test_unreachable_server_pauses_rather_than_crashes():
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # nothing listens here now
    adapter = build_adapter("anthropic", "m", api_key="k", base_url=f"http://127.0.0.1:{port}", timeout=2)

    async def nosleep(_):
        return None

    with pytest.raises(ModelUnavailable, match="connection error"):
        asyncio.run(call_model(adapter, RetryPolicy(max_attempts=2), sleep=nosleep, system="s",
                               messages=[Message.user("x")], tools=[], max_tokens=10))


def test_unknown_provider():
    with pytest.raises(ValueError, match="allowed: anthropic, openai, openai-responses"):
        build_adapter("gemini", "m", api_key="k", base_url=None)


def test_wire_cache_converts_each_message_once():
    converted: list[str] = []
    cache = WireCache(lambda m: converted.append(m.text) or m.text)
    conv = [Message.user("a"), Message(role="assistant", content=[TextBlock(text="b")])]
    assert cache.wire(conv) == ["a", "b"]
    conv.append(Message.user("c"))
    assert cache.wire(conv) == ["a", "b", "c"]
    assert converted == ["a", "b", "c"]
    fresh = [Message.user("z")]  # after a compaction the conversation starts over
    assert cache.wire(fresh) == ["z"]


def test_tool_call_ids_are_stable_per_turn():
    script = Script.parse([TOOL_TURN, TOOL_TURN])
    with LoopbackServer(script) as server:
        adapter = _adapter("openai", server)

        async def go():
            a = await adapter.complete(system="s", messages=[Message.user("x")], tools=TOOLS, max_tokens=5)
            b = await adapter.complete(system="s", messages=[Message.user("x")], tools=TOOLS, max_tokens=5)
            await adapter.aclose()
            return a, b

        a, b = asyncio.run(go())
    assert isinstance(a.message.content[-1], ToolCall)
    assert (a.message.tool_calls[0].id, b.message.tool_calls[0].id) == ("call_0_0", "call_1_0")


def test_loopback_command_serves_a_script_to_any_client(tmp_path):
    import json
    import subprocess
    import sys

    import openai

    (tmp_path / "s.json").write_text(json.dumps({"turns": [TOOL_TURN]}))
    proc = subprocess.Popen([sys.executable, "-m", "loopwright.runtime.cli", "loopback", "--script",
                             str(tmp_path / "s.json")], stdout=subprocess.PIPE, text=True)
    try:
        banner = [proc.stdout.readline() for _ in range(3)]
        assert "not a model" in banner[0]
        base = banner[2].split()[-1]
        client = openai.OpenAI(api_key="test-not-a-key", base_url=base, max_retries=0)
        resp = client.chat.completions.create(model="any", messages=[{"role": "user", "content": "hi"}])
        assert resp.choices[0].message.tool_calls[0].function.name == "read_file"
    finally:
        proc.terminate()
        proc.wait(10)
