"""Adapters, retries and the loopback server, through the real Anthropic and OpenAI SDKs (nothing mocked)."""

from __future__ import annotations

import asyncio
import email.utils
import json
import re
import socket
from datetime import UTC, datetime, timedelta

import anthropic
import httpx2
import openai
import pytest

from loopwright.harness import models
from loopwright.harness.adapters import (
    AnthropicAdapter,
    OpenAIChatAdapter,
    OpenAIResponsesAdapter,
    build_adapter,
    parse_arguments,
)
from loopwright.harness.caching import CacheConfig, anthropic_breakpoints
from loopwright.harness.loopback import LoopbackServer
from loopwright.harness.messages import Message, TextBlock, ToolCall, ToolResult, ToolSpec
from loopwright.harness.models import (
    ContextOverflow,
    FatalModelError,
    ModelAdapter,
    ModelUnavailable,
    NeedsAttention,
    WireCache,
    cache_saved_usd,
    cost_usd,
)
from loopwright.harness.retry import RetryPolicy, call_model, retry_after
from loopwright.harness.script import Script
from loopwright.runtime.config import DEFAULT_MODELS

PROVIDERS = ["anthropic", "openai", "openai-responses"]
TOOLS = [ToolSpec(name="read_file", description="read a file",
                  input_schema={"type": "object", "properties": {"path": {"type": "string"}}, "required": ["path"]})]
TOOL_TURN = {"text": "Looking.", "tool_calls": [{"name": "read_file", "arguments": {"path": "a.py"}}],
             "usage": {"input_tokens": 120, "output_tokens": 15, "cache_read_tokens": 30, "cache_write_tokens": 10}}
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
    u = first.usage  # OpenAI reports cached reads inside prompt_tokens and has no cache writes
    assert (u.input_tokens, u.output_tokens, u.cache_read_tokens) == (120, 15, 30)
    assert u.cache_write_tokens == (10 if provider == "anthropic" else 0)
    assert second.message.text == "All done." and second.stop_reason == "end_turn"
    body = requests[1]["body"]
    if provider == "anthropic":
        mark = {"type": "ephemeral"}  # the cache breakpoints: tools, system, the previous and the last message
        assert body["system"] == [{"type": "text", "text": "be brief", "cache_control": mark}]
        assert body["tools"][0]["input_schema"]["required"] == ["path"] and body["tools"][0]["cache_control"] == mark
        assert body["messages"][0]["content"] == [{"type": "text", "text": "read a.py", "cache_control": mark}]
        assert body["messages"][1]["content"][-1] == {"type": "tool_use", "id": "call_0_0", "name": "read_file",
                                                      "input": {"path": "a.py"}}
        assert body["messages"][2]["content"] == [{"type": "tool_result", "tool_use_id": "call_0_0",
                                                   "content": "contents of a.py", "is_error": False,
                                                   "cache_control": mark}]
    elif provider == "openai":
        assert body["messages"][0] == {"role": "system", "content": "be brief"} and body["max_tokens"] == 100
        assert body["messages"][2]["tool_calls"][0] == {"id": "call_0_0", "type": "function", "function": {
            "name": "read_file", "arguments": '{"path": "a.py"}'}}
        assert body["messages"][3] == {"role": "tool", "tool_call_id": "call_0_0", "content": "contents of a.py"}
        assert body["tools"][0]["function"]["parameters"]["required"] == ["path"]
    else:
        assert body["instructions"] == "be brief" and body["store"] is False and body["max_output_tokens"] == 100
        assert [i["type"] for i in body["input"]] == ["message", "message", "function_call", "function_call_output"]
        assert body["input"][2] == {"type": "function_call", "call_id": "call_0_0", "name": "read_file",
                                    "arguments": '{"path": "a.py"}'}
        assert body["input"][3] == {"type": "function_call_output", "call_id": "call_0_0", "output": "contents of a.py"}
        assert body["tools"][0]["type"] == "function" and body["tools"][0]["name"] == "read_file"


