"""Adapters from the internal message model to Anthropic Messages, OpenAI Chat Completions and OpenAI Responses.

Each goes through the official async SDK with its own retries switched off
(ours are in `harness.retry`) and a configurable base_url, so the same code
talks to the providers, to any OpenAI-compatible server (Ollama, vLLM,
llama.cpp) and to the loopback server in tests. Every answer is streamed and
assembled from its events once the stream's last event came; a stream that
stalls, passes the call's deadline or is cut short raises `StreamInterrupted`
(retried). Tool arguments that are not a JSON object come back as a `ToolCall`
with `parse_error` set, never an exception.
"""

from __future__ import annotations

import asyncio
import functools
import importlib
import json
import ssl
from collections.abc import Callable
from typing import Any, ClassVar
from urllib.parse import urlparse

import httpx2

from loopwright.harness.caching import (
    CacheConfig,
    ResponseChain,
    anthropic_breakpoints,
    anthropic_usage,
    chat_usage,
    openai_cache_key,
    responses_usage,
)
from loopwright.harness.messages import (
    Message,
    ModelResponse,
    StopReason,
    TextBlock,
    ToolCall,
    ToolResult,
    ToolSpec,
)
from loopwright.harness.models import STREAMED, FatalModelError, ModelAdapter, StreamInterrupted, WireCache, flatten

PROVIDERS = ("anthropic", "openai", "openai-responses")


def parse_arguments(raw: str | None) -> tuple[dict[str, Any], str | None]:
    """(arguments, parse_error) from a JSON string as OpenAI sends it."""
    if not raw:
        return {}, None
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as e:
        return {}, f"{e.msg} at position {e.pos} in {raw[:120]!r}"
    if not isinstance(value, dict):
        return {}, f"expected a JSON object, got {type(value).__name__}"
    return value, None


@functools.cache
def tls_context() -> ssl.SSLContext:
    """One TLS context for every client of this process: loading the CA certificates costs ~40 ms of CPU and
    ~0.8 MB, which a fleet of 128 runs starting at once would otherwise pay 128 times. (Each run keeps its own
    connection pool: one pool shared by a hundred runs costs more per request than it saves.)"""
    return httpx2.create_ssl_context()


class SSEParser:
    """Server-sent events from a byte stream: (event name, data) per complete event; `pending` holds a cut one."""

    def __init__(self) -> None:
        self.pending = b""

    def feed(self, chunk: bytes) -> list[tuple[str, str]]:
        *blocks, self.pending = (self.pending + chunk).replace(b"\r\n", b"\n").split(b"\n\n")
        events = []
        for block in blocks:
            name, data = "", []
            for line in block.decode().split("\n"):
                if line.startswith("data:"):
                    data.append(line[5:].removeprefix(" "))
                elif line.startswith("event:"):
                    name = line[6:].strip()
            if data:
                events.append((name, "\n".join(data)))
        return events


# in-stream error types that a later attempt may not meet (the rest, e.g. an invalid request, are fatal)
_PASSING_ERRORS = frozenset({"overloaded_error", "api_error", "server_error", "internal_error", "rate_limit_error",
                             "rate_limit_exceeded", "timeout"})


def stream_error(payload: dict) -> Exception:
    """The error an `error` event (or a failed response) in a stream stands for: retried when it is passing."""
    error: dict = payload["error"] if isinstance(payload.get("error"), dict) else payload
    kind = str(error.get("code") or error.get("type") or "error")
    message = " ".join(str(error.get("message") or "").split())[:200]
    if kind in _PASSING_ERRORS:
        return StreamInterrupted(f"{kind} in the stream", message)
    return FatalModelError(f"the provider ended the answer with an error ({kind}): {message}")


