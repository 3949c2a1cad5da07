"""The agent's memory tools: `remember` writes a project lesson, `recall` searches the lessons.

Both work on the run's `RunMemory` (ctx.memory): lessons remembered carry the
run and task as provenance; lessons recalled are recorded as shown to the run,
so its outcome credits them like the lessons recalled at task start.
"""

from __future__ import annotations

from pydantic import Field

from loopwright.harness.statuses import RunStatus
from loopwright.harness.tools import Tool, ToolArgs, ToolContext, ToolError, ToolOutcome
from loopwright.memory.lesson_model import Lesson, LessonError


class RememberArgs(ToolArgs):
    text: str = Field(description="the lesson: one or two short sentences saying what to do or avoid, and when; "
                                  "specific to this project and useful to a later run")
    tags: list[str] = Field(default_factory=list, description="a few short topic tags, e.g. ['pytest', 'migrations']")


class RecallArgs(ToolArgs):
    query: str = Field(description="what you are about to do or the problem you hit, in a few words")
    limit: int = Field(default=5, ge=1, le=20, description="at most this many lessons")


def _memory(ctx: ToolContext):
    memory = ctx.memory
    if memory is None or getattr(memory, "lessons", None) is None:
        raise ToolError("memory is off for this run")
    return memory


def _record(lesson: Lesson) -> str:
    return f"helpful {lesson.helpful}, harmful {lesson.harmful}"


class Remember(Tool):
    name, args = "remember", RememberArgs
    description = ("Save a lesson for later runs of this project: a short, actionable insight you learned the hard "
                   "way (a command that works, a trap to avoid, where something lives). A near-duplicate of an "
                   "existing lesson merges into it. Not for notes about this run only: use the scratchpad.")

    async def run(self, a: RememberArgs, ctx: ToolContext) -> ToolOutcome:
        memory = _memory(ctx)
        try:
            lesson, merged = memory.lessons.project.add(a.text, a.tags, run_id=memory.run_id, task_id=memory.task_id,
                                                        outcome=RunStatus.RUNNING, by=memory.run_id)
        except LessonError as e:
            raise ToolError(str(e)) from None
        if merged:
            return ToolOutcome(f"merged into existing lesson [{lesson.ref}] (a near-duplicate), which now reads: "
                               f"{lesson.text}")
        return ToolOutcome(f"remembered as lesson [{lesson.ref}]")


class Recall(Tool):
    name, args = "recall", RecallArgs
    description = ("Search the lessons earlier runs learned (this project's and your global ones), best first, "
                   "with their record: how often they were shown to runs that passed (helpful) or failed (harmful).")

    async def run(self, a: RecallArgs, ctx: ToolContext) -> ToolOutcome:
        memory = _memory(ctx)
        found = memory.lessons.recall(a.query, token_budget=4000, limit=a.limit)
        if not found:
            return ToolOutcome(f"no lessons match {a.query!r}")
        memory.lessons.record_shown(memory.run_id, found)
        lines = [f"- [{x.ref}] {x.text} ({_record(x)})" for x in found]
        return ToolOutcome(f"{len(found)} lesson(s), best first:\n" + "\n".join(lines))


MEMORY_TOOLS: tuple[type[Tool], ...] = (Remember, Recall)
