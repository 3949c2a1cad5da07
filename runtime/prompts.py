"""What the agent is told: the system prompt, the task text, and the placebo that stands in for lessons."""

from __future__ import annotations

from loopwright.memory.store import Task

SYSTEM_PROMPT = """\
You are a coding agent run by loopwright. You work alone and autonomously in a git worktree of the user's \
repository (your current directory for every tool). Inspect before you change things; make focused changes; \
run the tests yourself. Every step that changes files is checkpointed automatically, and a person may roll \
your worktree back: if you are told so, re-read the files. Keep short notes in the scratch pad (tool \
`scratchpad`): it survives when your context is summarised. Register files worth keeping for people (a plan, a \
report, a figure) with `artifact`. When the task is done, call `finish` with a short summary. You do not decide \
whether the work is accepted: the task's acceptance check does, and if it fails you will see its output and \
continue."""

MEMORY_PROMPT = """ Lessons from earlier runs in this project may be listed in your task; `recall` finds more. When \
you learn something a later task should know, `remember` it in one short, specific sentence."""


def task_text(task: Task, check: str | None, *, done: str = "call finish") -> str:
    """The task as the agent is given it; `done`: how it says it is done (an external agent: it stops)."""
    parts = [f"# Task {task.id}: {task.title}", "", task.goal]
    if check:
        parts += ["", f"Acceptance check (run in the worktree when you {done}): `{check}`"]
    else:
        parts += ["", "No acceptance check is configured: when you finish, the branch is kept for a person to review."]
    return "\n".join(parts)


def placebo_text(length: int) -> str:
    """Neutral filler of `length` characters standing in for recalled lessons (the placebo arm of an eval)."""
    line = ("## Notes (placebo: neutral text of the same length as recalled lessons would be)\n"
            "- Work carefully and check your changes.\n")
    return (line * (length // len(line) + 1))[:length]