def test_wire_shapes_for_several_results_and_empty_messages():
    results = Message(role="user", content=[ToolResult(tool_call_id="c1", content="one"),
                                            TextBlock(text="note: hurry"),
                                            ToolResult(tool_call_id="c2", content="boom", is_error=True)])
    empty = Message(role="assistant", content=[TextBlock(text="")])
    calls_only = Message(role="assistant", content=[TextBlock(text=""), ToolCall(id="c1", name="f", arguments={})])
    chat = OpenAIChatAdapter._to_wire
    assert chat(results) == [{"role": "tool", "tool_call_id": "c1", "content": "one"},
                             {"role": "tool", "tool_call_id": "c2", "content": "ERROR: boom"},
                             {"role": "user", "content": "note: hurry"}]
    assert chat(empty) == [{"role": "assistant", "content": "(no content)"}]
    assert chat(calls_only)[0]["content"] is None and chat(calls_only)[0]["tool_calls"][0]["id"] == "c1"
    anth = AnthropicAdapter._to_wire
    assert [b["type"] for b in anth(results)["content"]] == ["tool_result", "tool_result", "text"]
    assert anth(results)["content"][1]["is_error"] is True
    assert anth(empty)["content"] == [{"type": "text", "text": "(no content)"}]
    assert anth(calls_only)["content"] == [{"type": "tool_use", "id": "c1", "name": "f", "input": {}}]
    resp = OpenAIResponsesAdapter._to_wire
    assert [i["type"] for i in resp(results)] == ["function_call_output", "message", "function_call_output"]
    assert resp(empty) == [{"type": "message", "role": "assistant", "content": "(no content)"}]
    assert [i["type"] for i in resp(calls_only)] == ["function_call"]


@pytest.mark.parametrize("raw, error", [('{"path": ', "Expecting value"), ("[1, 2]", "expected a JSON object"),
                                        ('"a.py"', "expected a JSON object")])
def test_argument_parse_errors_are_short_and_never_raise(raw, error):
    args, why = parse_arguments(raw)
    assert args == {} and error in why and "\n" not in why


@pytest.mark.parametrize("provider", PROVIDERS)
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
    assert retries == ["500 server error", "529 overloaded", "connection reset", "truncated response"]
    assert server.remaining == 0
    assert all(w <= 1.0 for w in waits)


def test_retry_ceiling_raises_model_unavailable():
    waits: list[float] = []
    retries: list[tuple] = []

    async def go():
        with LoopbackServer(Script.parse([{"fault": "429", "retry_after": 0.01}] * 3 + [TOOL_TURN])) as server:
            adapter = _adapter("openai", server)
            try:
                await call_model(adapter, RetryPolicy(max_attempts=3), on_retry=lambda *a: retries.append(a),
                                 sleep=lambda s: asyncio.sleep(0, waits.append(s)), system="s",
                                 messages=[Message.user("go")], tools=TOOLS, max_tokens=50)
            finally:
                await adapter.aclose()
            return server.remaining

    with pytest.raises(ModelUnavailable, match=r"^rate limited \(429\) 3 times in \d+s; last: loopback: rate limited"):
        asyncio.run(go())
    # no retry event and no sleep after the last attempt
    assert retries == [(1, 0.01, "429 rate limited"), (2, 0.01, "429 rate limited")] and waits == [0.01, 0.01]


def test_total_wait_ceiling():
    with pytest.raises(ModelUnavailable, match="next wait would pass the 60s retry limit") as info:
        _call("openai", [{"fault": "429", "retry_after": 50}] * 3 + [TOOL_TURN],
              RetryPolicy(max_attempts=10, max_total_wait_seconds=60, max_backoff=100))
    assert "rate limited (429) 2 times" in str(info.value)


def test_retry_after_is_capped_and_backoff_grows():
    _, waits, _, _ = _call("anthropic", [{"fault": "429", "retry_after": 30}, TOOL_TURN],
                           RetryPolicy(max_backoff=2))
    assert waits == [2.0]
    policy = RetryPolicy(max_attempts=4, initial_backoff=0.1, max_backoff=0.3, jitter=0.05)
    _, waits, retries, _ = _call("openai-responses", [{"fault": "500"}] * 3 + [TOOL_TURN], policy)
    assert retries == ["500 server error"] * 3
    assert 0.1 <= waits[0] <= 0.15 and 0.2 <= waits[1] <= 0.25 and waits[2] == 0.3


