"""The model adapter contract, the errors a model call can end in, and what a model's tokens cost.

Every adapter (Anthropic Messages, OpenAI Chat Completions, OpenAI Responses,
the scripted model) turns the internal conversation into one provider request
and the answer back into a `ModelResponse`. Retries live in `harness.retry`;
adapters raise the SDK's errors untouched or the errors below. `ModelInfo` (a
model's prices and context window) is a section of the project config
(`[models."name"]`), defined here because the loop prices every call with it.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Callable
from contextvars import ContextVar
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from loopwright.errors import LoopwrightError
from loopwright.harness.messages import Message, ModelResponse, ToolSpec, Usage

W = TypeVar("W")


class ModelError(LoopwrightError):
    """A model call failed in a way the run has to react to."""


class ModelUnavailable(ModelError):
    """Retries ran out (rate limits, 5xx, overload, connection trouble, empty answers): the run pauses."""


class NeedsAttention(ModelUnavailable):
    """Retrying cannot help until a person acts (a refused key, billing): the run pauses with this as its reason."""


class ContextOverflow(NeedsAttention):
    """The request does not fit the model's context window: the loop compacts and tries once more, else pauses."""


class FatalModelError(ModelError):
    """Retrying cannot help (bad request, unknown model): the run fails."""


class StreamInterrupted(ModelError):
    """A streamed answer stopped short (stalled, past the call's deadline, cut mid-event, or a passing error
    event): nothing of it is used, and it is retried like a connection error. `reason` is the short retry reason."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


class ModelInfo(BaseModel):
    """Prices in USD per million tokens, and the context window in tokens."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)  # as every section of the config

    input_usd_per_mtok: float = Field(ge=0)
    output_usd_per_mtok: float = Field(ge=0)
    cache_read_usd_per_mtok: float | None = Field(default=None, ge=0)
    cache_write_usd_per_mtok: float | None = Field(default=None, ge=0)
    cache_write_1h_usd_per_mtok: float | None = Field(default=None, ge=0)
    context_window: int = Field(default=200_000, gt=1000)


def _cache_prices(info: ModelInfo) -> tuple[float, float, float]:
    """USD per million tokens read from the cache, written with the 5-minute and with the 1-hour lifetime (an
    unpriced one at the input price, or at the 5-minute write price for 1h)."""
    inp = info.input_usd_per_mtok
    read = info.cache_read_usd_per_mtok if info.cache_read_usd_per_mtok is not None else inp
    write = info.cache_write_usd_per_mtok if info.cache_write_usd_per_mtok is not None else inp
    long = info.cache_write_1h_usd_per_mtok if info.cache_write_1h_usd_per_mtok is not None else write
    return read, write, long


def cost_usd(usage: Usage, info: ModelInfo) -> float:
    read, write, long = _cache_prices(info)
    short = usage.cache_write_tokens - usage.cache_write_1h_tokens
    return (usage.input_tokens * info.input_usd_per_mtok + usage.output_tokens * info.output_usd_per_mtok
            + usage.cache_read_tokens * read + short * write + usage.cache_write_1h_tokens * long) / 1e6


def cache_saved_usd(usage: Usage, info: ModelInfo) -> float:
    """What prompt caching saved on a call against sending the same input uncached (negative when a write's
    premium was not earned back)."""
    uncached = (usage.input_tokens + usage.cache_read_tokens + usage.cache_write_tokens) * info.input_usd_per_mtok
    return uncached / 1e6 - (cost_usd(usage, info) - usage.output_tokens * info.output_usd_per_mtok / 1e6)


STREAMED: ContextVar[Callable[[int], None] | None] = ContextVar("loopwright_streamed", default=None)
"""Set by the loop around a model call: told, as an answer streams in, how many characters of it (text and tool
arguments) have arrived so far; a retry starts again from 0."""


class ModelAdapter(ABC):
    """One provider and model. `complete` makes exactly one request (no retries)."""

    provider: str = ""
    model: str = ""
    cache_key: str | None = None  # the run whose calls share a prompt cache (prompt_cache_key): the loop sets it

    @abstractmethod
    async def complete(
        self, *, system: str, messages: list[Message], tools: list[ToolSpec], max_tokens: int
    ) -> ModelResponse: ...

    async def aclose(self) -> None:  # noqa: B027 — optional: an adapter without a client has nothing to release
        """Release the HTTP client, if any."""


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


class WireCache(Generic[W]):
    """Remembers each message's wire form, and its JSON, so a long conversation is not re-translated or
    re-encoded every turn.

    Between compactions the conversation only grows, so when the first and the
    last cached messages are still in place the cached prefix is reused as is
    (O(1) to check); otherwise (a compaction, a resume) it is rebuilt.
    """

    def __init__(self, convert: Callable[[Message], W]):
        self._convert = convert
        self._messages: list[Message] = []
        self._wires: list[W] = []
        self._json: dict[int, str] = {}  # id -> JSON of each wire item held in _wires (held: its id stays its own)

    def wire(self, messages: list[Message]) -> list[W]:
        n = len(self._messages)
        if not (n and len(messages) >= n and messages[0] is self._messages[0]
                and messages[n - 1] is self._messages[-1]):
            self._messages, self._wires, self._json, n = [], [], {}, 0
        for m in messages[n:]:
            self._messages.append(m)
            w = self._convert(m)
            self._wires.append(w)
            for item in w if isinstance(w, list) else [w]:  # OpenAI's formats: one message, several items
                self._json[id(item)] = _dumps(item)
        return list(self._wires)

    def dumps(self, body: dict) -> bytes:
        """`body` as compact UTF-8 JSON, the items of its lists that this cache holds (its messages, as `wire` gave
        them) taken as they were encoded once, not encoded again every turn; anything else (a message marked
        with a cache breakpoint is a copy) is encoded now."""
        fields = []
        for key, value in body.items():
            if isinstance(value, list):
                text = "[" + ",".join(self._json.get(id(item)) or _dumps(item) for item in value) + "]"
            else:
                text = _dumps(value)
            fields.append(f"{_dumps(key)}:{text}")
        return ("{" + ",".join(fields) + "}").encode()


def flatten(wires: list[Any]) -> list[Any]:
    """Join per-message lists into one list (OpenAI formats map one message to several items)."""
    out: list[Any] = []
    for w in wires:
        out.extend(w)
    return out
