"""The daemon's worker processes: `serve` spreads its runs over `workers` processes, each with its own event loop,
model clients and GIL, so a large fleet is not held to one core.

The daemon that holds the project's lock is the first of them: it recovers what a dead daemon left, runs the
inbox, chat, notifications and HTTP, obeys the queue's commands, and starts the others as its children
(`python -m loopwright.runtime.fleet.workers`) as soon as it holds the lock. They load what they need meanwhile,
say when they are ready, and every process starts taking tasks together once the daemon has recovered (a process
that began earlier would start its share of a queued fleet seconds before the rest). Every process takes queued
tasks up to its share of `max_parallel` and obeys the pause and kill commands of the runs it owns; they talk only
through the store (a task is claimed by one of them; a cancel for a run another process owns becomes a kill
command for it) and share one git lock file. A worker dies with the daemon (PR_SET_PDEATHSIG: a kill -9 of the
daemon leaves no worker running); a worker that dies alone has its runs resumed by the daemon, and is started
again.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from loopwright.runtime.config import Config

AUTO_RUNS_PER_PROCESS = 32  # below this many runs at once, one process keeps up (bench/fleet.py)
READY_SECONDS = 60.0  # the longest the daemon waits for its workers to be ready before it starts without them
EARLY_EXIT_SECONDS = 30.0  # a worker that exits this soon after its start failed to start...
EARLY_EXITS = 3  # ...and after this many such exits in a row it is not started again
PR_SET_PDEATHSIG = 1


def worker_count(config: Config, cores: int | None = None) -> int:
    """How many processes the daemon runs its runs in: `workers` if set; else one per AUTO_RUNS_PER_PROCESS of
    `max_parallel`, at most one per core. One for the ray backend (its loops run on the cluster) and off Linux (a
    worker dies with the daemon through PR_SET_PDEATHSIG)."""
    if config.backend != "local" or not sys.platform.startswith("linux"):
        return 1
    if config.workers is not None:
        return min(config.workers, config.max_parallel)
    cores = cores or os.cpu_count() or 1
    return max(1, min(cores, config.max_parallel // AUTO_RUNS_PER_PROCESS))


def shares(max_parallel: int, count: int) -> list[int]:
    """`max_parallel` split over `count` processes, the first (the daemon's) taking any remainder first."""
    return [max_parallel // count + (i < max_parallel % count) for i in range(count)]


class Workers:
    """The daemon's worker processes (the daemon itself is not one of them): started, watched, stopped."""

    def __init__(self, root: Path, shares: list[int], say: Callable[[str], None]):
        self.root, self.shares, self.say = root, shares, say
        self.procs: list[subprocess.Popen | None] = [None] * len(shares)
        self.started = [0.0] * len(shares)
        self.early_exits = [0] * len(shares)
        self.stopping = False
        self.going = False  # told to take tasks (a worker started again later is told at once)
        self._ready: dict[int, int] = {}  # a starting worker's ready pipe (read end) -> its number

    def start(self) -> None:
        """Start every worker; each loads what it needs, says it is ready, then waits for `go`."""
        for i in range(len(self.shares)):
            self._spawn(i)

    def _spawn(self, i: int) -> None:
        # from the event loop's thread, which lives as long as the daemon: the worker's death signal is tied to
        # the thread that started it
        ready_r, ready_w = os.pipe()
        argv = [sys.executable, "-m", "loopwright.runtime.fleet.workers", "--daemon", str(os.getpid()),
                "--number", str(i + 1), "--share", str(self.shares[i]), "--ready-fd", str(ready_w)]
        try:
            self.procs[i] = subprocess.Popen(argv, cwd=self.root, stdin=subprocess.PIPE, pass_fds=(ready_w,))
        finally:
            os.close(ready_w)
        self.started[i] = time.monotonic()
        if self.going:
            os.close(ready_r)
            self._tell_go(self.procs[i])
        else:
            self._ready[ready_r] = i + 1

    async def ready(self, timeout: float = READY_SECONDS) -> None:
        """Wait until every worker started said it is ready (or died, or `timeout` passed: said, and gone on)."""
        def wait() -> None:
            deadline = time.monotonic() + timeout
            while self._ready and time.monotonic() < deadline:
                readable, _, _ = select.select(list(self._ready), [], [], max(0.0, deadline - time.monotonic()))
                for fd in readable:
                    if not os.read(fd, 64):  # it died before it was ready: `poll` says so
                        self.say(f"worker {self._ready[fd]} exited while starting")
                    os.close(fd)
                    del self._ready[fd]
        await asyncio.to_thread(wait)
        for fd, number in self._ready.items():
            self.say(f"worker {number} is not ready after {timeout:.0f}s: the daemon starts without waiting for it")
            os.close(fd)
        self._ready.clear()

    def go(self) -> None:
        """Let every worker take tasks."""
        self.going = True
        for proc in self.procs:
            if proc is not None:
                self._tell_go(proc)

    @staticmethod
    def _tell_go(proc: subprocess.Popen) -> None:
        with contextlib.suppress(OSError):  # it died meanwhile: `poll` says so
            assert proc.stdin is not None
            proc.stdin.write(b"go\n")
            proc.stdin.close()

    def poll(self) -> list[str]:
        """Workers that exited since the last look, each said in a line, and started again (unless stopping)."""
        gone = []
        for i, proc in enumerate(self.procs):
            if proc is None or proc.poll() is None:
                continue
            self.procs[i] = None
            early = time.monotonic() - self.started[i] < EARLY_EXIT_SECONDS
            self.early_exits[i] = self.early_exits[i] + 1 if early else 0
            said = f"worker {i + 1} (pid {proc.pid}) exited with status {proc.returncode}"
            if self.early_exits[i] >= EARLY_EXITS:
                gone.append(f"{said}, {EARLY_EXITS} times in a row within {EARLY_EXIT_SECONDS:.0f}s of its start: "
                            f"it is not started again (its error is above; restart the daemon once it is fixed)")
            elif not self.stopping:
                gone.append(f"{said}: starting it again")
                self._spawn(i)
            else:
                gone.append(said)
        return gone

    def stop(self) -> None:
        """Ask every worker to pause its runs and exit (SIGTERM, as for the daemon)."""
        self.stopping = True
        for proc in self.procs:
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
            if proc is not None and proc.stdin is not None and not proc.stdin.closed:
                with contextlib.suppress(OSError):
                    proc.stdin.close()  # one still waiting for `go` reads the end instead

    async def wait(self, timeout: float) -> None:
        """Wait for the workers to exit; a worker still there after `timeout` is killed (its runs are resumed by
        the next daemon, as after a crash)."""
        deadline = time.monotonic() + timeout
        while any(p is not None and p.poll() is None for p in self.procs) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        for proc in self.procs:
            if proc is not None and proc.poll() is None:
                self.say(f"worker pid {proc.pid} did not stop in {timeout:.0f}s: killed")
                proc.kill()
                proc.wait()


def die_with(daemon_pid: int) -> None:
    """Have the kernel kill this process when the daemon that started it dies; exit now if it already has."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    if os.getppid() != daemon_pid:  # it died before the call above
        raise SystemExit(f"loopwright worker: the daemon (pid {daemon_pid}) is gone")


def main(argv: list[str] | None = None) -> int:
    """A worker process, started by the daemon (not by hand)."""
    parser = argparse.ArgumentParser(prog="loopwright-worker", description="one of a daemon's worker processes "
                                     "(started by `loopwright serve`, not by hand)")
    parser.add_argument("--daemon", type=int, required=True, help="the daemon's pid")
    parser.add_argument("--number", type=int, required=True)
    parser.add_argument("--share", type=int, required=True, help="runs this worker keeps going at once")
    parser.add_argument("--ready-fd", type=int, required=True, help="written to once ready for `go` on stdin")
    args = parser.parse_args(argv)
    die_with(args.daemon)
    from loopwright.errors import LoopwrightError
    from loopwright.runtime.fleet.daemon import Daemon
    from loopwright.runtime.project import open_project

    try:
        project = open_project(Path.cwd())
    except LoopwrightError as e:  # the daemon's log says it in one line; the daemon gives up after a few tries
        print(f"loopwright worker {args.number}: error: {e}", file=sys.stderr, flush=True)
        return 2
    asyncio.run(Daemon(project, worker=(args.number, args.share)).serve(ready=lambda: ready_for_go(args.ready_fd)))
    return 0


async def ready_for_go(ready_fd: int) -> bool:
    """Tell the daemon this worker is ready, then wait for its `go`; False when it never comes (the daemon is
    gone, or stopping)."""
    with contextlib.suppress(OSError):
        os.write(ready_fd, b"ready\n")
    os.close(ready_fd)
    line = await asyncio.to_thread(sys.stdin.buffer.readline)
    return line.strip() == b"go"


if __name__ == "__main__":
    raise SystemExit(main())
