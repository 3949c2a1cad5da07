"""What the agent loop needs of the store: the `RunLog` protocol.

The loop reads its run's counters, conversation and scratch pad, and writes
events, model-call records, progress, checkpoints and command results. The
store (`memory.store.Store`) satisfies this protocol as it is; so does the
store proxy on a Ray worker (`runtime.backends.ray.store_proxy`), which batches
the writes to the head. Nothing here imports the store: the harness sits below it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol

from pydantic import BaseModel

from loopwright.harness.events import ModelCalled
from loopwright.harness.messages import Message
from loopwright.harness.tools import Scratchpad


class RunCounters(Protocol):
    """A run's progress and spend as the store keeps them (`memory.store.Run`)."""

    @property
    def step(self) -> int: ...
    @property
    def active_seconds(self) -> float: ...
    @property
    def model_calls(self) -> int: ...
    @property
    def tokens(self) -> int: ...
    @property
    def cost_usd(self) -> float: ...
    @property
    def last_action(self) -> str: ...


class RunCommand(Protocol):
    """A command for a run (`memory.store.Command`): notify, rollback, pause or kill, with its arguments."""

    @property
    def id(self) -> int: ...
    @property
    def kind(self) -> str: ...
    @property
    def args(self) -> dict: ...


class RunLog(Protocol):
    """The part of the store an `AgentLoop` uses (see the module docstring)."""

    listeners: list[Callable[[str | None, BaseModel], None]]  # live displays: also told of what is not stored

    def run(self, run_id: str) -> RunCounters: ...
    def conversation(self, run_id: str) -> list[Message]: ...
    def scratchpad(self, run_id: str) -> Scratchpad: ...
    def append(self, run_id: str | None, event: BaseModel) -> int: ...
    def record_model_call(self, run_id: str, call: ModelCalled, message: Message | None,
                          budget_day: str | None = None, progress: dict[str, Any] | None = None) -> None: ...
    def update_run(self, run_id: str, **fields: Any) -> None: ...
    def add_checkpoint(self, run_id: str, *, sha: str, step: int, message: str) -> object: ...
    def take_commands(self, run_id: str) -> Sequence[RunCommand]: ...
    def finish_command(self, command_id: int, *, ok: bool, result: str) -> None: ...