def test_timeout_is_retried():
    entries = [{"fault": "slow", "delay": 0.6}, TOOL_TURN]  # the server sees the hang-up and keeps the turn

    async def go():
        with LoopbackServer(Script.parse(entries)) as server:
            adapter = build_adapter("openai", "m", api_key="test-not-a-key", base_url=server.openai_base_url,
                                    timeout=0.3)
            reasons: list[str] = []
            try:
                resp = await call_model(adapter, FAST, on_retry=lambda a, w, r: reasons.append(r),
                                        sleep=lambda s: asyncio.sleep(0), system="s",
                                        messages=[Message.user("go")], tools=TOOLS, max_tokens=50)
            finally:
                await adapter.aclose()
            return resp, reasons, server.remaining, len(server.requests)

    resp, reasons, remaining, requests = asyncio.run(go())
    assert reasons == ["timeout"] and resp.message.tool_calls[0].name == "read_file"
    assert (remaining, requests) == (0, 2)


def _refused(provider: str, entries: list) -> tuple[BaseException, int]:
    """The error `call_model` ends in, and how many requests the server saw."""
    async def go():
        with LoopbackServer(Script.parse(entries)) as server:
            adapter = _adapter(provider, server)
            try:
                await call_model(adapter, FAST, sleep=lambda s: asyncio.sleep(0), system="s",
                                 messages=[Message.user("go")], tools=TOOLS, max_tokens=50)
            except Exception as e:
                return e, len(server.requests)
            finally:
                await adapter.aclose()
        raise AssertionError("the call went through")

    return asyncio.run(go())


@pytest.mark.parametrize("provider", PROVIDERS)
def test_a_refused_key_or_billing_needs_a_person_at_once_and_an_overflow_is_named(provider):
    """A 401 and a billing error (OpenAI's insufficient_quota 429, Anthropic's "credit balance is too low" 400) are
    not retried and say what to do; a context overflow is its own error, for the loop to compact."""
    err, requests = _refused(provider, [{"fault": "401"}, TOOL_TURN])
    assert isinstance(err, NeedsAttention) and requests == 1
    assert re.fullmatch(r"the API key was refused \(401\): loopback: .*; fix the key, then resume", str(err))
    err, requests = _refused(provider, [{"fault": "billing"}, TOOL_TURN])
    assert isinstance(err, NeedsAttention) and not isinstance(err, ContextOverflow) and requests == 1
    code = "400" if provider == "anthropic" else "429"
    assert str(err).startswith(f"billing: the provider refused for lack of credit or quota ({code}): loopback: ")
    assert str(err).endswith("; add credit, then resume") and "rate limited" not in str(err)
    err, requests = _refused(provider, [{"fault": "context_overflow"}, TOOL_TURN])
    assert isinstance(err, ContextOverflow) and requests == 1 and str(err).startswith("context overflow (400): ")


@pytest.mark.parametrize("provider", PROVIDERS)
def test_an_empty_answer_is_retried_once_then_the_model_is_unavailable(provider):
    resp, _, retries, server = _call(provider, [{"fault": "empty"}, TOOL_TURN])
    assert retries == ["empty response"] and resp.message.tool_calls[0].name == "read_file"
    err, requests = _refused(provider, [{"fault": "empty"}, {"fault": "empty"}, TOOL_TURN])
    assert isinstance(err, ModelUnavailable) and requests == 2
    assert re.fullmatch(r"empty response 2 times in \d+s; last: the model answered with no text and no tool calls "
                        r"\(stop reason \w+\)", str(err)), str(err)


@pytest.mark.parametrize("provider", PROVIDERS)
def test_a_429_with_only_a_reset_header_is_waited_out(provider):
    """No retry-after and no `remaining` header: the reset time of the limit is what the server asks for."""
    _, waits, retries, _ = _call(provider, [{"fault": "429", "reset_after": 3}, TOOL_TURN])
    assert retries == ["429 rate limited"] and len(waits) == 1 and 2 <= waits[0] <= 3, waits


@pytest.mark.parametrize("provider", PROVIDERS)
def test_exhausted_script_and_failed_expectation_are_fatal(provider):
    with pytest.raises(FatalModelError, match="rejected the request \\(400\\): loopback script exhausted"):
        _call(provider, [])
    with pytest.raises(FatalModelError, match="expects 'contents of a.py'"):
        _call(provider, [TEXT_TURN])


def test_unknown_model_path_is_fatal_and_names_the_model():
    async def go():
        with LoopbackServer(Script.parse([TOOL_TURN])) as server:
            adapter = build_adapter("openai", "gpt-nope", api_key="k", base_url=server.base_url + "/wrong", timeout=5)
            try:
                await call_model(adapter, FAST, sleep=lambda s: asyncio.sleep(0), system="s",
                                 messages=[Message.user("x")], tools=[], max_tokens=5)
            finally:
                await adapter.aclose()

    with pytest.raises(FatalModelError, match="model 'gpt-nope' was not found by the provider \\(404"):
        asyncio.run(go())


