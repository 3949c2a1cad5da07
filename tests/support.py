"""Helpers shared by the tests: project files, script turns, and running loopwright as a process."""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from loopwright.harness.sandbox import Sandbox, SandboxPolicy

PY = sys.executable
CHECK = f"{PY} -m unittest -q"

CALC = '''def add(a, b):
    return a - b


def double(x):
    return x * 2
'''

TEST_CALC = '''import unittest

from calc import add, double


class CalcTest(unittest.TestCase):
    def test_add(self):
        self.assertEqual(add(2, 3), 5)

    def test_double(self):
        self.assertEqual(double(4), 8)
'''


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout.strip()


def write_script(path: Path, turns: list[dict]) -> Path:
    path.write_text(json.dumps({"turns": turns}))
    return path


def call(name: str, **arguments) -> dict:
    return {"name": name, "arguments": arguments}


def turn(*calls: dict, text: str = "", expect: str | None = None) -> dict:
    t: dict = {"text": text, "tool_calls": list(calls)}
    if expect is not None:
        t["expect"] = expect
    return t


FIX_ADD = turn(call("edit_file", path="calc.py", old="return a - b", new="return a + b"))
FINISH = turn(call("finish", summary="fixed add"))


def loopwright_subprocess(cwd: Path, *args: str, env: dict | None = None, **kw) -> subprocess.Popen:
    """`loopwright` as its own process (for signals and kill -9)."""
    e = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
    e.update(env or {})
    return subprocess.Popen([PY, "-m", "loopwright.cli.main", *args], cwd=cwd, env=e, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kw)


def wait_for_row(db: Path, sql: str, timeout: float = 30.0):
    """Poll the store (as another process would) until `sql` returns a row; None on timeout."""
    import sqlite3
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if db.exists():
            try:
                row = sqlite3.connect(db).execute(sql).fetchone()
            except sqlite3.OperationalError:  # not created yet
                row = None
            if row:
                return row
        time.sleep(0.05)
    return None


def claim_run_in_child(path: Path, run_id: str, queue) -> None:
    """In a spawned process: try to move a running run to succeeded, report whether this process won."""
    from loopwright.memory.store import Store

    queue.put(Store(path).transition_run(run_id, "succeeded", only_from=("running",)))


class DaemonProcess:
    """`loopwright serve` as a real subprocess, started and waited for (its pid file names it)."""

    def __init__(self, repo: Path, log: Path, max_parallel: int, *args: str):
        self.repo, self.log = repo, log
        with log.open("a") as out:
            self.proc = subprocess.Popen([sys.executable, "-m", "loopwright.cli.main", "serve", "--max-parallel",
                                          str(max_parallel), *args], cwd=repo, stdout=out, stderr=out)
        deadline = time.monotonic() + 20
        pid_file = repo / ".loopwright" / "daemon.pid"
        while time.monotonic() < deadline:
            if pid_file.exists() and pid_file.read_text().strip() == str(self.proc.pid):
                return
            assert self.proc.poll() is None, log.read_text()
            time.sleep(0.05)
        raise AssertionError("the daemon did not start: " + log.read_text())

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.proc.wait(timeout)


def served_http(log: Path, since: int = 0) -> str:
    """The base URL a daemon started with `--http 127.0.0.1:0` says (in `log`, after byte `since`) it serves the chat
    API on."""
    found: list[str] = []

    def said() -> bool:
        found[:] = re.findall(r"serving the chat API on (http://127\.0\.0\.1:\d+)", log.read_text()[since:])
        return bool(found)
    until(said, "the daemon to serve HTTP")
    return found[0]


def processes(marker: str) -> list[str]:
    """The command lines of running processes that contain `marker` (a command a test started, e.g. `sleep 1001`)."""
    ps = subprocess.run(["ps", "-eww", "-o", "args"], capture_output=True, text=True, check=True).stdout
    return [line for line in ps.splitlines() if marker in line and "ps -eww" not in line]


def until(condition, what: str, timeout: float = 30.0) -> None:
    """Poll `condition` (as a person watching `loopwright status` would) until it holds."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


class MemoryPad:
    """A scratch pad held in memory, for tool contexts built by hand."""

    def __init__(self):
        self.text = ""

    def read(self) -> str:
        return self.text

    def append(self, text: str) -> None:
        self.text = f"{self.text}\n{text}" if self.text else text

    def replace(self, text: str) -> None:
        self.text = text


# The sandbox as a default-config run gets it here. Tests that need bwrap skip where it cannot run; in CI (the
# variable CI set) they never skip: they run, and fail, so a runner without a working bwrap cannot pass unnoticed.
SANDBOX = Sandbox.for_policy(SandboxPolicy())
needs_bwrap = pytest.mark.skipif(SANDBOX.mode != "bwrap" and not os.environ.get("CI"),
                                 reason=f"bwrap cannot run here: {SANDBOX.warning}")


# Where .ci/run installs the agent CLIs the tests run (tests/package.json). Not a LOOPWRIGHT_* name: those are
# config overrides (an unknown one is an error), and the autouse fixture drops them from each test's environment.
AGENT_CLIS = os.environ.get("TEST_AGENT_CLIS", "")


def agent_cli(name: str) -> str:
    """The path of an agent CLI (`claude`, `codex`) in TEST_AGENT_CLIS or on PATH. Where it is missing the
    test skips and says how to install it; in CI (the variable CI set) it fails instead."""
    found = shutil.which(name, path=os.pathsep.join(p for p in (AGENT_CLIS, os.environ.get("PATH", "")) if p))
    if found is None:
        why = (f"`{name}` is not installed: `npm ci` in a copy of tests/package.json and set TEST_AGENT_CLIS "
               f"to its node_modules/.bin (as .ci/run does)")
        if os.environ.get("CI"):
            pytest.fail(why)
        pytest.skip(why)
    return found


def fill(disk: Path, leave_mb: float) -> Path:
    """A file that fills `disk` up to `leave_mb` MB free."""
    path = disk / "fill"
    with path.open("wb", buffering=0) as f:
        while (left := shutil.disk_usage(disk).free - leave_mb * 1e6) > 0:
            try:
                f.write(b"\0" * int(min(left, 1 << 20)))
            except OSError as e:  # the last blocks (nothing left: what was asked)
                if e.errno != errno.ENOSPC:
                    raise
                break
    return path
