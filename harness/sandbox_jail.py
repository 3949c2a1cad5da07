"""One long-lived jail per run: its shell commands go to a small server inside instead of a new bwrap each.

A per-command jail costs bwrap's namespaces and ~30 mounts every time (~9 ms a `true`). `RunJail` starts the run's
jail once (see `warm`, below), with the run's policy, worktree and skill folders, and runs
harness/sandbox_server.py in it (stdlib Python, `-I -S`). Each command reaches the server over a socketpair with its
own output pipe (passed as an fd: run_command reads it as it reads a process of its own); the server starts `bash -c`
in a new process group with the policy's ulimits, ends the group when asked (timeout, interrupt), and once bash exits
kills whatever the command left running in the jail, as a jail of its own would end it, before it says the exit
code.

`warm` starts the jail ahead of the first command, in the background: a run asks for it once the model's first
answer is in, so the start overlaps the tools and the next call (at most two such starts at once per event loop: a
fleet's runs ask together); the first command finds it ready, or waits for the start under way. The jail is started
again when a command needs other skill folders than it shows, when the worktree is no longer the folder it bound (a
rollback resets the worktree in place: the bind stays valid), or when it died. A jail that cannot be started (or
given the command) twice in a row fails the command with a SandboxError; one that dies under a command makes it a
lost command (exit 137 and a note; it is not run again), the next starts a new jail. It ends with `close` (the run's
end), or with its parent (`--die-with-parent`). `/tmp` and `$HOME` are the jail's: kept between the run's commands.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import weakref
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from loopwright.harness.processes import ProcessGroup, ProcessLedger, group_of
from loopwright.harness.sandbox import BwrapSandbox, Sandbox, SandboxError

# the server's source without its docstring (the command line is what `ps` shows in the jail)
SERVER = (Path(__file__).parent / "sandbox_server.py").read_text().split('"""', 2)[2].strip()
ANSWER_TIMEOUT = 30.0  # seconds for a new jail's server to say it is ready
CLOSE_TIMEOUT = 5.0  # seconds for the jail to end on its own once told, before it is killed
EXIT_LOST = 128 + signal.SIGKILL  # a command whose jail died under it
# Jails are started by these threads, not on the event loop (starting a process stalls it ~10-20 ms a jail on a
# busy fleet), nor in a pool whose threads may end: bwrap's --die-with-parent ends a jail with the thread that
# started it, and these live as long as the process.
_STARTERS = ThreadPoolExecutor(max_workers=4, thread_name_prefix="loopwright-jail-start")
WARM_AT_ONCE = 2  # jails `warm` starts at the same time in one event loop: a fleet's runs ask for theirs together
_warming_slots: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore] = weakref.WeakKeyDictionary()


class _JailDied(Exception):
    pass


class _Process:
    """The bwrap process of one jail and loopwright's end of its control socket."""

    def __init__(self, argv: Callable[[int], list[str]], env: Mapping[str, str], cwd: Path):
        """`argv(fd)`: the command line, given the fd number of the server's end of the control socket."""
        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        # not fd 3 or 4: the pid_max prefix of the command line (as root) feeds bwrap through them
        fd = fcntl.fcntl(child.fileno(), fcntl.F_DUPFD_CLOEXEC, 10)
        child.close()
        self.errors = tempfile.TemporaryFile()
        try:
            self.popen = subprocess.Popen(argv(fd), env=dict(env), cwd=cwd, stdin=subprocess.DEVNULL,
                                          stdout=subprocess.DEVNULL, stderr=self.errors, pass_fds=(fd,),
                                          start_new_session=True)
        except (OSError, SandboxError) as e:
            parent.close()
            self.errors.close()
            if isinstance(e, SandboxError):
                raise
            raise SandboxError(f"the run's jail could not start: {e}") from None
        finally:
            os.close(fd)
        parent.setblocking(False)  # read with the event loop; the one-byte sends with fds never wait
        self.ctl = parent

    def alive(self) -> bool:
        return self.popen.poll() is None

    async def ready(self) -> str:
        """"" once the server says it is ready, else what went wrong (bwrap's error, or how the jail ended)."""
        try:
            said = await asyncio.wait_for(asyncio.get_running_loop().sock_recv(self.ctl, 6), ANSWER_TIMEOUT)
        except (TimeoutError, OSError):
            said = b""
        if said == b"ready\n":
            return ""
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(1.0)
        return self.why_dead() if not self.alive() else "its command server did not start"

    def why_dead(self) -> str:
        """bwrap's first line of error, or how it exited."""
        self.errors.seek(0)
        lines = self.errors.read(4096).decode("utf-8", "replace").strip().splitlines()
        return lines[0] if lines else f"the jail exited with {self.popen.poll()}"

    def close(self) -> None:
        """Tell the server to go (the jail ends with it, its namespace torn down before bwrap exits); kill the
        jail's process group if it does not."""
        self.ctl.close()
        try:
            self.popen.wait(CLOSE_TIMEOUT)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.popen.pid, signal.SIGKILL)
            self.popen.wait()
        self.errors.close()


