"""Scripts of assistant turns, shared by the scripted model and the loopback API server.

A script is a JSON file: `{"turns": [...]}`. Each entry is either a turn the
"model" answers with, or (for the loopback server) a fault injected into one
HTTP response:

    {"text": "Reading the tests first.",
     "tool_calls": [{"name": "read_file", "arguments": {"path": "test_calc.py"}}],
     "usage": {"input_tokens": 1200, "output_tokens": 40},
     "expect": "FAILED"}
    {"fault": "429", "retry_after": 0.2}

An entry with a `fault` key is a fault, any other a turn; a mistake is reported
against the kind the entry was meant as, unknown keys by name.

`expect`, when given, must occur in the last user message the model was sent
(a tool result or a notice); a script that drifts from the run fails loudly.

`when` makes a turn depend on what the "model" was sent: the turn is played
when its text occurs anywhere in the request (system prompt and messages),
else its `otherwise` turn is (e.g. a recalled lesson changes what happens —
how `loopwright eval` shows learning with no model). Either way the slot is
one model call.

`reasoning` is a summary of the model's reasoning that the loopback server sends
before the turn's answer as OpenAI's Responses API does (a reasoning item: how
Codex shows it); the other formats and the scripted model leave it out.

`reflections` are the replies to reflection calls after runs (raw text, or an
object sent as JSON), in order; without them reflection is skipped.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, ValidationError
from pydantic_core import ErrorDetails

from loopwright.harness.messages import Message, ModelResponse, TextBlock, ToolCall, Usage
from loopwright.harness.models import FatalModelError

# Reflection calls carry this in their system prompt; the loopback server answers them from `reflections`.
REFLECTION_MARKER = "[loopwright reflection]"


class ScriptError(FatalModelError):
    """The run and its script disagree: too few turns, unused turns, or an unmet `expect`."""


class ScriptToolCall(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    arguments: dict[str, Any] = Field(default_factory=dict)
    raw_arguments: str | None = None  # sent verbatim by the loopback server (malformed-JSON faults)


class ScriptTurn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    text: str = ""
    tool_calls: list[ScriptToolCall] = Field(default_factory=list)
    usage: Usage = Usage(input_tokens=100, output_tokens=20)
    expect: str | None = None
    stop_reason: Literal["end_turn", "tool_use", "max_tokens"] | None = None
    when: str | None = None
    otherwise: ScriptTurn | None = None
    reasoning: str | None = None  # a reasoning summary before the answer (the loopback's Responses answers only)

    def played(self, index: int, request_text: str) -> ScriptTurn:
        """The turn this slot plays for a request: itself, or its `otherwise` when `when` is not in the request."""
        if self.when is None or self.when in request_text:
            return self
        if self.otherwise is None:
            raise ScriptError(f"scripted turn {index + 1} plays only when {self.when!r} is in the request, "
                              f"and it has no `otherwise`")
        return self.otherwise.played(index, request_text)

    def response(self, index: int, model: str) -> ModelResponse:
        """This turn as an internal response; tool call ids are stable per turn index."""
        content: list = []
        if self.text:
            content.append(TextBlock(text=self.text))
        for j, call in enumerate(self.tool_calls):
            content.append(ToolCall(id=f"call_{index}_{j}", name=call.name, arguments=call.arguments))
        if not content:
            content.append(TextBlock(text="(empty scripted turn)"))
        stop = self.stop_reason or ("tool_use" if self.tool_calls else "end_turn")
        return ModelResponse(message=Message(role="assistant", content=content), usage=self.usage,
                             stop_reason=stop, model=model)


FaultKind = Literal["429", "500", "529", "401", "reset", "slow", "truncated", "malformed_tool_json", "billing",
                    "context_overflow", "empty", "stall", "cut", "trickle"]


class Fault(BaseModel):
    model_config = ConfigDict(extra="forbid")
    fault: FaultKind
    retry_after: float | None = None  # seconds, for 429/529
    reset_after: float | None = None  # seconds, for 429: sent only as the provider's rate-limit reset header
    delay: float = 0.0  # seconds: "slow" delays the answer, "stall" pauses its stream, "trickle" waits per byte


def _entry_kind(entry: Any) -> str:
    """Which kind an entry is meant as (the union's discriminator): "fault" when it has a `fault` key, else "turn"."""
    return "fault" if isinstance(entry, Fault) or (isinstance(entry, dict) and "fault" in entry) else "turn"


Entry = Annotated[Annotated[ScriptTurn, Tag("turn")] | Annotated[Fault, Tag("fault")], Discriminator(_entry_kind)]


class Script(BaseModel):
    model_config = ConfigDict(extra="forbid")
    turns: list[Entry]
    reflections: list[str | dict[str, Any]] = Field(default_factory=list)

    def reflection_reply(self, index: int) -> str | None:
        """The reply to the `index`-th reflection call, as text; None when the script has no more."""
        if index >= len(self.reflections):
            return None
        reply = self.reflections[index]
        return reply if isinstance(reply, str) else json.dumps(reply)

    @classmethod
    def load(cls, path: str | Path) -> Script:
        p = Path(path)
        try:
            data = json.loads(p.read_text())
        except FileNotFoundError:
            raise ScriptError(f"script file not found: {p}") from None
        except json.JSONDecodeError as e:
            raise ScriptError(f"script {p} is not valid JSON: {e.msg} at line {e.lineno}") from None
        return cls.parse(data, str(p))

    @classmethod
    def parse(cls, data: Any, origin: str = "script") -> Script:
        if isinstance(data, list):
            data = {"turns": data}
        try:
            return cls.model_validate(data)
        except ValidationError as e:
            errors = e.errors()
            first = next((err for err in errors if err["type"] == "extra_forbidden"), errors[0])  # a typo first
            raise ScriptError(f"{origin}: {_problem(first)}") from None

    @staticmethod
    def request_text(system: str, messages: list[Message]) -> str:
        """Everything a request holds as text, for `when`."""
        parts = [system]
        for m in messages:
            parts.append(m.text)
            parts += [r.content for r in m.tool_results]
        return "\n".join(parts)

    @staticmethod
    def check_expect(index: int, turn: ScriptTurn, messages: list[Message]) -> None:
        if turn.expect is None:
            return
        last = next((m for m in reversed(messages) if m.role == "user"), None)
        seen = ""
        if last is not None:
            seen = last.text + "\n" + "\n".join(r.content for r in last.tool_results)
        if turn.expect not in seen:
            raise ScriptError(
                f"scripted turn {index + 1} expects {turn.expect!r} in the last message, got: {seen[:300]!r}"
            )


def _problem(err: ErrorDetails) -> str:
    """One validation error as `where: what`, without the entry kind pydantic puts in `where` (`turns.0.turn...`);
    an unknown key is named with the keys allowed beside it."""
    loc = list(err["loc"])
    kind = loc.pop(2) if loc[:1] == ["turns"] and len(loc) > 2 else None
    if err["type"] != "extra_forbidden":
        return f"{'.'.join(map(str, loc)) or 'script'}: {err['msg']}"
    *parent, key = loc
    model: type[BaseModel] = Script
    for part in parent:
        if part == "turns" and model is Script:
            model = Fault if kind == "fault" else ScriptTurn
        elif isinstance(part, str):
            model = _model_in(model.model_fields[part].annotation)
    where = ".".join(map(str, parent)) or "script"
    return f"{where}: unknown key {key!r} (allowed: {', '.join(model.model_fields)})"


def _model_in(annotation: Any) -> Any:
    """The model a field holds: `ScriptToolCall` for `list[ScriptToolCall]`, `ScriptTurn` for `ScriptTurn | None`."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    return next(filter(None, map(_model_in, get_args(annotation))), None)
