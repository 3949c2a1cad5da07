"""The scripted model: replays a file of assistant turns, for tests and the offline demo.

It is not a model and says so: its provider name is "scripted". It fails loudly
when the run asks for more turns than the script has (`ScriptError`), and the
runner fails the run when it ends with turns unused (`unused`).
"""

from __future__ import annotations

from loopwright.harness.messages import Message, ModelResponse, ToolSpec
from loopwright.harness.models import ModelAdapter
from loopwright.harness.script import Script, ScriptError, ScriptTurn


class ScriptedModel(ModelAdapter):
    provider = "scripted"

    def __init__(self, script: Script, *, start_at: int = 0, model: str = "scripted"):
        self.turns = [t for t in script.turns if isinstance(t, ScriptTurn)]  # faults are for the loopback server
        self.position = start_at
        self.model = model

    async def complete(
        self, *, system: str, messages: list[Message], tools: list[ToolSpec], max_tokens: int
    ) -> ModelResponse:
        if self.position >= len(self.turns):
            raise ScriptError(
                f"the run asked for model turn {self.position + 1} but the script has only {len(self.turns)}"
            )
        turn = self.turns[self.position].played(self.position, Script.request_text(system, messages))
        Script.check_expect(self.position, turn, messages)
        self.position += 1
        return turn.response(self.position - 1, self.model)

    @property
    def unused(self) -> int:
        return max(0, len(self.turns) - self.position)