class JailedCommand:
    """A command running in a `RunJail`: its output stream, its exit code, and its process group, ended by the
    server."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, stdout: asyncio.StreamReader,
                 transport: asyncio.BaseTransport):
        self.stdout = stdout
        self.returncode: int | None = None
        self.note = ""  # said after the output: the jail died under the command
        self._writer, self._transport = writer, transport
        self._exited = asyncio.Event()
        self._watcher = asyncio.ensure_future(self._watch(reader))

    async def _watch(self, reader: asyncio.StreamReader) -> None:
        with contextlib.suppress(ConnectionError):
            while line := await reader.readline():
                word, _, arg = line.decode("ascii", "replace").strip().partition(" ")
                if word == "exit" and arg.isdigit():
                    self.returncode = int(arg)
                    break
        if self.returncode is None:
            self.returncode = EXIT_LOST
            self.note = "[sandbox] the run's jail ended while this command ran; the next command starts a new one"
        self._exited.set()

    def kill(self) -> None:
        """SIGKILL the command's process group now."""
        self._send("kill")

    async def end(self, grace: float) -> None:
        """SIGTERM the command's process group, SIGKILL what is left after `grace` seconds; wait for it."""
        self._send(f"end {grace}")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._exited.wait(), grace + 10)

    def close(self) -> None:
        """Done with the command: the server ends it if it still runs; the output is no longer read."""
        self._watcher.cancel()
        self._writer.close()
        self._transport.close()

    def _send(self, line: str) -> None:
        if not self._writer.is_closing():
            self._writer.write(line.encode() + b"\n")


