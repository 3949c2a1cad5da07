"""The agent loop's seams, without the store or Ray: a run log kept in memory, and a call permit, a command
source and a checkpoint sink of the test's own. What the ray backend relies on is checked here in the fast suite."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path

from support import call, git, turn

from loopwright.harness.budget import BudgetConfig, BudgetExceeded
from loopwright.harness.loop import AgentLoop, FinishVerdict, LoopSettings
from loopwright.harness.models import ModelInfo
from loopwright.harness.retry import RetryPolicy
from loopwright.harness.script import Script
from loopwright.harness.scripted import ScriptedModel
from loopwright.harness.tools import STANDARD_TOOLS, Toolbox
from loopwright.workspaces.git import Workspace


@dataclass
class Counters:
    step: int = 0
    active_seconds: float = 0.0
    model_calls: int = 0
    tokens: int = 0
    cost_usd: float = 0.0
    last_action: str = ""


@dataclass
class Pad:
    text: str = ""

    def read(self) -> str:
        return self.text

    def append(self, text: str) -> None:
        self.text = f"{self.text}\n{text}" if self.text else text

    def replace(self, text: str) -> None:
        self.text = text


@dataclass(frozen=True)
class Cmd:
    id: int
    kind: str
    args: dict


@dataclass
class MemoryLog:
    """A `RunLog` in memory: what the loop needs of the store, and nothing of memory/."""

    counters: Counters = field(default_factory=Counters)
    pad: Pad = field(default_factory=Pad)
    events: list = field(default_factory=list)
    days: list = field(default_factory=list)
    checkpoints: list = field(default_factory=list)

    def run(self, run_id: str) -> Counters:
        return self.counters

    def conversation(self, run_id: str) -> list:
        return []

    def scratchpad(self, run_id: str) -> Pad:
        return self.pad

    def append(self, run_id, event) -> int:
        self.events.append(event)
        return len(self.events)

    def record_model_call(self, run_id, call, message, budget_day=None, progress=None) -> None:
        self.update_run(run_id, **(progress or {}))
        self.counters.model_calls += 1
        self.days.append(budget_day)
        self.events.append(call)

    def update_run(self, run_id, **fields) -> None:
        for k, v in fields.items():
            setattr(self.counters, k, v)

    def add_checkpoint(self, run_id, *, sha, step, message) -> None:
        self.checkpoints.append((sha, step, message))

    def take_commands(self, run_id) -> list:
        raise AssertionError("the loop must take commands from its command source")

    def finish_command(self, command_id, *, ok, result) -> None:
        raise AssertionError("the loop must report commands to its command source")


class Permit:
    def __init__(self, refuse_at: int | None = None):
        self.checks: list[float] = []
        self.refuse_at = refuse_at
        self.quota_gate = None

    async def check(self, active_seconds) -> None:
        self.checks.append(active_seconds())
        if len(self.checks) == self.refuse_at:
            raise BudgetExceeded("the head says no")

    def day(self) -> str:
        return "2030-01-01"


class Commands:
    def __init__(self, *batches: list[Cmd]):
        self.batches, self.finished = list(batches), []

    async def take(self) -> list[Cmd]:
        return self.batches.pop(0) if self.batches else []

    def finish(self, command_id: int, *, ok: bool, result: str) -> None:
        self.finished.append((command_id, ok, result))


class Sink:
    def __init__(self, ws: Workspace):
        self.ws, self.made, self.resets = ws, [], []

    def checkpoint(self, message: str, *, step: int):
        cp = self.ws.checkpoint(message, step=step)
        self.made.append(cp)
        return cp

    def reset_to(self, sha: str) -> None:
        self.ws.reset_to(sha)
        self.resets.append(sha)


def make_loop(repo: Path, tmp_path: Path, turns: list[dict], **seams) -> tuple[AgentLoop, MemoryLog, Sink]:
    ws = Workspace.create(repo, "r1", target_branch="main", worktrees_dir=tmp_path / "wt")
    log, sink = MemoryLog(), Sink(ws)
    settings = LoopSettings(system_prompt="s", task_text="t", max_output_tokens=100,
                            model_info=ModelInfo(input_usd_per_mtok=0, output_usd_per_mtok=0), budget=BudgetConfig(),
                            retry=RetryPolicy())

    async def accept(summary: str) -> FinishVerdict:
        return FinishVerdict("succeeded", "accepted", reason=summary)

    loop = AgentLoop(store=log, run_id="r1", adapter=ScriptedModel(Script.model_validate({"turns": turns})),
                     toolbox=Toolbox([cls() for cls in STANDARD_TOOLS]), workspace=ws, settings=settings,
                     on_finish=accept, checkpoints=sink, **seams)
    loop.start()
    return loop, log, sink


def test_the_loop_runs_on_its_seams_alone(repo, tmp_path):
    permit = Permit()
    commands = Commands([Cmd(1, "notify", {"text": "a message from the head"})])
    turns = [turn(call("write_file", path="new.txt", content="hello\n")),
             turn(call("finish", summary="done"), expect="a message from the head")]
    loop, log, sink = make_loop(repo, tmp_path, turns, permit=permit, commands=commands)
    outcome = asyncio.run(loop.run())
    assert (outcome.status, outcome.reason) == ("succeeded", "done")
    assert len(permit.checks) == 2 and log.days == ["2030-01-01", "2030-01-01"]  # one check per model call
    assert commands.finished == [(1, True, "applied")]
    assert any(getattr(e, "text", None) == "a message from the head" for e in log.events)
    assert len(sink.made) == 1 and sink.made[0] is not None and log.checkpoints[0][0] == sink.made[0].sha


def test_a_permit_that_refuses_ends_the_run_as_out_of_budget(repo, tmp_path):
    turns = [turn(call("write_file", path="new.txt", content="hello\n")), turn(call("finish", summary="done"))]
    loop, log, _ = make_loop(repo, tmp_path, turns, permit=Permit(refuse_at=2), commands=Commands())
    outcome = asyncio.run(loop.run())
    assert (outcome.status, outcome.reason, outcome.again) == ("budget_exceeded", "the head says no", True)
    assert log.counters.model_calls == 1


def test_a_rollback_command_goes_to_the_checkpoint_sink(repo, tmp_path):
    base = git(repo, "rev-parse", "main")
    commands = Commands([Cmd(7, "rollback", {"sha": base, "seq": 0})])
    turns = [turn(call("write_file", path="new.txt", content="hello\n")),
             turn(call("finish", summary="done"), expect="rolled back")]
    loop, log, sink = make_loop(repo, tmp_path, turns, permit=Permit(), commands=commands)
    outcome = asyncio.run(loop.run())
    assert outcome.status == "succeeded" and sink.resets == [base] and commands.finished == [(7, True, "applied")]
    assert not (sink.ws.path / "new.txt").exists()