class _Failing(ModelAdapter):
    """A non-SDK adapter whose errors are not the retry layer's business."""

    model = "failing"

    def __init__(self, error: BaseException):
        self.error, self.calls = error, 0

    async def complete(self, **_):
        self.calls += 1
        raise self.error


@pytest.mark.parametrize("error", [RuntimeError("budget spent"), asyncio.CancelledError(), KeyError("x")])
def test_other_exceptions_pass_through_untouched(error):
    adapter = _Failing(error)
    with pytest.raises(type(error)) as info:
        asyncio.run(call_model(adapter, FAST, system="s", messages=[], tools=[], max_tokens=1))
    assert info.value is error and adapter.calls == 1


def _status_error(cls: type, code: int, headers: dict | None = None) -> Exception:
    """A real SDK status error, as the SDK builds it from a response."""
    request = httpx2.Request("POST", "http://127.0.0.1/v1/messages")
    response = httpx2.Response(code, headers=headers or {}, request=request)
    return cls("boom", response=response, body={"error": {"type": "x", "message": f"scripted {code}"}})


@pytest.mark.parametrize("cls, code, match", [
    (anthropic.PermissionDeniedError, 403, r"^the provider refused the API key for this request \(403"),
    (openai.BadRequestError, 400, r"^the provider rejected the request \(400\): scripted 400$"),
    (openai.UnprocessableEntityError, 422, r"^the provider rejected the request \(422\)"),
    (anthropic.NotFoundError, 404, r"^model 'failing' was not found by the provider \(404"),
])
def test_client_errors_are_fatal_at_once(cls, code, match):
    adapter = _Failing(_status_error(cls, code))
    with pytest.raises(FatalModelError, match=match) as info:
        asyncio.run(call_model(adapter, FAST, sleep=lambda s: asyncio.sleep(0), system="s", messages=[], tools=[],
                               max_tokens=1))
    assert adapter.calls == 1 and "\n" not in str(info.value)


@pytest.mark.parametrize("error, reason", [
    (_status_error(openai.ConflictError, 409), "409 conflict"),
    (_status_error(anthropic.BadRequestError, 400, {"x-should-retry": "true"}), "400 retry requested by the server"),
    (_status_error(anthropic.OverloadedError, 529), "529 overloaded"),
    (_status_error(openai.InternalServerError, 503), "503 server error"),
])
def test_transient_status_errors_retry_until_the_ceiling(error, reason):
    adapter = _Failing(error)
    seen: list[tuple] = []

    async def on_retry(attempt: int, wait: float, why: str) -> None:  # an async hook is awaited
        await asyncio.sleep(0)
        seen.append((attempt, why))

    with pytest.raises(ModelUnavailable, match=r"3 times in \d+s; last: scripted"):
        asyncio.run(call_model(adapter, RetryPolicy(max_attempts=3), on_retry=on_retry,
                               sleep=lambda s: asyncio.sleep(0), system="s", messages=[], tools=[], max_tokens=1))
    assert adapter.calls == 3 and seen == [(1, reason), (2, reason)]


def _said(cls: type, code: int, error: dict) -> Exception:
    request = httpx2.Request("POST", "http://127.0.0.1/v1/chat/completions")
    return cls("boom", response=httpx2.Response(code, request=request), body={"error": error})


@pytest.mark.parametrize("error, kind", [
    (_said(anthropic.APIStatusError, 402, {"type": "billing_error", "message": "payment failed"}), NeedsAttention),
    (_said(openai.RateLimitError, 429, {"type": "insufficient_quota", "code": "insufficient_quota",
                                        "message": "quota"}), NeedsAttention),
    (_said(anthropic.APIStatusError, 413, {"type": "request_too_large", "message": "Request exceeds the maximum "
                                                                                   "size"}), ContextOverflow),
    (_said(openai.BadRequestError, 400, {"type": "BadRequestError", "message": "This model's maximum context length "
                                         "is 4096 tokens. However, you requested 5000 tokens"}), ContextOverflow),
    (_said(openai.BadRequestError, 400, {"type": "exceed_context_size_error", "code": 400,
                                         "message": "the request exceeds the available context size"}),
     ContextOverflow),
])
def test_billing_and_overflow_as_each_server_says_them(error, kind):
    adapter = _Failing(error)
    with pytest.raises(kind) as info:
        asyncio.run(call_model(adapter, FAST, sleep=lambda s: asyncio.sleep(0), system="s", messages=[], tools=[],
                               max_tokens=1))
    assert adapter.calls == 1 and (kind is ContextOverflow) == isinstance(info.value, ContextOverflow)