class RunJail:
    """The long-lived jail of one run (see the module's docstring). `close` it when the run ends."""

    def __init__(self, sandbox: BwrapSandbox, worktree: Path, repo_root: Path | None = None,
                 processes: ProcessLedger | None = None):
        self.sandbox, self.worktree, self.repo_root = sandbox, Path(worktree), repo_root
        self.processes = processes  # where the jail's process group is recorded while it runs
        self._group: ProcessGroup | None = None
        self._jail: _Process | None = None
        self._readable: frozenset[Path] = frozenset()
        self._bound: tuple[int, int] | None = None  # the worktree folder it bound (device, inode)
        self._lock = asyncio.Lock()
        self._finalizer: weakref.finalize | None = None
        self._warming: asyncio.Task | None = None
        self._launching = False  # `warm` is handing bwrap its command line (in a thread: it cannot be called back)

    @property
    def pgid(self) -> int | None:
        """The jail's process group (outside), while it runs."""
        return self._jail.popen.pid if self._jail is not None and self._jail.alive() else None

    async def start(self, command: str, *, cwd: Path, env: Mapping[str, str] | None = None,
                    readable: Iterable[Path] = ()) -> JailedCommand:
        """Start `command` (bash) in the jail in `cwd`, with the sandbox's environment plus `env`, the `readable`
        folders shown; the jail is started (again) as needed. SandboxError if it cannot be had."""
        wanted = frozenset(Path(p) for p in readable)
        async with self._lock:
            if self._jail is not None and (wanted != self._readable or self._worktree_id() != self._bound):
                await self._end()
            problem = ""
            for _ in range(2):
                if self._jail is None or not self._jail.alive():
                    await self._end()
                    await self._launch(wanted)
                    assert self._jail is not None
                    if problem := await self._jail.ready():
                        await self._end()
                        continue
                try:
                    return await self._send(command, Path(cwd), self.sandbox.command_env(env))
                except _JailDied as e:  # before the server had the command: it can be sent again
                    problem = str(e)
                    await self._end()
            raise SandboxError(f"the run's jail died twice in a row ({problem}); check the sandbox with "
                               f"`loopwright sandbox check`")

    def warm(self, readable: Iterable[Path] = ()) -> None:
        """Start the jail now, in the background, showing `readable`; a failure is left for the first command to
        meet (and say). Once per jail: a jail that has started, or is starting, is left as it is."""
        if self._warming is None and self._jail is None:
            self._warming = asyncio.ensure_future(self._warm(frozenset(Path(p) for p in readable)))

    async def _warm(self, readable: frozenset[Path]) -> None:
        slots = _warming_slots.setdefault(asyncio.get_running_loop(), asyncio.Semaphore(WARM_AT_ONCE))
        async with slots, self._lock:
            if self._jail is None:
                self._launching = True
                try:
                    with contextlib.suppress(SandboxError):  # the first command tries again, and says why
                        await self._launch(readable)
                finally:
                    self._launching = False
                if self._jail is None:
                    return
                if await self._jail.ready():
                    await self._end()

    def close(self) -> None:
        """End the jail and everything in it (nothing is left running); the next command starts a new one."""
        if self._finalizer is not None:
            self._finalizer()
            self._finalizer = None
        self._forget()

    async def aclose(self) -> None:
        """`close`, waiting for the jail to end in a worker thread: not on the event loop a daemon's runs share. A
        start `warm` began is called off, unless bwrap is being started right then: that is let finish (cut off, it
        would outlive the run), and the jail is ended."""
        if self._warming is not None:
            warming, self._warming = self._warming, None
            if not self._launching:
                warming.cancel()
            await asyncio.wait([warming])
        await self._end()

    async def _end(self) -> None:
        finalizer, self._finalizer = self._finalizer, None
        if finalizer is not None:
            await asyncio.to_thread(finalizer)
        self._forget()

    def _forget(self) -> None:
        if self.processes is not None and self._group is not None:
            self.processes.ended(self._group)
        self._jail, self._group = None, None

    def _worktree_id(self) -> tuple[int, int] | None:
        try:
            st = self.worktree.stat()
        except OSError:
            return None
        return st.st_dev, st.st_ino

    async def _launch(self, readable: frozenset[Path]) -> None:
        box = self.sandbox

        def argv(fd: int) -> list[str]:
            server = [sys.executable, "-I", "-S", "-c", SERVER, str(fd), box.limits_script()]
            return box.jail_argv(["/bin/bash", "-c", box.bridge_script() + 'exec "$@"', "lw-jail", *server],
                                 worktree=self.worktree, repo_root=self.repo_root, new_session=False,
                                 readable=sorted(readable),
                                 processes=box.policy.max_processes + 5)  # the server's 3 threads, the bridge

        self._bound = self._worktree_id()
        jail = await asyncio.get_running_loop().run_in_executor(_STARTERS, _Process, argv, box.command_env(),
                                                                self.worktree)
        self._jail, self._readable = jail, readable
        self._finalizer = weakref.finalize(self, jail.close)
        self._group = group_of(jail.popen.pid)  # the jail's group holds everything in it (the server's commands too)
        if self.processes is not None and self._group is not None:
            self.processes.started(self._group)

    async def _send(self, command: str, cwd: Path, env: Mapping[str, str]) -> JailedCommand:
        """The command, started. _JailDied if the server could not be given it; once it has it, a jail that dies
        makes the command one that was lost (it may have run: it is not sent again)."""
        assert self._jail is not None
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        out_r, out_w = os.pipe()
        try:
            socket.send_fds(self._jail.ctl, [b"c"], [theirs.fileno(), out_w])
        except OSError as e:
            ours.close()
            os.close(out_r)
            raise _JailDied(str(e)) from None
        finally:
            theirs.close()
            os.close(out_w)
        loop = asyncio.get_running_loop()
        stdout = asyncio.StreamReader()
        pipe = os.fdopen(out_r, "rb", buffering=0)
        opened: list[Callable[[], object]] = [pipe.close, ours.close]  # closed, last first, if cancelled
        try:
            transport, _ = await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(stdout), pipe)
            opened.append(transport.close)
            reader, writer = await asyncio.open_unix_connection(sock=ours)
        except BaseException:  # cancelled: the server ends the command once its socket is closed
            for close in reversed(opened):
                close()
            raise
        writer.write(json.dumps({"command": command, "cwd": str(cwd.resolve()), "env": dict(env)}).encode() + b"\n")
        return JailedCommand(reader, writer, stdout, transport)


def run_jail(sandbox: Sandbox | None, worktree: Path, repo_root: Path | None = None,
             processes: ProcessLedger | None = None) -> RunJail | None:
    """The long-lived jail for a run's commands in `sandbox` (None: it is not bwrap; commands run as they are)."""
    return RunJail(sandbox, worktree, repo_root, processes) if isinstance(sandbox, BwrapSandbox) else None
