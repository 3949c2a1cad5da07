"""The `codex` agent: OpenAI's Codex CLI, run as `codex exec --json` and resumed with `codex exec resume`.

Codex's own sandbox is off (`sandbox_mode = "danger-full-access"`, approvals `never`): loopwright's sandbox wraps
the CLI, and Codex's (its own bwrap) cannot nest inside loopwright's jail, which disables nested user namespaces:
its commands fail ("Creating new namespace failed"). Without loopwright's sandbox Codex runs as
loopwright's own agent would, unconfined in the run's worktree. `permission_mode` in the run's options sets
another sandbox mode (read-only, workspace-write).

A top-level `error` line is no end of the turn: Codex also says "Reconnecting..." with one while the turn goes on;
a fatal one is followed by `turn.failed` (both stay in the transcript).

Loopwright's appended instructions (recalled lessons, scratch pad) start a thread as its developer instructions
(`developer_instructions`); a resumed thread keeps the ones it started with, so a resume carries them in its
prompt. Codex reports usage per thread, summed over all its turns so far (a resume's included): each
`turn.completed` becomes the tokens added since the last total seen, priced by the model table.
"""

from __future__ import annotations

import json
import os
import shlex
import tomllib
from pathlib import Path
from typing import Any

from loopwright.harness.agents.base import (
    AgentEvent,
    AgentFinished,
    AgentOptions,
    AgentText,
    AgentToolCall,
    AgentToolResult,
    AgentUsage,
    ConfigHome,
    SessionStarted,
    json_line_events,
)
from loopwright.harness.messages import Usage

# Passed through from loopwright's environment by name (a jail's environment keeps only a few variables): its key,
# never stored, its API's base URL and its home (config, login, sessions).
KEY_VARIABLES = ("OPENAI_API_KEY", "CODEX_API_KEY", "OPENAI_BASE_URL")
SANDBOX_MODE = "danger-full-access"


def toml_string(text: str) -> str:
    """`text` as a TOML basic string (for a `-c key=value` override)."""
    return json.dumps(text, ensure_ascii=False).replace("\x7f", "\\u007f")


def codex_home() -> Path:
    """Where Codex keeps its config, login and sessions: $CODEX_HOME, else ~/.codex."""
    return Path(os.environ.get("CODEX_HOME") or Path.home() / ".codex")


class CodexAgent:
    """A `CliAgent` for the Codex CLI (see the module docstring). Its `parse` keeps the thread's usage total."""

    name = "codex"
    streams_events = True
    api_hosts: tuple[str, ...] = ("api.openai.com", "chatgpt.com", "auth.openai.com")
    config_dirs: tuple[str, ...] = ()
    config_home: ConfigHome | None = ConfigHome("CODEX_HOME", ".codex", ("auth.json", "config.toml"))
    key_hint = ("the Codex CLI on PATH (npm install -g @openai/codex), and OPENAI_API_KEY (or CODEX_API_KEY) in "
                "loopwright's environment or a `codex login`")

    def __init__(self, executable: str = "codex"):
        self.executable = executable
        self.model: str | None = None
        self.thread_id: str | None = None
        self._totals: dict[str, Usage] = {}  # per thread: the usage total already reported
        self._started: set[str] = set()  # items whose start was reported
        self._last_text = ""

    def command(self, prompt: str, options: AgentOptions, *, session_id: str | None = None) -> list[str]:
        home = options.config_folder or codex_home()  # in loopwright's sandbox: the run's copy
        self.model = options.model or configured_model(home)
        argv = [self.executable, "exec", *(["resume"] if session_id else []), "--json",
                "-c", f"sandbox_mode={toml_string(options.permission_mode or SANDBOX_MODE)}",
                "-c", 'approval_policy="never"']
        if options.model:
            argv += ["--model", options.model]
        if options.appended_instructions:
            if session_id:
                prompt = f"{prompt}\n\n{options.appended_instructions}"
            else:
                argv += ["-c", f"developer_instructions={toml_string(options.appended_instructions)}"]
        if session_id and session_id not in self._totals:
            self._totals[session_id] = recorded_total(session_id, home)
        return [*argv, *options.extra_args, "--", *([session_id] if session_id else []), prompt]

    def environment(self) -> dict[str, str]:
        return {k: os.environ[k] for k in KEY_VARIABLES if k in os.environ}

    def parse(self, line: str) -> list[AgentEvent]:
        return json_line_events(line, self._events)

    def _events(self, event: dict) -> list[AgentEvent]:
        kind = event.get("type")
        if kind == "thread.started":  # the first line of every `codex exec`: its item ids start again
            self.thread_id = str(event["thread_id"])
            self._totals.setdefault(self.thread_id, Usage())
            self._started.clear()
            return [SessionStarted(session_id=self.thread_id)]
        if kind == "turn.started":
            self._last_text = ""
            return []
        if kind == "turn.completed":
            return [*self._usage(event.get("usage") or {}), AgentFinished(ok=True, text=self._last_text)]
        if kind == "turn.failed":  # follows the `error` line of a fatal error; an `error` alone is not an end
            return [AgentFinished(ok=False, text=str((event.get("error") or {}).get("message", "")))]
        item = event.get("item")
        if kind in ("item.started", "item.completed") and isinstance(item, dict):
            return self._item(item, done=kind == "item.completed")
        return []

    def _item(self, item: dict, *, done: bool) -> list[AgentEvent]:
        kind, item_id = item.get("type"), str(item.get("id", ""))
        if kind == "agent_message":
            if not done:
                return []
            self._last_text = str(item.get("text", ""))
            return [AgentText(text=self._last_text)]
        if kind == "reasoning":
            return [AgentText(text=str(item.get("text", "")), reasoning=True)] if done else []
        call = _tool_call(item)
        if call is None:
            return []  # an `error` item (a warning: the turn goes on) or a kind this version does not know
        events: list[AgentEvent] = []
        if item_id not in self._started:  # some items are only reported once they are done
            self._started.add(item_id)
            events.append(AgentToolCall(call_id=item_id, name=call[0], arguments=call[1]))
        if done:
            output, is_error = _tool_output(item)
            events.append(AgentToolResult(call_id=item_id, name=call[0], output=output, is_error=is_error,
                                          may_change_files=kind not in ("todo_list", "web_search")))
        return events

    def _usage(self, raw: dict) -> list[AgentEvent]:
        total = codex_usage(raw)
        thread = self.thread_id or ""
        before = self._totals.get(thread, Usage())
        self._totals[thread] = total
        added = Usage(**{f: max(0, getattr(total, f) - getattr(before, f)) for f in
                         ("input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens")})
        return [AgentUsage(usage=added, model=self.model)] if added.total else []


