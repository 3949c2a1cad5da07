"""The model adapter contract and the errors a model call can end in.

Every adapter (Anthropic Messages, OpenAI Chat Completions, OpenAI Responses,
the scripted model) turns the internal conversation into one provider request
and the answer back into a `ModelResponse`. Retries live in `harness.retry`;
adapters raise the SDK's errors untouched or the errors below.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, Callable, Generic, TypeVar

from .messages import Message, ModelResponse, ToolSpec

W = TypeVar("W")


class ModelError(Exception):
    """A model call failed in a way the run has to react to."""


class ModelUnavailable(ModelError):
    """Retries ran out (rate limits, 5xx, overload, connection trouble): the run pauses."""


class FatalModelError(ModelError):
    """Retrying cannot help (bad key, bad request, unknown model): the run fails."""


class ModelAdapter(ABC):
    """One provider and model. `complete` makes exactly one request (no retries)."""

    provider: str = ""
    model: str = ""

    @abstractmethod
    async def complete(
        self, *, system: str, messages: list[Message], tools: list[ToolSpec], max_tokens: int
    ) -> ModelResponse: ...

    async def aclose(self) -> None:
        """Release the HTTP client, if any."""


class WireCache(Generic[W]):
    """Remembers each message's wire form so a long conversation is not re-translated every turn.

    The conversation only grows between compactions, so the cache walks the
    list by identity and converts only messages it has not seen at that position.
    """

    def __init__(self, convert: Callable[[Message], W]):
        self._convert = convert
        self._pairs: list[tuple[Message, W]] = []

    def wire(self, messages: list[Message]) -> list[W]:
        pairs = self._pairs
        i = 0
        n = min(len(pairs), len(messages))
        while i < n and pairs[i][0] is messages[i]:
            i += 1
        del pairs[i:]
        for m in messages[i:]:
            pairs.append((m, self._convert(m)))
        return [w for _, w in pairs]


def flatten(wires: list[Any]) -> list[Any]:
    """Join per-message lists into one list (OpenAI formats map one message to several items)."""
    out: list[Any] = []
    for w in wires:
        out.extend(w)
    return out