def test_retry_after_headers():
    def err(headers: dict) -> anthropic.RateLimitError:
        request = httpx2.Request("POST", "http://127.0.0.1/v1/messages")
        return anthropic.RateLimitError("rate limited", response=httpx2.Response(429, headers=headers,
                                                                                  request=request), body=None)

    assert retry_after(err({"retry-after": "7"})) == 7.0
    assert retry_after(err({"retry-after-ms": "250", "retry-after": "7"})) == 0.25
    when = email.utils.format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)
    assert 25 < retry_after(err({"retry-after": when})) <= 30
    assert retry_after(err({"retry-after": "soon"})) is None and retry_after(err({})) is None


def test_unreachable_server_pauses_rather_than_crashes():
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # nothing listens here now
    adapter = build_adapter("anthropic", "m", api_key="k", base_url=f"http://127.0.0.1:{port}", timeout=2)

    async def nosleep(_):
        return None

    async def go():
        try:
            await call_model(adapter, RetryPolicy(max_attempts=2), sleep=nosleep, system="s",
                             messages=[Message.user("x")], tools=[], max_tokens=10)
        finally:
            await adapter.aclose()

    with pytest.raises(ModelUnavailable, match="connection refused 2 times"):
        asyncio.run(go())


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


def test_a_request_body_encodes_each_cached_message_once(monkeypatch):
    """The body is the JSON `json.dumps` would give, byte for byte, but a message the wire cache holds is encoded
    when it is first converted, not again every turn (a long run's conversation is most of each request)."""
    encoded: list[object] = []
    real = models._dumps
    monkeypatch.setattr(models, "_dumps", lambda value: encoded.append(value) or real(value))
    cache = WireCache(AnthropicAdapter._to_wire)
    conv = [Message.user("fix the tests: é ✓")]
    for turn_number in range(20):
        encoded.clear()
        body = {"model": "m", "max_tokens": 5, "stream": True, "system": "s",
                "tools": [{"name": "shell", "description": "d", "input_schema": {"type": "object"}}],
                "messages": cache.wire(conv)}
        body = anthropic_breakpoints(body)
        assert cache.dumps(body) == json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()
        messages_encoded = [v for v in encoded if isinstance(v, dict) and "role" in v]
        # the turn's new messages once each (as they are converted), and the two copies that carry a breakpoint;
        # not the whole conversation (41 messages by the end)
        assert len(messages_encoded) <= 4, (turn_number, len(messages_encoded))
        conv += [Message(role="assistant", content=[TextBlock(text=f"step {turn_number}"),
                                                    ToolCall(id=f"c{turn_number}", name="shell",
                                                             arguments={"command": "ls"})]),
                 Message(role="user", content=[ToolResult(tool_call_id=f"c{turn_number}", content="x" * 500)])]


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


BIG_SYSTEM = "Inspect before you change things; make focused changes. " * 120  # ~1,700 tokens: cacheable
LOOK = {"text": "Looking.", "tool_calls": [{"name": "read_file", "arguments": {"path": "a.py"}}]}  # usage: billed


async def _turns(adapter, results: list[list], system: str = BIG_SYSTEM, close: bool = True):
    """One call per entry of `results`, each answered with those blocks (the tool result first), and one more."""
    messages, answers = [Message.user("read a.py")], []
    try:
        for blocks in results:
            resp = await adapter.complete(system=system, messages=messages, tools=TOOLS, max_tokens=100)
            answers.append(resp)
            call = resp.message.tool_calls[0]
            messages += [resp.message, Message(role="user", content=[
                ToolResult(tool_call_id=call.id, content="contents of a.py " + "y" * 300), *blocks])]
        answers.append(await adapter.complete(system=system, messages=messages, tools=TOOLS, max_tokens=100))
    finally:
        if close:
            await adapter.aclose()
    return answers