def _tool_call(item: dict) -> tuple[str, dict[str, Any]] | None:
    """The tool name and arguments an item of one of Codex's tools is shown with; None for any other item."""
    kind = item.get("type")
    if kind == "command_execution":
        return "shell", {"command": _unwrapped(str(item.get("command", "")))}
    if kind == "file_change":
        return "apply_patch", {"changes": ", ".join(f"{c.get('kind', 'update')} {c.get('path', '?')}"
                                                    for c in item.get("changes") or [])}
    if kind == "mcp_tool_call":
        arguments = item.get("arguments")
        return f"mcp:{item.get('server', '?')}/{item.get('tool', '?')}", (
            arguments if isinstance(arguments, dict) else {})
    if kind == "todo_list":
        return "todo_list", {"steps": len(item.get("items") or [])}
    if kind == "web_search":
        return "web_search", {"query": str(item.get("query", ""))}
    return None


def _tool_output(item: dict) -> tuple[str, bool]:
    """What a finished tool item says, and whether it failed."""
    kind, status = item.get("type"), item.get("status")
    failed = status in ("failed", "declined")
    if kind == "command_execution":
        code = item.get("exit_code")
        return str(item.get("aggregated_output") or ""), failed or (code is not None and code != 0)
    if kind == "file_change":
        return "\n".join(f"{c.get('kind', 'update')} {c.get('path', '?')}" for c in item.get("changes") or []), failed
    if kind == "mcp_tool_call":
        if item.get("error"):
            return str(item["error"].get("message", "")), True
        blocks = (item.get("result") or {}).get("content") or []
        return "\n".join(str(b.get("text", "")) for b in blocks if isinstance(b, dict)), failed
    if kind == "todo_list":
        return "\n".join(f"[{'x' if s.get('completed') else ' '}] {s.get('text', '')}"
                         for s in item.get("items") or []), False
    return "", failed


def _unwrapped(command: str) -> str:
    """The script of Codex's `/bin/bash -lc '<script>'` wrapping, else the command as reported."""
    try:
        words = shlex.split(command)
    except ValueError:
        return command
    if len(words) == 3 and Path(words[0]).name in ("bash", "sh", "zsh") and words[1] in ("-lc", "-c"):
        return words[2]
    return command


def configured_model(home: Path) -> str | None:
    """The model Codex's config.toml in `home` names (what a thread uses when the run names none), if it can be
    read."""
    try:
        model = tomllib.loads((home / "config.toml").read_text()).get("model")
    except (OSError, ValueError):
        return None
    return model if isinstance(model, str) else None


def recorded_total(thread_id: str, home: Path) -> Usage:
    """The usage total a thread's session file under Codex's `home` recorded last (what a resume's first total
    already holds, when this process did not see the thread's earlier turns: after a restart); none found, zero.
    Tokens of a turn stopped before it completed are in it, so they are never counted then."""
    usage: dict = {}
    for path in sorted(home.glob(f"sessions/**/rollout-*{thread_id}.jsonl")):
        try:
            lines = path.read_text().splitlines()
        except OSError:
            continue
        for line in lines:
            if '"token_count"' not in line:
                continue
            try:
                info = json.loads(line)["payload"]["info"]["total_token_usage"]
            except (ValueError, KeyError, TypeError):
                continue
            if isinstance(info, dict):
                usage = info
    return codex_usage(usage)


def codex_usage(raw: dict) -> Usage:
    """Codex's token counts (input including the cached and cache-written tokens, as OpenAI counts) as loopwright
    splits them."""
    cached = int(raw.get("cached_input_tokens") or 0)
    written = int(raw.get("cache_write_input_tokens") or 0)
    return Usage(input_tokens=max(0, int(raw.get("input_tokens") or 0) - cached - written),
                 output_tokens=int(raw.get("output_tokens") or 0), cache_read_tokens=cached,
                 cache_write_tokens=written)
