"""Adapters from the internal message model to Anthropic Messages, OpenAI Chat Completions and OpenAI Responses.

Each goes through the official async SDK with its own retries switched off
(ours are in `harness.retry`) and a configurable base_url, so the same code
talks to the providers, to any OpenAI-compatible server (Ollama, vLLM,
llama.cpp) and to the loopback server in tests. Tool arguments that are not a
JSON object come back as a `ToolCall` with `parse_error` set, never an exception.
"""

from __future__ import annotations

import functools
import importlib
import json
import ssl
from collections.abc import Callable
from typing import Any, ClassVar
from urllib.parse import urlparse

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
from loopwright.harness.models import ModelAdapter, WireCache, flatten

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
def _tls_context() -> ssl.SSLContext:
    """One TLS context for every client of this process: loading the CA certificates costs ~40 ms of CPU and
    ~0.8 MB, which a fleet of 128 runs starting at once would otherwise pay 128 times. (Each run keeps its own
    connection pool: one pool shared by a hundred runs costs more per request than it saves.)"""
    import httpx2

    return httpx2.create_ssl_context()


class _SDKAdapter(ModelAdapter):
    """Shared set-up: the SDK's async client with its own retries off, and the wire cache.

    The client sends over the SDK's aiohttp transport (its `aiohttp` extra): aiohttp parses HTTP in C, where
    the default httpx transport does it in Python; with 128 calls at once in one process a call costs ~15% less
    CPU, which a fleet of runs sharing one event loop needs."""

    sdk_name = ""
    client_name = ""
    _to_wire: Callable[[Message], Any]  # one message in the provider's wire format (cached by WireCache)

    def __init__(self, model: str, *, api_key: str, base_url: str | None = None, timeout: float = 600,
                 cache: CacheConfig | None = None):
        self.model = model
        self.base_url = base_url
        self.cache = cache or CacheConfig()
        sdk = importlib.import_module(self.sdk_name)  # only the SDK a run uses is imported (~1-2 s each)
        self.client = getattr(sdk, self.client_name)(
            api_key=api_key, base_url=base_url, timeout=timeout, max_retries=0,
            http_client=sdk.DefaultAioHttpClient(verify=_tls_context()))
        self._wire = WireCache(self._to_wire)

    @property
    def routing_key(self) -> str | None:
        """OpenAI's `prompt_cache_key`: the run's, while caching is on."""
        return self.cache_key if self.cache.enabled else None

    async def aclose(self) -> None:
        await self.client.close()


class AnthropicAdapter(_SDKAdapter):
    provider = "anthropic"
    sdk_name, client_name = "anthropic", "AsyncAnthropic"
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
        body: dict[str, Any] = {"model": self.model, "max_tokens": max_tokens, "messages": self._wire.wire(messages)}
        if system:
            body["system"] = system
        if tools:
            body["tools"] = [{"name": t.name, "description": t.description, "input_schema": t.input_schema}
                             for t in tools]
        body = anthropic_breakpoints(body, self.cache.ttl) if self.cache.enabled else body
        resp = await self.client.messages.create(**body)
        content: list = []
        for block in resp.content:
            if block.type == "text":
                content.append(TextBlock(text=block.text))
            elif block.type == "tool_use":
                args = block.input if isinstance(block.input, dict) else {}
                error = None if isinstance(block.input, dict) else "tool input was not a JSON object"
                content.append(ToolCall(id=block.id, name=block.name, arguments=args, parse_error=error))
        return ModelResponse(message=Message(role="assistant", content=content or [TextBlock(text="")]),
                             usage=anthropic_usage(resp.usage),
                             stop_reason=self._STOP.get(resp.stop_reason or "", "other"), model=resp.model)


