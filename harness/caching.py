"""Prompt caching: where a request marks its cacheable prefix, and what the provider says it read and wrote.

Pure functions on a request body (the keyword arguments of the SDK's create call, or the JSON sent) and on the
usage a response carries (an SDK object or a plain dict), so whichever way an adapter builds and sends its
request it adds caching in one line. `[cache]` (`CacheConfig`) is defined here, where it is applied.

Anthropic caches only prefixes marked with `cache_control`, at most four per request: the tools, the system
prompt, the last message (the moving breakpoint: what this turn writes) and the last message of the previous
request (the user message before the last assistant turn: what the previous turn wrote, read back exactly even
when more than 20 blocks were added since). OpenAI caches prefixes of 1,024+ tokens by itself; `prompt_cache_key`
routes a run's requests to the same cache.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from loopwright.harness.messages import Message, Usage


class CacheConfig(BaseModel):
    """`[cache]`: prompt caching on every provider."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)  # as every section of the config

    enabled: bool = True
    ttl: Literal["5m", "1h"] = Field(default="5m", description="Anthropic: how long a written prefix lives; 1h "
                                                               "for loops whose turns are minutes apart")
    responses_store: bool = Field(default=False, description="OpenAI Responses: store responses on the "
                                                             "provider and send only new items "
                                                             "(previous_response_id)")


def anthropic_breakpoints(body: dict, ttl: str = "5m") -> dict:
    """The body with `cache_control` on the last tool, the system prompt, the previous request's last message and
    the last message. The messages the body holds are not changed (they may be cached wire forms): marked ones
    are copied."""
    mark = {"type": "ephemeral"} if ttl == "5m" else {"type": "ephemeral", "ttl": ttl}
    out = dict(body)
    if tools := body.get("tools"):
        out["tools"] = [*tools[:-1], {**tools[-1], "cache_control": mark}]
    system = body.get("system")
    if isinstance(system, str) and system:
        out["system"] = [{"type": "text", "text": system, "cache_control": mark}]
    elif isinstance(system, list) and system:
        out["system"] = [*system[:-1], {**system[-1], "cache_control": mark}]
    messages = list(body.get("messages") or [])
    marked = [len(messages) - 1] if messages else []
    previous = next((i for i in range(len(messages) - 3, -1, -1) if messages[i].get("role") == "user"), None)
    if previous is not None and messages[previous + 1].get("role") == "assistant":
        marked.append(previous)
    for i in marked:
        content = messages[i]["content"]
        blocks = [{"type": "text", "text": content}] if isinstance(content, str) else list(content)
        if blocks:
            blocks[-1] = {**blocks[-1], "cache_control": mark}
            messages[i] = {**messages[i], "content": blocks}
    out["messages"] = messages
    return out


def openai_cache_key(body: dict, key: str | None) -> dict:
    """The body with `prompt_cache_key` (one per run, so its turns reach the same cache)."""
    return {**body, "prompt_cache_key": key} if key else body


def _get(obj: Any, name: str) -> Any:
    if obj is None:
        return None
    return obj.get(name) if isinstance(obj, dict) else getattr(obj, name, None)


def anthropic_usage(u: Any) -> Usage:
    """Usage from an Anthropic response: input_tokens is what came after the last cache breakpoint."""
    writes = _get(u, "cache_creation_input_tokens") or 0
    return Usage(input_tokens=_get(u, "input_tokens") or 0, output_tokens=_get(u, "output_tokens") or 0,
                 cache_read_tokens=_get(u, "cache_read_input_tokens") or 0, cache_write_tokens=writes,
                 cache_write_1h_tokens=min(writes, _get(_get(u, "cache_creation"), "ephemeral_1h_input_tokens") or 0))


def chat_usage(u: Any) -> Usage:
    """Usage from an OpenAI Chat Completions response: prompt_tokens includes the cached ones."""
    cached = _get(_get(u, "prompt_tokens_details"), "cached_tokens") or 0
    return Usage(input_tokens=(_get(u, "prompt_tokens") or 0) - cached,
                 output_tokens=_get(u, "completion_tokens") or 0, cache_read_tokens=cached)


def responses_usage(u: Any) -> Usage:
    """Usage from an OpenAI Responses response: input_tokens includes the cached ones."""
    cached = _get(_get(u, "input_tokens_details"), "cached_tokens") or 0
    return Usage(input_tokens=(_get(u, "input_tokens") or 0) - cached, output_tokens=_get(u, "output_tokens") or 0,
                 cache_read_tokens=cached)


class ResponseChain:
    """OpenAI Responses with `store`: the conversation's last stored response, so the next request sends only the
    messages that follow it (`previous_response_id`). Any other history (a compaction, a resume, a retry after a
    lost response) is sent whole."""

    def __init__(self) -> None:
        self._id: str | None = None
        self._first: Message | None = None
        self._last: Message | None = None
        self._count = 0

    def since(self, messages: list[Message]) -> tuple[str | None, int]:
        """(previous_response_id, index of the first message to send): (None, 0) unless `messages` continue the
        stored conversation (compared by identity: the loop appends the very reply it was given)."""
        n = self._count
        if self._id and len(messages) > n and messages[0] is self._first and messages[n - 1] is self._last:
            return self._id, n
        return None, 0

    def stored(self, response_id: str, messages: list[Message], reply: Message) -> None:
        self._id, self._first, self._last, self._count = response_id, (messages or [reply])[0], reply, len(messages) + 1

    def forget(self) -> None:
        self._id = None