def test_anthropic_each_turn_reads_what_the_previous_one_wrote_even_past_twenty_new_blocks():
    many = [TextBlock(text=f"note {i}") for i in range(25)]  # more new blocks than the API looks back over
    with LoopbackServer(Script.parse([LOOK] * 4)) as server:
        a = asyncio.run(_turns(_adapter("anthropic", server), [[], [], many]))
        bodies = [r["body"] for r in server.requests]
    for before, after in zip(a, a[1:], strict=False):
        assert after.usage.cache_read_tokens == before.usage.cache_read_tokens + before.usage.cache_write_tokens
        assert after.usage.cache_write_tokens > 0 and after.usage.input_tokens == 0
    assert a[0].usage.cache_read_tokens == 0 and a[0].usage.cache_write_tokens > 1024
    marked = [[i for i, m in enumerate(b["messages"]) if "cache_control" in m["content"][-1]] for b in bodies]
    assert marked == [[0], [0, 2], [2, 4], [4, 6]]  # the previous request's last message and this one's; the
    assert all(len(str(b).split("cache_control")) - 1 <= 4 for b in bodies)  # wire forms kept unmarked; <= 4


def test_anthropic_one_hour_ttl_is_marked_and_priced_at_twice_the_input():
    with LoopbackServer(Script.parse([LOOK] * 2)) as server:
        adapter = build_adapter("anthropic", "claude-sonnet-4-6", api_key="k", base_url=server.anthropic_base_url,
                                cache=CacheConfig(ttl="1h"))
        first, _ = asyncio.run(_turns(adapter, [[]]))
        body = server.requests[0]["body"]
    assert body["system"][0]["cache_control"] == {"type": "ephemeral", "ttl": "1h"}
    u = first.usage
    assert u.cache_write_1h_tokens == u.cache_write_tokens > 1024
    info = DEFAULT_MODELS["claude-sonnet-4-6"]
    assert cost_usd(u, info) == pytest.approx((u.input_tokens * 3 + u.cache_write_tokens * 6 + u.output_tokens * 15)
                                              / 1e6)
    assert cache_saved_usd(u, info) == pytest.approx(-u.cache_write_tokens * 3 / 1e6)  # a write costs 1x more


@pytest.mark.parametrize("provider", ["openai", "openai-responses"])
def test_openai_turns_share_the_runs_prompt_cache(provider):
    with LoopbackServer(Script.parse([LOOK] * 3)) as server:
        adapter = _adapter(provider, server)
        adapter.cache_key = "run-42"
        answers = asyncio.run(_turns(adapter, [[], []]))
        bodies = [r["body"] for r in server.requests]
    assert {b["prompt_cache_key"] for b in bodies} == {"run-42"}
    assert answers[0].usage.cache_read_tokens == 0 and answers[0].usage.input_tokens > 1024
    for before, after in zip(answers, answers[1:], strict=False):  # read: the previous prompt, in 128-token steps
        prompt = before.usage.input_tokens + before.usage.cache_read_tokens
        assert prompt - 128 < after.usage.cache_read_tokens <= prompt
        assert after.usage.cache_write_tokens == 0


def test_caching_off_marks_nothing():
    with LoopbackServer(Script.parse([LOOK] * 4)) as server:
        for provider in ("anthropic", "openai"):
            base = server.anthropic_base_url if provider == "anthropic" else server.openai_base_url
            adapter = build_adapter(provider, "m", api_key="k", base_url=base, cache=CacheConfig(enabled=False))
            adapter.cache_key = "run-1"
            answers = asyncio.run(_turns(adapter, [[]]))
            assert answers[1].usage.cache_read_tokens == 0 or provider == "openai"  # OpenAI caches by itself
        assert not any("cache_control" in str(r["body"]) or "prompt_cache_key" in r["body"] for r in server.requests)