class _SDKAdapter(ModelAdapter):
    """Shared set-up and the streamed request every adapter makes.

    The client sends over the SDK's aiohttp transport (its `aiohttp` extra): aiohttp parses HTTP in C, where
    the default httpx transport does it in Python; with 128 calls at once in one process a call costs ~15% less
    CPU, which a fleet of runs sharing one event loop needs.

    The request goes through the client's own `post` with a body built here from the wire cache and sent as
    JSON bytes: the SDKs walk and copy every parameter of a call before they serialise it (OpenAI's `create`
    methods, and the Anthropic client for any body it is given), most of a long run's CPU. Auth, base_url,
    headers and the typed status errors stay the SDK's."""

    sdk_name = ""
    client_name = ""
    path = ""
    final_events: ClassVar[frozenset[str]] = frozenset()  # the events that end a stream ("[DONE]": its data)
    # body fields a compatible server may not know (llama.cpp, vLLM refuse unknown fields with a 400): see `_post`
    optional_fields: ClassVar[tuple[str, ...]] = ()
    _to_wire: Callable[[Message], Any]  # one message in the provider's wire format (cached by WireCache)

    @staticmethod
    def _streamed_chars(event: Any) -> int:
        """How many characters of the answer (text, tool arguments) one streamed event carries."""
        return 0

    def __init__(self, model: str, *, api_key: str, base_url: str | None = None, timeout: float = 600,
                 cache: CacheConfig | None = None, stall_seconds: float = 120, call_deadline_seconds: float = 900):
        self.model = model
        self.base_url = base_url
        self.cache = cache or CacheConfig()
        self.stall_seconds, self.call_deadline_seconds = stall_seconds, call_deadline_seconds
        sdk = importlib.import_module(self.sdk_name)  # only the SDK a run uses is imported (~1-2 s each)
        self.client = getattr(sdk, self.client_name)(
            api_key=api_key, base_url=base_url, timeout=timeout, max_retries=0,
            http_client=sdk.DefaultAioHttpClient(verify=tls_context()))
        self._wire = WireCache(self._to_wire)
        self._refused: set[str] = set()  # optional fields this server refused: no longer sent

    @property
    def routing_key(self) -> str | None:
        """OpenAI's `prompt_cache_key`: the run's, while caching is on."""
        return self.cache_key if self.cache.enabled else None

    async def aclose(self) -> None:
        await self.client.close()

    async def _post(self, body: dict) -> list[tuple[str, dict]]:
        """`_stream` without the optional fields the server refused: a 400 that names one drops it from this and
        every later call of the adapter, and the call is sent again."""
        while True:
            try:
                return await self._stream({k: v for k, v in body.items() if k not in self._refused})
            except Exception as e:
                named = [f for f in self.optional_fields if f in body and f not in self._refused and f in str(e)]
                if getattr(e, "status_code", None) not in (400, 422) or not named:
                    raise
                self._refused.update(named)

    async def _stream(self, body: dict) -> list[tuple[str, dict]]:
        """POST `body` (streamed) and return its events, each (name, data), once the stream's final event came.

        A stream that sends no byte for `stall_seconds`, or is not over within `call_deadline_seconds`, or ends
        before its final event (cut mid-event) raises `StreamInterrupted`: nothing of it is used."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.call_deadline_seconds
        sse, events, finished = SSEParser(), [], False
        streamed, report = 0, STREAMED.get()
        content = self._wire.dumps(body)
        try:
            async with asyncio.timeout_at(min(loop.time() + self.stall_seconds, deadline)) as timer:
                response = await self.client.post(self.path, content=content, cast_to=httpx2.Response, stream=True)
                try:
                    if not (kind := response.headers.get("content-type", "")).startswith("text/event-stream"):
                        raise FatalModelError(f"the server answered a streamed request with {kind or 'no content'}, "
                                              f"not server-sent events (every model call streams; check base_url)")
                    async for chunk in response.aiter_bytes():
                        timer.reschedule(min(loop.time() + self.stall_seconds, deadline))
                        for name, data in sse.feed(chunk):
                            if finished:
                                continue  # read to the end, so the connection goes back to the pool
                            if data == "[DONE]" or name in self.final_events:
                                finished = True
                                if data == "[DONE]":
                                    continue
                            event = json.loads(data)
                            if name == "error" or (isinstance(event, dict) and "error" in event and event["error"]):
                                raise stream_error(event)
                            events.append((name, event))
                            if report is not None:
                                streamed += self._streamed_chars(event)
                        if report is not None and streamed:
                            report(streamed)
                finally:
                    await response.aclose()
        except TimeoutError as err:
            if not timer.expired():
                raise
            if loop.time() >= deadline:
                raise StreamInterrupted("call deadline passed",
                                        f"no whole answer within {self.call_deadline_seconds:g}s") from err
            raise StreamInterrupted("stream stalled", f"no bytes for {self.stall_seconds:g}s") from err
        if not finished:
            raise StreamInterrupted("stream cut mid-event" if sse.pending.strip() else "stream ended early",
                                    "the answer stopped before its last event")
        return events


class AnthropicAdapter(_SDKAdapter):
    provider = "anthropic"
    sdk_name, client_name, path = "anthropic", "AsyncAnthropic", "/v1/messages"
    final_events = frozenset({"message_stop"})

    @staticmethod
    def _streamed_chars(event: Any) -> int:
        if event.get("type") != "content_block_delta":
            return 0
        delta = event.get("delta") or {}
        return len(delta.get("text") or delta.get("partial_json") or delta.get("thinking") or "")
    _STOP: ClassVar[dict[str, StopReason]] = {"end_turn": "end_turn", "tool_use": "tool_use",
             "max_tokens": "max_tokens",
             "model_context_window_exceeded": "max_tokens", "stop_sequence": "stop_sequence", "refusal": "refusal"}

    @staticmethod
    def _to_wire(m: Message) -> dict:
        blocks: list[dict] = []
        # the API wants a user turn's tool_result blocks before any text
        for b in sorted(m.content, key=lambda b: not isinstance(b, ToolResult)):
            if isinstance(b, TextBlock):
                if b.text:
                    blocks.append({"type": "text", "text": b.text})
            elif isinstance(b, ToolCall):
                blocks.append({"type": "tool_use", "id": b.id, "name": b.name, "input": b.arguments})
            elif isinstance(b, ToolResult):
                blocks.append({"type": "tool_result", "tool_use_id": b.tool_call_id, "content": b.content,
                               "is_error": b.is_error})
        if not blocks:
            blocks.append({"type": "text", "text": "(no content)"})
        return {"role": m.role, "content": blocks}

    async def complete(self, *, system: str, messages: list[Message], tools: list[ToolSpec],
                       max_tokens: int) -> ModelResponse:
        body: dict[str, Any] = {"model": self.model, "max_tokens": max_tokens, "stream": True}
        if system:
            body["system"] = system
        if tools:
            body["tools"] = [{"name": t.name, "description": t.description, "input_schema": t.input_schema}
                             for t in tools]
        body["messages"] = self._wire.wire(messages)
        body = anthropic_breakpoints(body, self.cache.ttl) if self.cache.enabled else body
        return self._assemble(await self._stream(body))

    def _assemble(self, events: list[tuple[str, dict]]) -> ModelResponse:
        blocks: dict[int, dict] = {}
        parts: dict[int, list[str]] = {}
        usage: dict[str, Any] = {}
        stop, model = "", self.model
        for name, data in events:
            kind = data.get("type", name)
            if kind == "message_start":
                start = data.get("message") or {}
                model = start.get("model") or model
                usage.update(start.get("usage") or {})
            elif kind == "content_block_start":
                blocks[data["index"]], parts[data["index"]] = data["content_block"], []
            elif kind == "content_block_delta":
                delta = data["delta"]
                parts[data["index"]].append(delta.get("text") or delta.get("partial_json") or "")
            elif kind == "message_delta":
                stop = (data.get("delta") or {}).get("stop_reason") or stop
                usage.update({k: v for k, v in (data.get("usage") or {}).items() if v is not None})
        content: list = []
        for i in sorted(blocks):
            block, joined = blocks[i], "".join(parts[i])
            if block.get("type") == "text":
                content.append(TextBlock(text=block.get("text", "") + joined))
            elif block.get("type") == "tool_use":
                given = block.get("input")
                args, error = parse_arguments(joined) if joined or not isinstance(given, dict) else (given, None)
                content.append(ToolCall(id=block["id"], name=block["name"], arguments=args, parse_error=error))
        return ModelResponse(
            message=Message(role="assistant", content=content or [TextBlock(text="")]),
            usage=anthropic_usage(usage),
            stop_reason=self._STOP.get(stop, "other"), model=model)


class OpenAIChatAdapter(_SDKAdapter):
    provider = "openai"
    sdk_name, client_name, path = "openai", "AsyncOpenAI", "/chat/completions"
    final_events = frozenset({"[DONE]"})
    optional_fields = ("stream_options", "prompt_cache_key")  # without the first, usage only if the server sends it
    _STOP: ClassVar[dict[str, StopReason]] = {"stop": "end_turn", "tool_calls": "tool_use",
             "function_call": "tool_use", "length": "max_tokens",
             "content_filter": "refusal"}

    @staticmethod
    def _streamed_chars(event: Any) -> int:
        n = 0
        for choice in event.get("choices") or ():
            delta = choice.get("delta") or {}
            n += len(delta.get("content") or "")
            n += sum(len((c.get("function") or {}).get("arguments") or "") for c in delta.get("tool_calls") or ())
        return n

    @staticmethod
    def _to_wire(m: Message) -> list[dict]:
        text = "\n".join(b.text for b in m.content if isinstance(b, TextBlock) and b.text)
        if m.role == "assistant":
            msg: dict[str, Any] = {"role": "assistant", "content": text or None}
            calls = [{"id": c.id, "type": "function",
                      "function": {"name": c.name, "arguments": json.dumps(c.arguments)}} for c in m.tool_calls]
            if calls:
                msg["tool_calls"] = calls
            elif not text:
                msg["content"] = "(no content)"
            return [msg]
        out: list[dict] = [{"role": "tool", "tool_call_id": r.tool_call_id,
                            "content": ("ERROR: " if r.is_error else "") + r.content} for r in m.tool_results]
        if text or not out:
            out.append({"role": "user", "content": text or "(no content)"})
        return out

    async def complete(self, *, system: str, messages: list[Message], tools: list[ToolSpec],
                       max_tokens: int) -> ModelResponse:
        # OpenAI's own endpoint wants max_completion_tokens (reasoning models reject max_tokens); compatible
        # servers (Ollama, vLLM, llama.cpp) have long understood max_tokens, not always the newer name
        official = self.base_url is None or (urlparse(self.base_url).hostname or "").endswith("openai.com")
        body: dict[str, Any] = {"model": self.model, "max_completion_tokens" if official else "max_tokens": max_tokens,
                                "stream": True, "stream_options": {"include_usage": True}}
        if tools:
            body["tools"] = [{"type": "function", "function": {"name": t.name, "description": t.description,
                                                               "parameters": t.input_schema}} for t in tools]
        wire = [{"role": "system", "content": system}] if system else []
        body["messages"] = wire + flatten(self._wire.wire(messages))
        return self._assemble(await self._post(openai_cache_key(body, self.routing_key)))

    def _assemble(self, events: list[tuple[str, dict]]) -> ModelResponse:
        text: list[str] = []
        refusal: list[str] = []
        calls: dict[int, dict] = {}
        usage: dict = {}
        finish, model, answered = "", self.model, False
        for _, data in events:
            model = data.get("model") or model
            usage = data.get("usage") or usage
            for choice in data.get("choices") or []:
                if choice.get("index", 0) != 0:
                    continue
                answered = True
                delta = choice.get("delta") or {}
                text.append(delta.get("content") or "")
                refusal.append(delta.get("refusal") or "")
                for part in delta.get("tool_calls") or []:
                    call = calls.setdefault(part.get("index", 0), {"id": "", "name": "", "arguments": []})
                    function = part.get("function") or {}
                    call["id"] = call["id"] or part.get("id") or ""
                    call["name"] = call["name"] or function.get("name") or ""
                    call["arguments"].append(function.get("arguments") or "")
                finish = choice.get("finish_reason") or finish
        if not answered:
            return ModelResponse(message=Message(role="assistant", content=[TextBlock(text="")]),
                                 stop_reason="other", model=model)
        content: list = []
        if "".join(text):
            content.append(TextBlock(text="".join(text)))
        if "".join(refusal):
            content.append(TextBlock(text="".join(refusal)))
        for i in sorted(calls):
            args, error = parse_arguments("".join(calls[i]["arguments"]))
            content.append(ToolCall(id=calls[i]["id"], name=calls[i]["name"], arguments=args, parse_error=error))
        stop = "refusal" if "".join(refusal) else self._STOP.get(finish, "other")
        return ModelResponse(message=Message(role="assistant", content=content or [TextBlock(text="")]),
                             usage=chat_usage(usage), stop_reason=stop, model=model)


class OpenAIResponsesAdapter(_SDKAdapter):
    provider = "openai-responses"
    sdk_name, client_name, path = "openai", "AsyncOpenAI", "/responses"
    final_events = frozenset({"response.completed", "response.incomplete", "response.failed"})
    optional_fields = ("prompt_cache_key",)

    @staticmethod
    def _streamed_chars(event: Any) -> int:
        delta = event.get("delta")
        return len(delta) if isinstance(delta, str) and str(event.get("type", "")).endswith(".delta") else 0

    def __init__(self, model: str, **kwargs: Any):
        super().__init__(model, **kwargs)
        self._chain = ResponseChain()

    @staticmethod
    def _message(role: str, text: str) -> dict:
        # an assistant message given back as input takes plain string content (no item id or status needed)
        if role == "assistant":
            return {"type": "message", "role": "assistant", "content": text}
        return {"type": "message", "role": role, "content": [{"type": "input_text", "text": text}]}

    @classmethod
    def _to_wire(cls, m: Message) -> list[dict]:
        items: list[dict] = []
        for b in m.content:
            if isinstance(b, TextBlock) and b.text:
                items.append(cls._message(m.role, b.text))
            elif isinstance(b, ToolCall):
                items.append({"type": "function_call", "call_id": b.id, "name": b.name,
                              "arguments": json.dumps(b.arguments)})
            elif isinstance(b, ToolResult):
                items.append({"type": "function_call_output", "call_id": b.tool_call_id,
                              "output": ("ERROR: " if b.is_error else "") + b.content})
        if not items:
            items.append(cls._message(m.role, "(no content)"))
        return items

    async def complete(self, *, system: str, messages: list[Message], tools: list[ToolSpec],
                       max_tokens: int) -> ModelResponse:
        body: dict[str, Any] = {"model": self.model, "store": False, "max_output_tokens": max_tokens,
                                "stream": True}
        if tools:
            body["tools"] = [{"type": "function", "name": t.name, "description": t.description,
                              "parameters": t.input_schema, "strict": False} for t in tools]
        if system:
            body["instructions"] = system  # never carried over from a previous response: sent every time
        store = self.cache.enabled and self.cache.responses_store
        previous, start = self._chain.since(messages) if store else (None, 0)
        body = openai_cache_key({**body, "store": store}, self.routing_key)
        wires = self._wire.wire(messages)
        try:
            events = await self._post({**body, "previous_response_id": previous, "input": flatten(wires[start:])}
                                      if previous else {**body, "input": flatten(wires)})
        except Exception as e:  # the stored response expired or was deleted: send the conversation whole
            if previous is None or getattr(e, "status_code", None) not in (400, 404):
                raise
            self._chain.forget()
            events = await self._post({**body, "input": flatten(wires)})
        response = self._assemble(events)
        if store:
            final = next((d.get("response") or {} for n, d in reversed(events)
                          if d.get("type", n) in self.final_events), {})
            if final.get("id"):
                self._chain.stored(final["id"], messages, response.message)
        return response

    def _assemble(self, events: list[tuple[str, dict]]) -> ModelResponse:
        done: dict[int, dict] = {}
        final: dict = {}
        for name, data in events:
            kind = data.get("type", name)
            if kind == "response.output_item.done":
                done[data.get("output_index", len(done))] = data["item"]
            elif kind in self.final_events:
                final = data.get("response") or {}
        if final.get("status") == "failed":
            raise stream_error(final.get("error") or {"type": "server_error", "message": "the response failed"})
        content: list = []
        refused = False
        # the items as they were streamed (a server may leave them out of the final response);
        # reasoning items are skipped: with store=False they cannot be referred back to
        for item in [done[i] for i in sorted(done)] or final.get("output") or []:
            if item.get("type") == "message":
                parts = item.get("content") or []
                text = "".join(p.get("text", "") for p in parts if p.get("type") == "output_text")
                refusal = "".join(p.get("refusal", "") for p in parts if p.get("type") == "refusal")
                refused = refused or bool(refusal)
                if text or refusal:
                    content.append(TextBlock(text=text + refusal))
            elif item.get("type") == "function_call":
                args, error = parse_arguments(item.get("arguments"))
                content.append(ToolCall(id=item["call_id"], name=item["name"], arguments=args, parse_error=error))
        usage = responses_usage(final.get("usage") or {})
        incomplete = (final.get("incomplete_details") or {}).get("reason")
        stop = ("max_tokens" if incomplete == "max_output_tokens" else
                "refusal" if refused or incomplete == "content_filter" else
                "tool_use" if any(isinstance(b, ToolCall) for b in content) else
                "other" if incomplete else "end_turn")
        return ModelResponse(message=Message(role="assistant", content=content or [TextBlock(text="")]), usage=usage,
                             stop_reason=stop, model=final.get("model") or self.model)  # type: ignore[arg-type]


_ADAPTERS: dict[str, type[_SDKAdapter]] = {"anthropic": AnthropicAdapter, "openai": OpenAIChatAdapter,
                                           "openai-responses": OpenAIResponsesAdapter}


def import_sdk(provider: str) -> None:
    """Import the SDK a provider's adapter uses now (it takes a second or two), not in the first run's setup."""
    adapter = _ADAPTERS.get(provider)
    if adapter is not None:
        importlib.import_module(adapter.sdk_name)


def build_adapter(provider: str, model: str, *, api_key: str, base_url: str | None, timeout: float = 600,
                  cache: CacheConfig | None = None, stall_seconds: float = 120,
                  call_deadline_seconds: float = 900) -> ModelAdapter:
    """The adapter for a provider name: anthropic, openai (Chat Completions) or openai-responses."""
    if provider not in _ADAPTERS:
        raise ValueError(f"unknown provider '{provider}' (allowed: {', '.join(PROVIDERS)})")
    return _ADAPTERS[provider](model, api_key=api_key, base_url=base_url, timeout=timeout, cache=cache,
                               stall_seconds=stall_seconds, call_deadline_seconds=call_deadline_seconds)
