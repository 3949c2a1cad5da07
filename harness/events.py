"""Events: the append-only audit log of every run, one frozen pydantic model per kind.

The `type` field names the kind; `parse_event` turns a stored row back into its
model. The conversation itself lives here too: a `ConversationReset` holds the
messages a conversation (re)starts from, each later `MessageAdded` one more
message, so replaying a run never needs a transcript to be rewritten.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from loopwright.harness.messages import Message, Usage


class _Event(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class RunStarted(_Event):
    type: Literal["run_started"] = "run_started"
    task_id: int
    goal: str
    provider: str
    model: str
    worktree: str
    branch: str
    base_commit: str
    agent: str = "loopwright"  # or the external agent doing the run (provider and model are then loopwright's)


class ConversationReset(_Event):
    type: Literal["conversation_reset"] = "conversation_reset"
    reason: Literal["start", "compaction", "resume"]
    messages: list[Message]


class MessageAdded(_Event):
    type: Literal["message"] = "message"
    message: Message


class ModelCalled(_Event):
    type: Literal["model_called"] = "model_called"
    model: str
    usage: Usage
    cost_usd: float
    stop_reason: str
    duration_ms: float
    purpose: Literal["turn", "compaction", "reflection"] = "turn"
    saved_usd: float = 0.0  # what prompt caching saved on this call (negative: a write not yet earned back)


class Retrying(_Event):
    type: Literal["retrying"] = "retrying"
    attempt: int
    wait_seconds: float
    reason: str
    max_attempts: int | None = None  # the retry policy's (events stored before it was recorded have none)


class ToolStarted(_Event):
    type: Literal["tool_started"] = "tool_started"
    call_id: str
    name: str
    arguments: dict


class ToolFinished(_Event):
    type: Literal["tool_finished"] = "tool_finished"
    call_id: str
    name: str
    is_error: bool
    duration_ms: float
    preview: str


class CheckpointMade(_Event):
    type: Literal["checkpoint"] = "checkpoint"
    seq: int
    sha: str
    step: int
    message: str


class RolledBack(_Event):
    type: Literal["rolled_back"] = "rolled_back"
    to_sha: str
    to_seq: int
    requested_by: str


class Compacted(_Event):
    """The oldest turns were summarised into a hand-off note. The conversation the model is sent changes, so the
    next call starts a new prompt-cache prefix (it writes the cache again), on purpose."""

    type: Literal["compacted"] = "compacted"
    tokens_before: int
    tokens_after: int
    note: str


class CheckRan(_Event):
    type: Literal["check_ran"] = "check_ran"
    command: str
    passed: bool
    exit_code: int | None
    output_tail: str
    duration_ms: float


class Merged(_Event):
    type: Literal["merged"] = "merged"
    target_branch: str
    commit: str


class MergeConflict(_Event):
    type: Literal["merge_conflict"] = "merge_conflict"
    target_branch: str
    detail: str


class StatusChanged(_Event):
    type: Literal["status"] = "status"
    status: str
    reason: str = ""


class StopRequested(_Event):
    """A pause or kill reached the process running the run: it stops at its next safe point (after the tool call
    running now), or at once when `interrupt` (the command that call runs is ended)."""

    type: Literal["stop_requested"] = "stop_requested"
    status: str  # what it stops as: paused or killed
    reason: str
    interrupt: bool = False


class Notice(_Event):
    """Something the agent is told at its next model boundary (a user message, a rollback)."""

    type: Literal["notice"] = "notice"
    text: str


class SkillsChanged(_Event):
    """Installed skills changed while the run was going (hot reload); the agent was told at its next turn, in the
    conversation: the system prompt and tools (the cached prompt prefix) stay as they were until the run resumes."""

    type: Literal["skills_changed"] = "skills_changed"
    added: list[str] = []
    removed: list[str] = []
    updated: list[str] = []


class SkillsLeftOut(_Event):
    """Skills that did not fit the catalog's token budget in the system prompt."""

    type: Literal["skills_left_out"] = "skills_left_out"
    names: list[str]
    budget_tokens: int


class TaskUpdated(_Event):
    """A person changed a task via the daemon (priority, cancel, merge or keep policy); run_id is NULL or its run."""

    type: Literal["task_updated"] = "task_updated"
    task_id: int
    change: str
    by: str = "supervisor"


class LessonsRecalled(_Event):
    """The lessons put into the task at its start (refs), or a placebo section of the same length."""

    type: Literal["lessons_recalled"] = "lessons_recalled"
    refs: list[str]
    tokens: int
    placebo: bool = False


class Reflected(_Event):
    """Reflection after the run: credit given, and the model's deltas applied, rejected (nothing changed) or skipped."""

    type: Literal["reflected"] = "reflected"
    status: Literal["applied", "rejected", "skipped", "failed"]
    reason: str = ""
    changes: list[str] = []
    problems: list[str] = []
    credited: list[str] = []
    reply: str = ""


class SandboxChosen(_Event):
    """The sandbox the run's commands go through (at its start and every resume); `warning` when there is none."""

    type: Literal["sandbox"] = "sandbox"
    mode: str  # bwrap | none
    detail: str = ""  # e.g. "bubblewrap 0.11.0, network off"
    warning: str | None = None


class NetworkRefused(_Event):
    """A command of the run tried to reach a host not on [sandbox] allow_hosts (network "allow"): refused."""

    type: Literal["network_refused"] = "network_refused"
    host: str
    port: int


class ModelStreaming(_Event):
    """An answer streaming in: about how many tokens have arrived so far. Never stored (not an `Event`): the loop
    gives it to the store's listeners (`loopwright run`'s progress) at most every few tenths of a second, and
    says the same in the run's last action (the TUI)."""

    type: Literal["model_streaming"] = "model_streaming"
    tokens: int


Event = Annotated[
    RunStarted | ConversationReset | MessageAdded | ModelCalled | Retrying | ToolStarted | ToolFinished
    | CheckpointMade | RolledBack | Compacted | CheckRan | Merged | MergeConflict | StatusChanged | StopRequested
    | Notice | SkillsChanged | SkillsLeftOut | LessonsRecalled | Reflected | TaskUpdated | SandboxChosen
    | NetworkRefused,
    Field(discriminator="type"),
]

_adapter: TypeAdapter = TypeAdapter(Event)


def parse_event(data: str | bytes) -> BaseModel:
    """The event model for a stored JSON payload."""
    return _adapter.validate_json(data)
