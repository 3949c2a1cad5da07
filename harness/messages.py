"""The internal message model every adapter translates to and from.

A conversation is a list of `Message`s (role user or assistant) whose content is
a list of blocks: text, tool calls (assistant) and tool results (user). A model
call returns a `ModelResponse`: the assistant message, token usage and the stop
reason. All of it is pydantic, frozen, and serialises to JSON for the event log.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class TextBlock(_Frozen):
    type: Literal["text"] = "text"
    text: str


class ToolCall(_Frozen):
    """A tool call the model asked for.

    `parse_error` is set when the provider sent arguments that are not valid
    JSON; the loop answers such a call with an error result instead of running it.
    """

    type: Literal["tool_call"] = "tool_call"
    id: str
    name: str
    arguments: dict[str, Any] = Field(default_factory=dict)
    parse_error: str | None = None


def gist_argument(arguments: dict[str, Any]) -> str:
    """The argument that says what a tool call is about (its command, path, pattern...), first line only."""
    for key in ("command", "path", "pattern", "message", "summary", "action"):
        if key in arguments:
            return next(iter(str(arguments[key]).splitlines()), "")[:70]
    return ""


class ToolResult(_Frozen):
    type: Literal["tool_result"] = "tool_result"
    tool_call_id: str
    content: str
    is_error: bool = False


Block = Annotated[TextBlock | ToolCall | ToolResult, Field(discriminator="type")]


class Message(_Frozen):
    role: Literal["user", "assistant"]
    content: list[Block]

    @classmethod
    def user(cls, text: str) -> Message:
        return cls(role="user", content=[TextBlock(text=text)])

    @property
    def text(self) -> str:
        return "\n".join(b.text for b in self.content if isinstance(b, TextBlock))

    @property
    def tool_calls(self) -> list[ToolCall]:
        return [b for b in self.content if isinstance(b, ToolCall)]

    @property
    def tool_results(self) -> list[ToolResult]:
        return [b for b in self.content if isinstance(b, ToolResult)]


class Usage(_Frozen):
    """Tokens of one call. Input is split as the provider bills it: uncached, read from the prompt cache, written to
    it (`cache_write_1h_tokens` of those written with the one-hour lifetime, billed higher)."""

    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    cache_write_1h_tokens: int = 0

    @property
    def total(self) -> int:
        return self.input_tokens + self.output_tokens + self.cache_read_tokens + self.cache_write_tokens


StopReason = Literal["end_turn", "tool_use", "max_tokens", "stop_sequence", "refusal", "other"]


class ModelResponse(_Frozen):
    message: Message
    usage: Usage = Usage()
    stop_reason: StopReason = "end_turn"
    model: str = ""


class ToolSpec(_Frozen):
    """What the model sees of a tool: its name, description and JSON schema."""

    name: str
    description: str
    input_schema: dict[str, Any]