class OpenAIChatAdapter(_SDKAdapter):
    provider = "openai"
    sdk_name, client_name = "openai", "AsyncOpenAI"
    _STOP: ClassVar[dict[str, StopReason]] = {"stop": "end_turn", "tool_calls": "tool_use",
             "function_call": "tool_use", "length": "max_tokens",
             "content_filter": "refusal"}

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
        kwargs: dict[str, Any] = {}
        if tools:
            kwargs["tools"] = [{"type": "function", "function": {"name": t.name, "description": t.description,
                                                                 "parameters": t.input_schema}} for t in tools]
        # OpenAI's own endpoint wants max_completion_tokens (reasoning models reject max_tokens); compatible
        # servers (Ollama, vLLM, llama.cpp) have long understood max_tokens, not always the newer name
        official = self.base_url is None or (urlparse(self.base_url).hostname or "").endswith("openai.com")
        kwargs["max_completion_tokens" if official else "max_tokens"] = max_tokens
        wire = [{"role": "system", "content": system}] if system else []
        wire += flatten(self._wire.wire(messages))
        body = openai_cache_key({"model": self.model, "messages": wire, **kwargs}, self.routing_key)
        resp = await self.client.chat.completions.create(**body)
        if not resp.choices:
            return ModelResponse(message=Message(role="assistant", content=[TextBlock(text="")]),
                                 stop_reason="other", model=resp.model or self.model)
        choice = resp.choices[0]
        content: list = []
        if choice.message.content:
            content.append(TextBlock(text=choice.message.content))
        refusal = getattr(choice.message, "refusal", None)
        if refusal:
            content.append(TextBlock(text=refusal))
        for c in choice.message.tool_calls or []:
            args, error = parse_arguments(c.function.arguments)
            content.append(ToolCall(id=c.id, name=c.function.name, arguments=args, parse_error=error))
        stop = "refusal" if refusal else self._STOP.get(choice.finish_reason or "", "other")
        return ModelResponse(message=Message(role="assistant", content=content or [TextBlock(text="")]),
                             usage=chat_usage(resp.usage),
                             stop_reason=stop, model=resp.model)


class OpenAIResponsesAdapter(_SDKAdapter):
    provider = "openai-responses"
    sdk_name, client_name = "openai", "AsyncOpenAI"

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
        kwargs: dict[str, Any] = {}
        if tools:
            kwargs["tools"] = [{"type": "function", "name": t.name, "description": t.description,
                                "parameters": t.input_schema, "strict": False} for t in tools]
        if system:
            kwargs["instructions"] = system  # never carried over from a previous response: sent every time
        store = self.cache.enabled and self.cache.responses_store
        previous, start = self._chain.since(messages) if store else (None, 0)
        body = openai_cache_key({"model": self.model, "store": store, "max_output_tokens": max_tokens, **kwargs},
                                self.routing_key)
        wires = self._wire.wire(messages)
        wire = flatten(wires)
        try:
            resp = await self.client.responses.create(
                **body, **({"previous_response_id": previous, "input": flatten(wires[start:])}
                           if previous else {"input": wire}))
        except Exception as e:  # the stored response expired or was deleted: send the conversation whole
            if previous is None or getattr(e, "status_code", None) not in (400, 404):
                raise
            self._chain.forget()
            resp = await self.client.responses.create(**body, input=wire)
        content: list = []
        refused = False
        for item in resp.output:  # reasoning items are skipped: stored, they are kept by previous_response_id
            if item.type == "message":
                text = "".join(getattr(part, "text", "") for part in item.content if part.type == "output_text")
                refusal = "".join(getattr(part, "refusal", "") for part in item.content if part.type == "refusal")
                refused = refused or bool(refusal)
                if text or refusal:
                    content.append(TextBlock(text=text + refusal))
            elif item.type == "function_call":
                args, error = parse_arguments(item.arguments)
                content.append(ToolCall(id=item.call_id, name=item.name, arguments=args, parse_error=error))
        incomplete = getattr(getattr(resp, "incomplete_details", None), "reason", None)
        stop = ("max_tokens" if incomplete == "max_output_tokens" else
                "refusal" if refused or incomplete == "content_filter" else
                "tool_use" if any(isinstance(b, ToolCall) for b in content) else
                "other" if incomplete else "end_turn")
        reply = Message(role="assistant", content=content or [TextBlock(text="")])
        if store:
            self._chain.stored(resp.id, messages, reply)
        return ModelResponse(message=reply, usage=responses_usage(resp.usage), stop_reason=stop,  # type: ignore[arg-type]
                             model=resp.model or self.model)


_ADAPTERS: dict[str, type[_SDKAdapter]] = {"anthropic": AnthropicAdapter, "openai": OpenAIChatAdapter,
                                           "openai-responses": OpenAIResponsesAdapter}


def import_sdk(provider: str) -> None:
    """Import the SDK a provider's adapter uses now (it takes a second or two), not in the first run's setup."""
    adapter = _ADAPTERS.get(provider)
    if adapter is not None:
        importlib.import_module(adapter.sdk_name)


def build_adapter(provider: str, model: str, *, api_key: str, base_url: str | None,
                  timeout: float = 600, cache: CacheConfig | None = None) -> ModelAdapter:
    """The adapter for a provider name: anthropic, openai (Chat Completions) or openai-responses."""
    if provider not in _ADAPTERS:
        raise ValueError(f"unknown provider '{provider}' (allowed: {', '.join(PROVIDERS)})")
    return _ADAPTERS[provider](model, api_key=api_key, base_url=base_url, timeout=timeout, cache=cache)