def test_responses_with_store_send_only_new_items_after_the_previous_response():
    with LoopbackServer(Script.parse([LOOK] * 4)) as server:
        adapter = build_adapter("openai-responses", "gpt-5.1", api_key="k", base_url=server.openai_base_url,
                                cache=CacheConfig(responses_store=True))
        adapter.cache_key = "run-7"

        async def go():
            task = Message.user("read a.py")
            try:
                first = await adapter.complete(system=BIG_SYSTEM, messages=[task], tools=TOOLS, max_tokens=9)
                messages = [task, first.message, Message(role="user", content=[
                    ToolResult(tool_call_id="call_0_0", content="contents of a.py " + "y" * 300)])]
                second = await adapter.complete(system=BIG_SYSTEM, messages=messages, tools=TOOLS, max_tokens=9)
                server.stored.clear()  # the provider forgot the stored response: the conversation is sent whole
                messages += [second.message, Message.user("go on")]
                third = await adapter.complete(system=BIG_SYSTEM, messages=messages, tools=TOOLS, max_tokens=9)
            finally:
                await adapter.aclose()
            return (first, second), third

        (first, second), third = asyncio.run(go())
        bodies = [r["body"] for r in server.requests]
    assert bodies[0]["store"] is True and "previous_response_id" not in bodies[0]
    assert bodies[1]["previous_response_id"].startswith("resp_loopback_0")
    assert [i["type"] for i in bodies[1]["input"]] == ["function_call_output"]  # only what is new
    assert second.usage.cache_read_tokens > 1024 and third.message.text == "Looking."
    assert bodies[2]["previous_response_id"] and [i["type"] for i in bodies[2]["input"]] == ["message"]
    assert "previous_response_id" not in bodies[3] and len(bodies) == 4  # a 404, then the whole conversation


LONG_TURN = {"text": "x" * 1500 + "é" * 700, "tool_calls": [
    {"name": "read_file", "arguments": {"path": "p" * 900}}, {"name": "read_file", "arguments": {"path": "b.py"}}],
    "usage": {"input_tokens": 300, "output_tokens": 700, "cache_read_tokens": 40, "cache_write_tokens": 5}}


@pytest.mark.parametrize("provider", PROVIDERS)
def test_a_streamed_answer_is_assembled_from_its_deltas(provider):
    """Text and tool arguments longer than one delta, two calls and the usage come back whole from the stream."""
    with LoopbackServer(Script.parse([LONG_TURN])) as server:
        adapter = _adapter(provider, server)

        async def go():
            try:
                return await adapter.complete(system="s", messages=[Message.user("go")], tools=TOOLS, max_tokens=900)
            finally:
                await adapter.aclose()

        resp = asyncio.run(go())
        body = server.requests[0]["body"]
    assert body["stream"] is True and (provider != "openai" or body["stream_options"] == {"include_usage": True})
    assert resp.message.text == LONG_TURN["text"] and resp.stop_reason == "tool_use" and resp.model == "test-model"
    assert [(c.id, c.arguments) for c in resp.message.tool_calls] == [
        ("call_0_0", {"path": "p" * 900}), ("call_0_1", {"path": "b.py"})]
    u = resp.usage
    assert (u.input_tokens, u.output_tokens, u.cache_read_tokens) == (300, 700, 40)
    assert u.cache_write_tokens == (5 if provider == "anthropic" else 0)


def _faulty(provider: str, entries: list, **limits: float):
    """One call through the retries against `entries`, with the adapter's stream limits; (response, retry reasons,
    requests the server saw, entries left)."""
    reasons: list[str] = []

    async def go():
        with LoopbackServer(Script.parse(entries)) as server:
            base = server.anthropic_base_url if provider == "anthropic" else server.openai_base_url
            adapter = build_adapter(provider, "test-model", api_key="test-not-a-key", base_url=base, timeout=60,
                                    **limits)
            try:
                resp = await call_model(adapter, FAST, on_retry=lambda a, w, r: reasons.append(r),
                                        sleep=lambda s: asyncio.sleep(0), system="s",
                                        messages=[Message.user("go")], tools=TOOLS, max_tokens=50)
            finally:
                await adapter.aclose()
            return resp, reasons, len(server.requests), server.remaining

    return asyncio.run(go())


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("fault", ["stall", "slow"])
def test_a_stalled_stream_is_ended_and_retried(provider, fault):
    # the stream stops halfway for a minute (or no answer starts); the client gives up after 0.3 s without a byte
    resp, reasons, requests, left = _faulty(provider, [{"fault": fault, "delay": 60}, TOOL_TURN], stall_seconds=0.3)
    assert reasons == ["stream stalled"] and (requests, left) == (2, 0)
    assert resp.message.text == "Looking." and resp.message.tool_calls[0].arguments == {"path": "a.py"}


@pytest.mark.parametrize("provider", PROVIDERS)
def test_a_stream_cut_mid_event_is_retried_never_half_applied(provider):
    resp, reasons, requests, left = _faulty(provider, [{"fault": "cut"}, TOOL_TURN])
    assert reasons == ["truncated response"] and (requests, left) == (2, 0)
    assert resp.message.text == "Looking." and [c.arguments for c in resp.message.tool_calls] == [{"path": "a.py"}]


