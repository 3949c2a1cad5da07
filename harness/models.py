"""The model adapter contract and the errors a model call can end in.

Every adapter (Anthropic Messages, OpenAI Chat Completions, OpenAI Responses,
the scripted model) turns the internal conversation into one provider request
and the answer back into a `ModelResponse`. Retries live in `harness.retry`;
adapters raise the SDK's errors untouched or the errors below.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from loopwright.errors import LoopwrightError
from loopwright.harness.messages import Message, ModelResponse, ToolSpec

W = TypeVar("W")


class ModelError(LoopwrightError):
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

    Between compactions the conversation only grows, so when the first and the
    last cached messages are still in place the cached prefix is reused as is
    (O(1) to check); otherwise (a compaction, a resume) it is rebuilt.
    """

    def __init__(self, convert: Callable[[Message], W]):
        self._convert = convert
        self._messages: list[Message] = []
        self._wires: list[W] = []

    def wire(self, messages: list[Message]) -> list[W]:
        n = len(self._messages)
        if not (n and len(messages) >= n and messages[0] is self._messages[0] and messages[n - 1] is self._messages[-1]):
            self._messages, self._wires, n = [], [], 0
        for m in messages[n:]:
            self._messages.append(m)
            self._wires.append(self._convert(m))
        return list(self._wires)


def flatten(wires: list[Any]) -> list[Any]:
    """Join per-message lists into one list (OpenAI formats map one message to several items)."""
    out: list[Any] = []
    for w in wires:
        out.extend(w)
    return out
