"""The agent's tools, each declared with a pydantic model whose JSON schema is what the model sees.

Every file tool is confined to the run's worktree (also through symlinks and
`..`). A tool never raises into the loop: bad arguments, unknown tools and
failures come back as error results the model can act on. Every result is
capped (head + tail) before it enters the context. `run_command` is shared by
the shell tool and the acceptance check: process group killed on timeout or
cancellation, API keys removed from its environment, output capped while
streaming so a 100 MB output never sits in memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import os
import re
import signal
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .messages import ToolCall, ToolSpec

SKIP_DIRS = {".git", "node_modules", "__pycache__", ".venv", "venv", ".mypy_cache", ".pytest_cache", ".tox",
             ".loopwright"}
MAX_LISTED = 500
MAX_MATCHES = 200
SECRET_NAME = re.compile(r"(_API_KEY|_TOKEN|_SECRET)$|PASSWORD|^ANTHROPIC_API_KEY$|^OPENAI_API_KEY$")


class Scratchpad(Protocol):
    def read(self) -> str: ...
    def append(self, text: str) -> None: ...
    def replace(self, text: str) -> None: ...


@dataclass
class ToolContext:
    worktree: Path
    scratchpad: Scratchpad
    env: dict[str, str] = field(default_factory=dict)
    shell_timeout: float = 120.0
    max_shell_timeout: float = 1800.0
    output_cap: int = 30_000


@dataclass(frozen=True)
class ToolOutcome:
    content: str
    is_error: bool = False
    finish_summary: str | None = None
    checkpoint_message: str | None = None
    may_have_changed_files: bool = False


class ToolError(Exception):
    """A tool could not do what was asked; the message goes back to the model."""


def cap_text(text: str, cap: int) -> str:
    """Keep the head and the tail of a long text, saying how much was left out."""
    if len(text) <= cap:
        return text
    half = cap // 2
    return f"{text[:half]}\n[… {len(text) - 2 * half} bytes left out …]\n{text[-half:]}"


# -- commands ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CommandResult:
    exit_code: int | None
    output: str
    timed_out: bool
    duration_ms: float


def clean_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The process environment without API keys and other secrets, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not SECRET_NAME.search(k)}
    env.update(extra or {})
    return env


def _kill_group(proc: asyncio.subprocess.Process) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)


async def run_command(command: str, *, cwd: Path, timeout: float, cap: int = 30_000,
                      env: dict[str, str] | None = None) -> CommandResult:
    """Run `command` with bash in `cwd`; stdout and stderr merged, capped head + tail while streaming."""
    t0 = time.perf_counter()
    proc = await asyncio.create_subprocess_exec(
        "/bin/bash", "-c", command, cwd=str(cwd), env=clean_env(env), stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, start_new_session=True)
    half = max(cap // 2, 1)
    head = bytearray()
    tail = bytearray()
    total = 0

    async def pump() -> None:
        nonlocal total
        assert proc.stdout is not None
        while chunk := await proc.stdout.read(65536):
            total += len(chunk)
            room = half - len(head)
            if room > 0:
                head.extend(chunk[:room])
                chunk = chunk[room:]
            if chunk:
                tail.extend(chunk)
                if len(tail) > half:
                    del tail[:len(tail) - half]

    async def drain() -> None:
        """Wait for the pipe to close; a background child may hold it, so then kill the whole group."""
        try:
            await asyncio.wait_for(asyncio.shield(reader), 2.0)
        except asyncio.TimeoutError:
            _kill_group(proc)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.shield(reader), 2.0)

    reader = asyncio.ensure_future(pump())
    timed_out = False
    try:
        await asyncio.wait_for(proc.wait(), timeout)
    except asyncio.TimeoutError:
        timed_out = True
        _kill_group(proc)
        await proc.wait()
    except asyncio.CancelledError:
        _kill_group(proc)
        with contextlib.suppress(BaseException):
            await proc.wait()
            await drain()
        raise
    await drain()
    text = head.decode("utf-8", "replace")
    left_out = total - len(head) - len(tail)
    if left_out > 0:
        text += f"\n[… {left_out} bytes left out …]\n"
    text += tail.decode("utf-8", "replace")
    return CommandResult(exit_code=None if timed_out else proc.returncode, output=text, timed_out=timed_out,
                         duration_ms=(time.perf_counter() - t0) * 1000)


# -- paths -------------------------------------------------------------------------------------------


def resolve_in(worktree: Path, path: str) -> Path:
    """`path` inside the worktree, symlinks resolved; anything outside it (or inside .git) is refused."""
    root = worktree.resolve()
    target = (root / path).resolve()
    if target != root and root not in target.parents:
        raise ToolError(f"path escapes the worktree: {path}")
    rel = target.relative_to(root)
    if rel.parts and rel.parts[0] == ".git":
        raise ToolError(f"path is inside .git, which tools do not touch: {path}")
    return target


def _is_binary(data: bytes) -> bool:
    if b"\x00" in data[:8192]:
        return True
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return True
    return False


def _walk(root: Path, start: Path):
    for dirpath, dirnames, filenames in os.walk(start):
        dirnames[:] = sorted(d for d in dirnames if d not in SKIP_DIRS)
        for name in sorted(filenames):
            p = Path(dirpath) / name
            yield p, p.relative_to(root).as_posix()


# -- the tools ---------------------------------------------------------------------------------------


class _Args(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ShellArgs(_Args):
    command: str = Field(description="bash command, run in the worktree")
    timeout_seconds: float | None = Field(default=None, gt=0, description="kill it after this many seconds")


class ReadFileArgs(_Args):
    path: str = Field(description="file path relative to the worktree")
    offset: int = Field(default=1, ge=1, description="first line to show (1-based)")
    limit: int | None = Field(default=None, ge=1, description="how many lines to show")


class WriteFileArgs(_Args):
    path: str
    content: str


class EditFileArgs(_Args):
    path: str
    old: str = Field(description="exact text to replace (must occur exactly once unless replace_all)")
    new: str = Field(description="replacement text")
    replace_all: bool = False


class ListFilesArgs(_Args):
    pattern: str = Field(default="**/*", description="glob, e.g. '**/*.py'")
    path: str = Field(default=".", description="directory to list from")


class GrepArgs(_Args):
    pattern: str = Field(description="Python regular expression")
    path: str = "."
    glob: str | None = Field(default=None, description="only files whose path matches this glob, e.g. '*.py'")
    ignore_case: bool = False


class ScratchpadArgs(_Args):
    action: Literal["read", "append", "replace"]
    text: str | None = None


class CheckpointArgs(_Args):
    message: str = Field(description="what this checkpoint holds")


class FinishArgs(_Args):
    summary: str = Field(description="what was done, for the person reviewing it")


class Tool(ABC):
    """A tool: its name, description and argument model; `run` does the work."""

    name: str = ""
    description: str = ""
    args: type[_Args] = _Args

    def spec(self) -> ToolSpec:
        schema = self.args.model_json_schema()
        schema.pop("title", None)
        for prop in schema.get("properties", {}).values():
            prop.pop("title", None)
        return ToolSpec(name=self.name, description=self.description, input_schema=schema)

    @abstractmethod
    async def run(self, args: Any, ctx: ToolContext) -> ToolOutcome: ...


class Shell(Tool):
    name, args = "shell", ShellArgs
    description = ("Run a bash command in the worktree (stdout and stderr merged; long output keeps its head and "
                   "tail). Returns the output and the exit code. Killed after the timeout.")

    async def run(self, a: ShellArgs, ctx: ToolContext) -> ToolOutcome:
        timeout = min(a.timeout_seconds or ctx.shell_timeout, ctx.max_shell_timeout)
        # leave room for the status line so the Toolbox's cap does not cut the output a second time
        r = await run_command(a.command, cwd=ctx.worktree, timeout=timeout, cap=max(ctx.output_cap - 200, 100),
                              env=ctx.env)
        if r.timed_out:
            return ToolOutcome(f"{r.output}\ntimed out after {timeout:g}s; process group killed", is_error=True,
                               may_have_changed_files=True)
        return ToolOutcome(f"{r.output}\nexit code {r.exit_code}", may_have_changed_files=True)


class ReadFile(Tool):
    name, args = "read_file", ReadFileArgs
    description = "Read a text file with line numbers; use offset and limit for a range of lines."

    async def run(self, a: ReadFileArgs, ctx: ToolContext) -> ToolOutcome:
        p = resolve_in(ctx.worktree, a.path)
        if p.is_dir():
            raise ToolError(f"{a.path} is a directory; use list_files")
        if not p.exists():
            raise ToolError(f"file not found: {a.path}")
        data = p.read_bytes()
        if _is_binary(data):
            return ToolOutcome(f"{a.path} is a binary file ({len(data):,} bytes); not shown. Inspect it with the "
                               f"shell (e.g. `file`, `xxd | head`) if you must.", is_error=True)
        lines = data.decode("utf-8").splitlines()
        end = len(lines) if a.limit is None else min(len(lines), a.offset - 1 + a.limit)
        shown = "\n".join(f"{i:6}\t{lines[i - 1]}" for i in range(a.offset, end + 1))
        if a.offset > 1 or end < len(lines):
            shown += f"\n(lines {a.offset}-{end} of {len(lines)})"
        return ToolOutcome(shown or "(empty file)")


class WriteFile(Tool):
    name, args = "write_file", WriteFileArgs
    description = "Create or overwrite a file with the given content (parent directories are created)."

    async def run(self, a: WriteFileArgs, ctx: ToolContext) -> ToolOutcome:
        p = resolve_in(ctx.worktree, a.path)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(a.content)
        return ToolOutcome(f"wrote {len(a.content.encode()):,} bytes to {a.path}", may_have_changed_files=True)


class EditFile(Tool):
    name, args = "edit_file", EditFileArgs
    description = ("Replace an exact piece of text in a file. `old` must occur exactly once (include surrounding "
                   "lines to make it unique) unless replace_all is true.")

    async def run(self, a: EditFileArgs, ctx: ToolContext) -> ToolOutcome:
        p = resolve_in(ctx.worktree, a.path)
        if not p.is_file():
            raise ToolError(f"file not found: {a.path}")
        text = p.read_text()
        count = text.count(a.old) if a.old else 0
        if count == 0:
            raise ToolError(f"the text to replace was not found in {a.path}{_closest(text, a.old)}")
        if count > 1 and not a.replace_all:
            lines, start = [], 0
            while (i := text.find(a.old, start)) != -1:
                lines.append(str(text.count("\n", 0, i) + 1))
                start = i + 1
            raise ToolError(f"the text to replace was found {count} times in {a.path}, at lines {', '.join(lines)}; "
                            f"give more surrounding text or set replace_all")
        p.write_text(text.replace(a.old, a.new) if a.replace_all else text.replace(a.old, a.new, 1))
        return ToolOutcome(f"replaced {count if a.replace_all else 1} occurrence(s) in {a.path}",
                           may_have_changed_files=True)


def _closest(text: str, old: str) -> str:
    first = next((ln.strip() for ln in old.splitlines() if ln.strip()), "")
    if not first:
        return ""
    for n, line in enumerate(text.splitlines(), 1):
        if first in line or line.strip() and line.strip() in first:
            return f" (a similar line is {n}: {line.strip()[:80]!r}; read the file and copy the text exactly)"
    return " (read the file and copy the text exactly)"


class ListFiles(Tool):
    name, args = "list_files", ListFilesArgs
    description = "List files under a directory of the worktree matching a glob (skips .git, node_modules, caches)."

    async def run(self, a: ListFilesArgs, ctx: ToolContext) -> ToolOutcome:
        root = ctx.worktree.resolve()
        start = resolve_in(ctx.worktree, a.path)
        if not start.is_dir():
            raise ToolError(f"not a directory: {a.path}")
        found = [rel for _, rel in _walk(root, start)
                 if fnmatch.fnmatch(rel, a.pattern) or fnmatch.fnmatch(rel, a.pattern.removeprefix("**/"))]
        more = f"\n… and {len(found) - MAX_LISTED} more" if len(found) > MAX_LISTED else ""
        return ToolOutcome("\n".join(found[:MAX_LISTED]) + more if found else "no files match")


class Grep(Tool):
    name, args = "grep", GrepArgs
    description = "Search text files for a regular expression; prints path:line: text (skips binaries, .git, caches)."

    async def run(self, a: GrepArgs, ctx: ToolContext) -> ToolOutcome:
        try:
            rx = re.compile(a.pattern, re.IGNORECASE if a.ignore_case else 0)
        except re.error as e:
            raise ToolError(f"invalid regular expression {a.pattern!r}: {e}") from None
        root = ctx.worktree.resolve()
        start = resolve_in(ctx.worktree, a.path)
        files = [(start, start.relative_to(root).as_posix())] if start.is_file() else _walk(root, start)
        hits, extra = [], 0
        for p, rel in files:
            if a.glob and not (fnmatch.fnmatch(rel, a.glob) or fnmatch.fnmatch(p.name, a.glob)):
                continue
            try:
                data = p.read_bytes()
            except OSError:
                continue
            if _is_binary(data):
                continue
            for n, line in enumerate(data.decode("utf-8").splitlines(), 1):
                if rx.search(line):
                    if len(hits) < MAX_MATCHES:
                        hits.append(f"{rel}:{n}: {line[:300]}")
                    else:
                        extra += 1
        more = f"\n… and {extra} more matches" if extra else ""
        return ToolOutcome("\n".join(hits) + more if hits else "no matches")


class ScratchpadTool(Tool):
    name, args = "scratchpad", ScratchpadArgs
    description = ("Your notes for this run: read, append or replace. They survive context compaction and "
                   "restarts; keep plans, findings and next steps here.")

    async def run(self, a: ScratchpadArgs, ctx: ToolContext) -> ToolOutcome:
        if a.action == "read":
            return ToolOutcome(ctx.scratchpad.read() or "(the scratch pad is empty)")
        if a.text is None:
            raise ToolError(f"scratchpad {a.action} needs `text`")
        getattr(ctx.scratchpad, a.action)(a.text)
        return ToolOutcome(f"scratch pad {'appended to' if a.action == 'append' else 'replaced'}")


class CheckpointTool(Tool):
    name, args = "checkpoint", CheckpointArgs
    description = "Commit the worktree now with a message (steps that change files are also checkpointed automatically)."

    async def run(self, a: CheckpointArgs, ctx: ToolContext) -> ToolOutcome:
        return ToolOutcome("checkpoint requested", checkpoint_message=a.message)


class Finish(Tool):
    name, args = "finish", FinishArgs
    description = "Say the task is done, with a summary. The acceptance check then decides; if it fails you continue."

    async def run(self, a: FinishArgs, ctx: ToolContext) -> ToolOutcome:
        return ToolOutcome("finish requested", finish_summary=a.summary)


STANDARD_TOOLS: tuple[type[Tool], ...] = (Shell, ReadFile, WriteFile, EditFile, ListFiles, Grep, ScratchpadTool,
                                          CheckpointTool, Finish)


class Toolbox:
    """The tools an agent has; `execute` turns every problem into an error result, never an exception."""

    def __init__(self, tools: list[Tool] | None = None):
        self.tools = {t.name: t for t in (tools if tools is not None else [cls() for cls in STANDARD_TOOLS])}
        self._specs = [t.spec() for t in self.tools.values()]

    def specs(self) -> list[ToolSpec]:
        return self._specs

    async def execute(self, call: ToolCall, ctx: ToolContext) -> ToolOutcome:
        outcome = await self._execute(call, ctx)
        if len(outcome.content) > ctx.output_cap:
            outcome = ToolOutcome(cap_text(outcome.content, ctx.output_cap), outcome.is_error, outcome.finish_summary,
                                  outcome.checkpoint_message, outcome.may_have_changed_files)
        return outcome

    async def _execute(self, call: ToolCall, ctx: ToolContext) -> ToolOutcome:
        tool = self.tools.get(call.name)
        if tool is None:
            return ToolOutcome(f"unknown tool '{call.name}'; the tools are: {', '.join(self.tools)}", is_error=True)
        if call.parse_error:
            return ToolOutcome(f"{call.name}: arguments were not valid JSON: {call.parse_error}", is_error=True)
        try:
            args = tool.args.model_validate(call.arguments)
        except ValidationError as e:
            problems = "; ".join(f"argument '{'.'.join(str(x) for x in err['loc']) or '(all)'}': {err['msg']}"
                                 for err in e.errors()[:3])
            return ToolOutcome(f"{call.name}: {problems}", is_error=True)
        try:
            return await tool.run(args, ctx)
        except ToolError as e:
            return ToolOutcome(f"{call.name}: {e}", is_error=True)
        except (OSError, UnicodeError, ValueError) as e:
            return ToolOutcome(f"{call.name} failed: {type(e).__name__}: {e}", is_error=True)
