"""The `claude-code` agent: Claude Code in print mode, `claude -p <prompt> --output-format stream-json --verbose`.

Its stdout is one JSON object a line: `system` (subtype `init` carries the `session_id` a `--resume` continues),
`assistant` (one line per content block: text, thinking, tool_use; every line of a message repeats its usage),
`user` (the tool results) and `result` (the end of the invocation: `is_error`, `total_cost_usd`). The cost in
`result` is that invocation's, not the session's: a resumed session starts again from zero. An assistant line's
usage is the one its stream started with (input and cache tokens whole, output tokens not yet counted); the
`result` line's cost is Claude Code's own figure for all of it.

Unless the config says otherwise it runs with `--permission-mode acceptEdits` and Bash allowed: there is no one
to answer its permission prompts, and the run's worktree and loopwright's sandbox are what confine it.

It keeps its sessions and its shells' state in its config folder (`CLAUDE_CONFIG_DIR`, else `~/.claude`): in the
sandbox it gets a writable per-run copy holding the user's login and settings (`config_home`).
"""

from __future__ import annotations

import os

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

# Its tools that cannot change the worktree (the supervisor looks for no checkpoint after them).
READ_ONLY_TOOLS = frozenset({
    "Read", "Grep", "Glob", "LS", "NotebookRead", "WebFetch", "WebSearch", "TodoWrite", "TodoRead", "TaskCreate",
    "TaskGet", "TaskList", "TaskUpdate", "TaskOutput", "ToolSearch", "ExitPlanMode", "EnterPlanMode",
    "AskUserQuestion", "ListMcpResourcesTool", "ReadMcpResourceTool", "CronList",
})
DEFAULT_PERMISSION_MODE = "acceptEdits"
DEFAULT_ALLOWED_TOOLS = ("Bash",)
# What it reads its key or login from: passed through from loopwright's environment by name, never stored.
KEY_VARIABLES = ("ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN", "CLAUDE_CODE_OAUTH_TOKEN", "ANTHROPIC_BASE_URL")


class ClaudeCodeAgent:
    """A `CliAgent` for Claude Code (see the module docstring). One instance reads one run's output: it keeps
    which tool each call id started and which messages' usage it has counted."""

    name = "claude-code"
    streams_events = True
    api_hosts: tuple[str, ...] = ("api.anthropic.com",)
    config_dirs: tuple[str, ...] = ()
    config_home: ConfigHome | None = ConfigHome("CLAUDE_CONFIG_DIR", ".claude", (".credentials.json", "settings.json"))
    key_hint = ("the claude CLI on PATH (npm install -g @anthropic-ai/claude-code), and ANTHROPIC_API_KEY (or "
                "ANTHROPIC_AUTH_TOKEN, CLAUDE_CODE_OAUTH_TOKEN) in loopwright's environment or a `claude login`")

    def __init__(self, executable: str = "claude"):
        self.executable = executable
        self.tools: dict[str, str] = {}  # call id -> the tool's name
        self.counted: set[str] = set()  # message ids whose usage was reported

    def command(self, prompt: str, options: AgentOptions, *, session_id: str | None = None) -> list[str]:
        # the prompt right after -p: --allowedTools takes every word after it as a tool
        argv = [self.executable, "-p", prompt, "--output-format", "stream-json", "--verbose"]
        if session_id:
            argv += ["--resume", session_id]
        if options.model:
            argv += ["--model", options.model]
        if options.max_turns:
            argv += ["--max-turns", str(options.max_turns)]
        argv += ["--permission-mode", options.permission_mode or DEFAULT_PERMISSION_MODE,
                 "--allowedTools", ",".join(options.allowed_tools or DEFAULT_ALLOWED_TOOLS)]
        if options.appended_instructions:
            argv += ["--append-system-prompt", options.appended_instructions]
        return argv + list(options.extra_args)

    def environment(self) -> dict[str, str]:
        # no update checks, telemetry, error reports or session titles: only the turns reach the API
        return {"CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
                **{k: os.environ[k] for k in KEY_VARIABLES if k in os.environ}}

    def parse(self, line: str) -> list[AgentEvent]:
        return json_line_events(line, self._events)

    def _events(self, data: dict) -> list[AgentEvent]:
        kind = data.get("type")
        if kind == "system":
            sid = data.get("session_id")
            return [SessionStarted(sid)] if data.get("subtype") == "init" and isinstance(sid, str) else []
        if kind == "result":
            cost = data.get("total_cost_usd")
            text = data.get("result")
            if not isinstance(text, str):
                text = "; ".join(str(e) for e in data.get("errors") or []) or str(data.get("subtype", ""))
            return [AgentFinished(ok=not data.get("is_error") and data.get("subtype") == "success", text=text,
                                  total_cost_usd=float(cost) if isinstance(cost, int | float) else None)]
        message = data.get("message")
        if not isinstance(message, dict) or kind not in ("assistant", "user"):
            return []
        content = message.get("content")
        blocks = [b for b in content if isinstance(b, dict)] if isinstance(content, list) else []
        if kind == "user":
            return [self._result(b) for b in blocks if b.get("type") == "tool_result"]
        events: list[AgentEvent] = []
        for block in blocks:
            if block.get("type") == "text" and block.get("text"):
                events.append(AgentText(block["text"]))
            elif block.get("type") == "thinking" and block.get("thinking"):
                events.append(AgentText(block["thinking"], reasoning=True))
            elif block.get("type") == "tool_use":
                call_id, name = str(block.get("id", "")), str(block.get("name", ""))
                self.tools[call_id] = name
                arguments = block.get("input")
                events.append(AgentToolCall(call_id, name, arguments if isinstance(arguments, dict) else {}))
        usage, mid = message.get("usage"), message.get("id")
        if isinstance(usage, dict) and isinstance(mid, str) and mid not in self.counted:
            self.counted.add(mid)
            events.append(AgentUsage(_usage(usage), model=message.get("model") or None))
        return events

    def _result(self, block: dict) -> AgentToolResult:
        call_id = str(block.get("tool_use_id", ""))
        name = self.tools.get(call_id, "")
        output = block.get("content", "")
        if isinstance(output, list):
            output = "\n".join(b.get("text", "") for b in output if isinstance(b, dict) and b.get("type") == "text")
        return AgentToolResult(call_id, name, str(output), is_error=bool(block.get("is_error")),
                               may_change_files=name not in READ_ONLY_TOOLS)


def _usage(usage: dict) -> Usage:
    def tokens(key: str, within: dict = usage) -> int:
        value = within.get(key)
        return value if isinstance(value, int) else 0

    written = usage.get("cache_creation")
    return Usage(input_tokens=tokens("input_tokens"), output_tokens=tokens("output_tokens"),
                 cache_read_tokens=tokens("cache_read_input_tokens"),
                 cache_write_tokens=tokens("cache_creation_input_tokens"),
                 cache_write_1h_tokens=tokens("ephemeral_1h_input_tokens", written) if isinstance(written, dict)
                 else 0)
