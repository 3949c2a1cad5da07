"""Running one command: bash in the worktree (or in a jail), its process group ended on a timeout,
cancellation or the run's interrupt (a kill), API keys kept out of its environment, and its output capped
while it streams, so a 100 MB output never sits in memory. Shared by the shell tool and the acceptance check.

Given a sandbox (harness/sandbox.py) the command runs in a jail of its own around the worktree; given the
run's jail (harness/sandbox_jail.py) it runs in that long-lived one. With a `ProcessLedger` its process group
is recorded while it may live, so that a crashed owner's commands can be ended (harness/processes.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from loopwright.harness.processes import ProcessLedger, group_of, members
from loopwright.harness.sandbox import SECRET_NAME, Sandbox
from loopwright.harness.sandbox_jail import JailedCommand, RunJail

PIPE_GRACE = 1.0           # seconds to wait for the pipe to close after bash exited (a background child may hold it)
KILL_GRACE = 2.0           # seconds between SIGTERM and SIGKILL when a command is ended


@dataclass(frozen=True)
class CommandResult:
    exit_code: int | None  # None when ended by the timeout or an interrupt
    output: str
    timed_out: bool
    duration_ms: float
    interrupted: bool = False  # ended because the run is being stopped


def clean_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The process environment without API keys, tokens, secrets and passwords, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not SECRET_NAME.search(k)}
    env.update(extra or {})
    return env


def kill_group(proc: asyncio.subprocess.Process, sig: int = signal.SIGKILL) -> None:
    """Send `sig` to the process group a command was started in (`start_new_session`), if it is still there."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class _Exits(Protocol):
    @property
    def returncode(self) -> int | None: ...


async def wait_exit(proc: _Exits, timeout: float, interrupt: asyncio.Event | None = None) -> bool:
    """True once bash has exited, False after `timeout` or as soon as `interrupt` is set.

    Polls `returncode` rather than awaiting `proc.wait()`: on Python 3.11 `wait()`
    also waits for every pipe to close, so a background child holding stdout
    would make a finished command look like it hung.
    """
    deadline = time.monotonic() + timeout
    delay = 0.002
    while proc.returncode is None:
        left = deadline - time.monotonic()
        if left <= 0 or interrupt is not None and interrupt.is_set():
            return False
        await asyncio.sleep(min(delay, left))
        delay = min(delay * 2, 0.05)
    return True


class _OwnProcess:
    """A command started here in a session of its own (bash, or a one-off jail): like `JailedCommand`."""

    note = ""

    def __init__(self, proc: asyncio.subprocess.Process):
        self.proc, self.pgid = proc, proc.pid
        assert proc.stdout is not None
        self.stdout = proc.stdout

    @property
    def returncode(self) -> int | None:
        return self.proc.returncode

    def kill(self) -> None:
        kill_group(self.proc)

    async def end(self, grace: float) -> None:
        kill_group(self.proc, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while _group_alive(self.pgid) and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        kill_group(self.proc)
        await wait_exit(self.proc, 5.0)

    def close(self) -> None:
        # something outside the group (setsid) may still hold the pipe: close our end
        transport = getattr(self.proc, "_transport", None)
        if transport is not None:
            transport.close()


class _CappedOutput:
    """The first `half` bytes and a rolling last `half` bytes of a stream, and its total size."""

    def __init__(self, cap: int):
        self.half = max(cap // 2, 1)
        self.head, self.tail, self.total = bytearray(), bytearray(), 0

    def add(self, chunk: bytes) -> None:
        self.total += len(chunk)
        room = self.half - len(self.head)
        if room > 0:
            self.head.extend(chunk[:room])
            chunk = chunk[room:]
        if chunk:
            self.tail.extend(chunk)
            if len(self.tail) > self.half:
                del self.tail[:len(self.tail) - self.half]

    def text(self) -> str:
        text = self.head.decode("utf-8", "replace")
        left_out = self.total - len(self.head) - len(self.tail)
        if left_out > 0:
            text += f"\n[… {left_out} bytes left out …]\n"
        return text + self.tail.decode("utf-8", "replace")


async def run_command(command: str, *, cwd: Path, timeout: float, cap: int = 30_000,
                      env: dict[str, str] | None = None, interrupt: asyncio.Event | None = None,
                      sandbox: Sandbox | None = None, worktree: Path | None = None,
                      repo_root: Path | None = None, readable: tuple[Path, ...] = (),
                      processes: ProcessLedger | None = None, jail: RunJail | None = None) -> CommandResult:
    """Run `command` with bash in `cwd`: stdout and stderr merged, capped head + tail while streaming.

    In a run's `jail` (its long-lived one) when given; else with a `sandbox`, bash runs in a jail of its own around
    `worktree` (default: `cwd`); `readable` folders shown read-only too. A policy that cannot be set up there
    raises SandboxError.

    At the timeout, or once `interrupt` is set, the whole process group is ended
    (SIGTERM, then SIGKILL after KILL_GRACE seconds); on cancellation it is killed
    at once. A background child still holding the output pipe after bash exits
    gets PIPE_GRACE seconds, then the group is killed and reading stops. With `processes`, the group is
    recorded there once started, and forgotten when nothing of it is left (a background process that
    redirected its output lives on, recorded, until the run's owner ends it).
    """
    t0 = time.perf_counter()
    started: _OwnProcess | JailedCommand
    group = None  # the process group to end if this process dies (a jail records its own, for as long as it runs)
    if jail is not None:
        started = await jail.start(command, cwd=cwd, env=env, readable=readable)
    else:
        if sandbox is not None:
            argv, full_env = sandbox.wrap(command, worktree=worktree or cwd, cwd=cwd, repo_root=repo_root, env=env,
                                          readable=readable, new_session=False)  # the group below holds the jail
        else:
            argv, full_env = ["/bin/bash", "-c", command], clean_env(env)
        started = _OwnProcess(await asyncio.create_subprocess_exec(
            *argv, cwd=str(cwd), env=full_env, stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, start_new_session=True))
        group = group_of(started.pgid) if processes is not None else None
        if processes is not None and group is not None:
            processes.started(group)
    out = _CappedOutput(cap)

    async def pump() -> None:
        while chunk := await started.stdout.read(65536):
            out.add(chunk)

    reader = asyncio.ensure_future(pump())
    timed_out = interrupted = False
    try:
        if not await wait_exit(started, timeout, interrupt):
            interrupted = interrupt is not None and interrupt.is_set()
            timed_out = not interrupted
            await started.end(KILL_GRACE)
        await asyncio.wait({reader}, timeout=PIPE_GRACE)
        if not reader.done():
            started.kill()
            await asyncio.wait({reader}, timeout=PIPE_GRACE)
    except asyncio.CancelledError:
        started.kill()
        raise
    finally:
        if not reader.done():
            reader.cancel()
            started.close()
        elif isinstance(started, JailedCommand):
            started.close()
        if processes is not None and group is not None and not (_group_alive(group.pgid) and members(group.pgid)):
            processes.ended(group)
    output = out.text() + (f"\n{started.note}\n" if started.note else "")
    return CommandResult(exit_code=None if timed_out or interrupted else started.returncode, output=output,
                         timed_out=timed_out, duration_ms=(time.perf_counter() - t0) * 1000, interrupted=interrupted)


