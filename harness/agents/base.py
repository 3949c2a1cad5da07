"""The seam for external command-line agents: what a `CliAgent` says about its CLI, and the events its output
maps to.

A `CliAgent` knows one CLI: the command line that starts or resumes a session in the run's worktree, how one
line of its output maps to `AgentEvent`s, which environment variables and folders it needs, and which hosts
its API lives on (for the sandbox's proxy). It runs nothing itself: the supervisor (`harness.agents.driver`)
starts the process in the sandbox, reads its output, writes the run's events, checkpoints, obeys pause and
kill, and lets the acceptance check decide. A CLI with no event stream (`command`) parses no lines: the
supervisor checkpoints on the file changes it sees.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from loopwright.harness.messages import Usage


@dataclass(frozen=True)
class SessionStarted:
    """The CLI's own session (Claude Code's `session_id`, Codex's `thread_id`): what a resume continues."""

    session_id: str


@dataclass(frozen=True)
class AgentText:
    """Text the agent wrote (an assistant message; `reasoning` for a reasoning summary)."""

    text: str
    reasoning: bool = False


@dataclass(frozen=True)
class AgentToolCall:
    """The agent started one of its own tools."""

    call_id: str
    name: str
    arguments: dict = field(default_factory=dict)


@dataclass(frozen=True)
class AgentToolResult:
    """One of the agent's tools finished; `may_change_files` says whether the supervisor should look for a
    checkpoint (a read or a search cannot change the worktree)."""

    call_id: str
    name: str
    output: str
    is_error: bool = False
    may_change_files: bool = True


@dataclass(frozen=True)
class AgentUsage:
    """Tokens one model call (or one turn) of the CLI used; `cost_usd` when the CLI reports its own cost, else
    the supervisor prices the tokens by the model table (None model: the cost stays unknown)."""

    usage: Usage
    model: str | None = None
    cost_usd: float | None = None


@dataclass(frozen=True)
class AgentFinished:
    """The CLI's own end of a session (Claude Code's `result` line, Codex's `turn.completed`/`turn.failed`):
    the agent stopped working. Whether the work is done is the acceptance check's call, never this."""

    ok: bool
    text: str = ""
    total_cost_usd: float | None = None  # the session's cost so far, when the CLI reports one


AgentEvent = SessionStarted | AgentText | AgentToolCall | AgentToolResult | AgentUsage | AgentFinished


@dataclass(frozen=True)
class ConfigHome:
    """Where a CLI keeps its config folder: the variable that moves it (`CLAUDE_CONFIG_DIR`), the folder under $HOME
    it uses when that is unset, and what of it a run needs (its login and settings, not its history). In the
    sandbox the CLI gets a writable per-run copy instead of the user's folder."""

    variable: str
    default: str
    files: tuple[str, ...]


def json_line_events(line: str, events: Callable[[dict], list[AgentEvent]]) -> list[AgentEvent]:
    """`events` of the JSON object one output line holds: none for a line that is not one, or for an object of a shape
    `events` did not expect (a CLI version that writes something new): a CLI's `parse` never raises."""
    try:
        data = json.loads(line)
    except ValueError:
        return []
    if not isinstance(data, dict):
        return []
    try:
        return events(data)
    except (AttributeError, KeyError, TypeError, ValueError):
        return []


@dataclass(frozen=True)
class AgentOptions:
    """What the run's config says to the CLI: model, turn cap, permission settings, extra arguments, the text
    loopwright appends to the agent's instructions (recalled lessons, scratch pad, notices), and where its config
    folder is for this run (where it keeps its sessions)."""

    model: str | None = None
    max_turns: int | None = None
    permission_mode: str | None = None
    allowed_tools: tuple[str, ...] = ()
    extra_args: tuple[str, ...] = ()
    appended_instructions: str = ""
    config_folder: Path | None = None  # the run's copy of its config folder (`ConfigHome`); None: its own folder


class CliAgent(Protocol):
    """One command-line agent, as the supervisor needs to know it."""

    name: str  # the `--agent` name: claude-code, codex, command, or a name from [agents.NAME]
    streams_events: bool  # False: no event stream; the supervisor checkpoints on file changes it sees
    api_hosts: tuple[str, ...]  # the hosts its API lives on: the only ones the sandbox lets it reach
    config_dirs: tuple[str, ...]  # its login/config folders under $HOME (bound read-only in the sandbox)
    config_home: ConfigHome | None  # its config folder, when it writes there (a per-run copy in the sandbox)
    key_hint: str  # what it needs to start: the key variables or the login, said when it fails to start

    def command(self, prompt: str, options: AgentOptions, *, session_id: str | None = None) -> list[str]:
        """The command line that starts a session on `prompt`, or continues `session_id` with it."""

    def environment(self) -> dict[str, str]:
        """Variables to set for the CLI on top of the sandbox's environment (its key variables pass through
        from loopwright's environment by name; loopwright never stores them)."""

    def parse(self, line: str) -> list[AgentEvent]:
        """The events one line of the CLI's stdout carries (none for a line it does not know; never raises on
        a malformed line)."""