@pytest.mark.parametrize("provider", PROVIDERS)
def test_the_call_deadline_ends_a_trickle(provider):
    # a byte every 50 ms never stalls, and would take over a minute: the deadline ends it after 1 s
    resp, reasons, requests, left = _faulty(provider, [{"fault": "trickle", "delay": 0.05}, TOOL_TURN],
                                            stall_seconds=30, call_deadline_seconds=1)
    assert reasons == ["call deadline passed"] and (requests, left) == (2, 0)
    assert resp.message.tool_calls[0].arguments == {"path": "a.py"}


@pytest.mark.parametrize("payload, retried", [
    ({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}, True),  # Anthropic
    ({"type": "error", "code": "server_error", "message": "try again"}, True),  # Responses
    ({"error": {"message": "bad", "type": "invalid_request_error", "code": None}}, False),  # Chat
])
def test_error_events_in_a_stream_are_retried_only_when_passing(payload, retried):
    from loopwright.harness.adapters import stream_error
    from loopwright.harness.retry import classify

    err = stream_error(payload)
    assert (classify(err) is not None) == retried and isinstance(err, FatalModelError) != retried


def test_a_server_that_does_not_stream_is_named_not_retried():
    from http.server import BaseHTTPRequestHandler, HTTPServer
    from threading import Thread

    class JSONOnly(BaseHTTPRequestHandler):  # a server that ignores "stream": true
        def do_POST(self):
            self.rfile.read(int(self.headers["content-length"]))
            data = b'{"choices": []}'
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):
            pass

    httpd = HTTPServer(("127.0.0.1", 0), JSONOnly)
    Thread(target=httpd.serve_forever, daemon=True).start()
    adapter = build_adapter("openai", "m", api_key="k", base_url=f"http://127.0.0.1:{httpd.server_port}/v1")

    async def go():
        try:
            await call_model(adapter, FAST, system="s", messages=[Message.user("x")], tools=[], max_tokens=10)
        finally:
            await adapter.aclose()

    try:
        with pytest.raises(FatalModelError, match="answered a streamed request with application/json, not server-sent"):
            asyncio.run(go())
    finally:
        httpd.shutdown()


def test_server_sent_events_are_parsed_across_any_chunking():
    from loopwright.harness.adapters import SSEParser

    wire = 'event: a\r\ndata: {"t": "é"}\r\n\r\n: a comment\n\ndata: [DONE]\n\n'.encode()
    for size in (1, 2, 3, 7, len(wire)):
        parser = SSEParser()
        events = [e for i in range(0, len(wire), size) for e in parser.feed(wire[i:i + size])]
        assert events == [("a", '{"t": "é"}'), ("", "[DONE]")] and parser.pending == b""
    parser = SSEParser()
    assert parser.feed(b'data: {"cut": ') == [] and parser.pending  # an event cut short is held, never given


@pytest.mark.parametrize("provider", ["openai", "openai-responses"])
def test_fields_a_compatible_server_refuses_are_dropped_for_the_rest_of_the_run(provider):
    """A strict OpenAI-compatible server (llama.cpp, vLLM) answers a field it does not know with a 400 naming it:
    the call goes again without it, and the adapter's later calls never send it."""
    optional = ["stream_options", "prompt_cache_key"] if provider == "openai" else ["prompt_cache_key"]
    with LoopbackServer(Script.parse([LOOK] * 2), refuse_fields=tuple(optional)) as server:
        adapter = _adapter(provider, server)
        adapter.cache_key = "run-42"
        answers = asyncio.run(_turns(adapter, [[]], system="be brief"))
        sent = [[f for f in optional if f in r["body"]] for r in server.requests]
    assert [a.message.tool_calls[0].name for a in answers[:1]] == ["read_file"] and answers[1].message.text
    # one refusal per field (the server names the first it finds), then the first answer; the second call at once
    assert sent == [optional[i:] for i in range(len(optional) + 1)] + [[]]


def test_a_400_naming_no_optional_field_is_not_sent_again():
    with LoopbackServer(Script.parse([LOOK]), refuse_fields=("tools",)) as server:
        adapter = _adapter("openai", server)
        with pytest.raises(openai.BadRequestError, match="unsupported param: tools"):
            asyncio.run(_turns(adapter, [], system="be brief"))
        assert len(server.requests) == 1
