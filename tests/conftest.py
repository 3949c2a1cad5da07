"""Shared fixtures: real git repositories in temporary folders, and the CLI driven in-process."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import threading
from pathlib import Path

import pytest
from support import CALC, TEST_CALC, DaemonProcess, agent_cli, git

from loopwright.cli.main import main


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch, tmp_path):
    """No real keys, no user config, a predictable git identity for the fixture repositories only."""
    for name in list(os.environ):
        if name.startswith("LOOPWRIGHT_") or name.endswith("_API_KEY"):
            monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    monkeypatch.setenv("LOOPWRIGHT_HOME", str(tmp_path / "loopwright-home"))  # global lessons, user skills


@pytest.fixture
def repo(tmp_path) -> Path:
    """A git repository on branch main with a small project whose test_add fails."""
    root = tmp_path / "project"
    root.mkdir()
    (root / "calc.py").write_text(CALC)
    (root / "test_calc.py").write_text(TEST_CALC)
    (root / ".gitignore").write_text("__pycache__/\n*.log\n")
    git(root, "init", "-q", "-b", "main")
    git(root, "config", "user.name", "Test User")
    git(root, "config", "user.email", "test@example.invalid")
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "initial")
    return root


class CLI:
    """Runs `loopwright` in-process (same entry point as the console script) and captures its output."""

    def __init__(self, capsys, monkeypatch):
        self.capsys, self.monkeypatch = capsys, monkeypatch

    def __call__(self, cwd: Path, *args: str) -> tuple[int, str, str]:
        self.monkeypatch.chdir(cwd)
        self.capsys.readouterr()
        code = main([str(a) for a in args])
        out, err = self.capsys.readouterr()
        return code, out, err

    def json(self, cwd: Path, *args: str):
        code, out, err = self(cwd, *args, "--json")
        assert code in (0, 1), f"exit {code}: {err}"
        return json.loads(out)


@pytest.fixture
def cli(capsys, monkeypatch) -> CLI:
    return CLI(capsys, monkeypatch)


@pytest.fixture
def utc(monkeypatch):
    """Local time is UTC for the test (snapshots of screens that show clock times)."""
    import time

    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


@pytest.fixture
def project(repo):
    """The repo fixture, initialised, opened as a project."""
    from loopwright.runtime.project import init_project, open_project

    init_project(repo)
    return open_project(repo)


@pytest.fixture
def daemon(repo, tmp_path):
    """Start `loopwright serve` in the repo (killed at the end of the test if still running)."""
    started: list[DaemonProcess] = []

    def start(max_parallel: int = 4) -> DaemonProcess:
        d = DaemonProcess(repo, tmp_path / "daemon.log", max_parallel)
        started.append(d)
        return d

    yield start
    for d in started:
        if d.proc.poll() is None:
            d.proc.kill()
            d.proc.wait()


@pytest.fixture
def banner():
    """The port of a TCP server on 127.0.0.1 that greets whoever connects (what a jailed command must not reach)."""
    srv = socket.create_server(("127.0.0.1", 0))

    def serve():
        while True:
            try:
                conn, _ = srv.accept()
            except OSError:
                return
            with conn:
                conn.sendall(b"hello from the host\n")

    threading.Thread(target=serve, daemon=True).start()
    yield srv.getsockname()[1]
    srv.close()


@pytest.fixture
def claude_cli() -> str:
    """The real Claude Code CLI (skipped where it is not installed, failed in CI)."""
    return agent_cli("claude")


@pytest.fixture
def codex_cli() -> str:
    """The real Codex CLI (skipped where it is not installed, failed in CI)."""
    return agent_cli("codex")


@pytest.fixture
def small_disk(repo, tmp_path):
    """The repo fixture copied onto a tmpfs of 40 MB of its own (mounting needs root: skipped with the reason where
    one cannot be mounted; in CI, the variable CI set, it fails instead)."""
    disk = tmp_path / "disk"
    disk.mkdir()
    try:
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=40m", "tmpfs", str(disk)], capture_output=True,
                              text=True)
        why = f"cannot mount a tmpfs here: {done.stderr.strip() or f'exit {done.returncode}'}"
    except OSError as e:
        done, why = None, f"cannot mount a tmpfs here: {e}"
    if done is None or done.returncode != 0:
        if os.environ.get("CI"):
            pytest.fail(why)
        pytest.skip(why)
    try:
        shutil.copytree(repo, disk / "project")
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)
