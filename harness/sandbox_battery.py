"""The escape battery: what an agent's command must not do in the sandbox, and what it still must be able to do.

Each probe is a command run through `Sandbox.wrap` in a throw-away repository
(a worktree made by `git worktree add`, another run's worktree, a store) next
to a fake home holding an ssh key, AWS credentials and a .netrc, a stand-in
daemon whose environment holds a key, and loopback TCP servers. A probe is
judged by what it did on the host (a file written, a ref moved, a secret in
its output), never by its exit code, so the same probe tells an escape under
mode "none" apart from a block under "bwrap". Everything is bounded: a
400-process "fork bomb" under a 64-process limit, a 64 MB file under 8 MB,
512 MB of memory under 256 MB. `run_battery` runs the probes a few at a time
(each in a repository of its own), so `loopwright sandbox check` takes seconds.

    stage = Stage(tmp); results = [run_probe(p, stage, "bwrap") for p in PROBES]; stage.close()
"""

from __future__ import annotations

import importlib.util
import itertools
import os
import re
import secrets
import shlex
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import zipfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from loopwright.harness.sandbox import Network, Sandbox, SandboxPolicy

PY = shlex.quote(sys.executable)
MAX_PROCESSES, MAX_FILE_MB, MAX_MEMORY_MB = 64, 8, 256
FORKS, BIG_FILE_MB, MEMORY_MB = 400, 64, 512
PARALLEL = 6  # probes at a time: most of a probe's time is waiting (git, bwrap's set-up, pip, a child's exit)
KEY_NAME = "LW_BATTERY_API_KEY"


def _git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout.strip()


class _Banner:
    """A loopback TCP server that greets each connection with `token` and closes it."""

    def __init__(self, token: str):
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.token = token
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                conn.sendall(f"{self.token}\n".encode())

    def close(self) -> None:
        self.sock.close()


class Stage:
    """What the probes run against; one per battery, a fresh repository per probe (`repo`)."""

    def __init__(self, root: Path, bwrap: str | None = None):
        self.root = Path(root).resolve()
        self.bwrap = bwrap  # the bwrap binary to use ([sandbox] bwrap); default: as the sandbox finds it
        self.token = secrets.token_hex(8)
        self.home = self.root / "home"
        self.secret_files = {".ssh/id_ed25519": "-----BEGIN OPENSSH PRIVATE KEY-----\n",
                             ".aws/credentials": "[default]\naws_secret_access_key = ", ".netrc": "machine x password "}
        for rel, text in self.secret_files.items():
            path = self.home / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(f"{text}{self.secret(rel)}\n")
            path.chmod(0o600)
        (self.home / ".gitconfig").write_text("[user]\n\tname = battery\n\temail = battery@example.invalid\n")
        self.outside = self.root / "outside"
        self.outside.mkdir()
        self.allowed, self.other = _Banner(f"allowed-{self.token}"), _Banner(f"other-{self.token}")
        self.refused: list[tuple[str, int]] = []
        self._daemon: subprocess.Popen | None = None
        self._victims: list[subprocess.Popen] = []
        self._count = itertools.count(1)
        self._boxes: dict[tuple[str, str], Sandbox] = {}
        self._lock = threading.Lock()  # probes run in threads

    def secret(self, rel: str) -> str:
        return f"secret-{rel.replace('/', '-').strip('.')}-{self.token}"

    @property
    def daemon(self) -> subprocess.Popen:
        """A stand-in for `loopwright serve`: a process outside the jail with a key in its environment."""
        with self._lock:
            if self._daemon is None or self._daemon.poll() is not None:
                self._daemon = self._stand_in()
            return self._daemon

    def victim(self) -> subprocess.Popen:
        """A daemon stand-in of its own, for a probe that tries to kill it."""
        with self._lock:
            self._victims.append(self._stand_in())
            return self._victims[-1]

    def _stand_in(self) -> subprocess.Popen:
        env = {**os.environ, KEY_NAME: f"sk-battery-{self.token}"}
        return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"], env=env)

    def sandbox(self, mode: Literal["bwrap", "none"], network: Network) -> Sandbox:
        key = (mode, network)
        with self._lock:
            if key not in self._boxes:
                policy = SandboxPolicy(mode=mode, network=network, allow_hosts=[f"127.0.0.1:{self.allowed.port}"],
                                       bwrap=self.bwrap, max_processes=MAX_PROCESSES, max_file_mb=MAX_FILE_MB,
                                       max_memory_mb=MAX_MEMORY_MB)
                self._boxes[key] = Sandbox.for_policy(policy, home=self.home,
                                                      on_refused=lambda host, port: self.refused.append((host, port)))
            return self._boxes[key]

    def repo(self) -> Repo:
        return Repo(self.root / f"probe{next(self._count)}")

    def close(self) -> None:
        for box in self._boxes.values():
            box.close()
        self.allowed.close()
        self.other.close()
        for proc in [*self._victims, *([self._daemon] if self._daemon is not None else [])]:
            proc.kill()
            proc.wait()


class Repo:
    """A project on main, run r1's worktree (one commit ahead on lw/r1), run r2's worktree, and a store."""

    def __init__(self, base: Path):
        self.before: object = None  # what a probe's check compares with (a ref's commit, the daemon)
        self.path = base / "project"
        self.path.mkdir(parents=True)
        (self.path / "calc.py").write_text("def add(a, b):\n    return a + b\n")
        (self.path / "test_calc.py").write_text(  # unittest-style: pytest and unittest both run it
            "import unittest\n\nfrom calc import add\n\n\nclass AddTest(unittest.TestCase):\n"
            "    def test_add(self):\n        self.assertEqual(add(2, 3), 5)\n")
        (self.path / ".gitignore").write_text(".loopwright/\n__pycache__/\n")
        _git(self.path, "init", "-q", "-b", "main")
        _git(self.path, "config", "user.name", "battery")
        _git(self.path, "config", "user.email", "battery@example.invalid")
        _git(self.path, "add", "-A")
        _git(self.path, "commit", "-q", "-m", "initial")
        self.wt = self.path / ".loopwright" / "worktrees" / "r1"
        self.wt2 = self.path / ".loopwright" / "worktrees" / "r2"
        _git(self.path, "worktree", "add", "-q", "-b", "lw/r1", str(self.wt))
        _git(self.path, "worktree", "add", "-q", "-b", "lw/r2", str(self.wt2))
        (self.wt / "notes.txt").write_text("a checkpoint of run r1\n")
        _git(self.wt, "add", "notes.txt")
        _git(self.wt, "commit", "-q", "-m", "checkpoint")
        self.db = self.path / ".loopwright" / "state.db"
        with sqlite3.connect(self.db) as db:
            db.execute("create table tasks (id text, status text)")
            db.execute("insert into tasks values ('t1', 'running')")
        db.close()

    def ref(self, name: str) -> str:
        return _git(self.path, "rev-parse", name)

    def config(self, key: str) -> str:
        return subprocess.run(["git", "config", "--get", key], cwd=self.path, capture_output=True, text=True).stdout


@dataclass(frozen=True)
class Outcome:
    output: str
    exit_code: int | None


@dataclass
class Probe:
    """One thing a command may try: `prepare` (on the host, like files the agent wrote) returns the command;
    `worked` says, from the host, whether it did what it tried."""

    name: str
    kind: Literal["escape", "allowed"]
    prepare: Callable[[Stage, Repo], str]
    worked: Callable[[Stage, Repo, Outcome], bool]
    network: Network = "off"
    root_only: bool = False  # escapes only uid 0 could make even without a sandbox


@dataclass(frozen=True)
class ProbeResult:
    probe: Probe
    mode: str
    worked: bool
    outcome: Outcome

    @property
    def verdict(self) -> str:
        if self.probe.kind == "escape":
            return "ALLOWED" if self.worked else "blocked"
        return "works" if self.worked else "FAILS"

    @property
    def ok(self) -> bool:
        """What the sandbox must give: escapes blocked, allowed things working."""
        return self.worked == (self.probe.kind == "allowed")

    def line(self) -> str:
        return f"{self.verdict:<8} {self.probe.name}"


def run_probe(probe: Probe, stage: Stage, mode: Literal["bwrap", "none"]) -> ProbeResult:
    repo = stage.repo()
    command = probe.prepare(stage, repo)
    argv, env = stage.sandbox(mode, probe.network).wrap(command, worktree=repo.wt)
    try:
        proc = subprocess.run(argv, env=env, cwd=repo.wt, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, timeout=120)
        outcome = Outcome(proc.stdout.decode("utf-8", "replace"), proc.returncode)
    except subprocess.TimeoutExpired as e:
        outcome = Outcome((e.stdout or b"").decode("utf-8", "replace"), None)
    return ProbeResult(probe, mode, probe.worked(stage, repo, outcome), outcome)


def run_battery(mode: Literal["bwrap", "none"], root: Path | None = None, *, bwrap: str | None = None,
                on_result: Callable[[ProbeResult], None] | None = None) -> list[ProbeResult]:
    """Every probe under `mode`, in a temporary folder (or `root`), PARALLEL at a time (each has a repository of
    its own); `on_result` sees each result, in the order of PROBES, as soon as it and those before it are in."""
    probes = [p for p in PROBES if os.geteuid() == 0 or not p.root_only]
    with tempfile.TemporaryDirectory(prefix="lw-battery-") as tmp:
        stage = Stage(Path(root or tmp), bwrap=bwrap)
        try:
            stage.sandbox(mode, "off")  # its self-test, once
            with ThreadPoolExecutor(PARALLEL) as pool:
                futures = [pool.submit(run_probe, probe, stage, mode) for probe in probes]
                results = []
                for future in futures:
                    results.append(future.result())
                    if on_result is not None:
                        on_result(results[-1])
            return results
        finally:
            stage.close()


# -- the probes --------------------------------------------------------------------------------------


def _write(target: Callable[[Stage, Repo], Path]) -> tuple[Callable, Callable]:
    def prepare(stage: Stage, repo: Repo) -> str:
        return f"echo pwned > {shlex.quote(str(target(stage, repo)))}"

    return prepare, lambda stage, repo, out: target(stage, repo).exists()


def _read(rel: str) -> tuple[Callable, Callable]:
    return (lambda stage, repo: f"cat {shlex.quote(str(stage.home / rel))}",
            lambda stage, repo, out: stage.secret(rel) in out.output)


def _ref_moves(ref: str, command: str) -> tuple[Callable, Callable]:
    def prepare(stage: Stage, repo: Repo) -> str:
        repo.before = repo.ref(ref)
        return command

    return prepare, lambda stage, repo, out: repo.ref(ref) != repo.before


def _connect_script(port_of: Callable[[Stage], int]) -> Callable[[Stage, Repo], str]:
    """Reach 127.0.0.1:port by any means the command has: through $HTTPS_PROXY (CONNECT) if set, else directly."""
    def prepare(stage: Stage, repo: Repo) -> str:
        code = (f"import os, socket, urllib.parse\n"
                f"proxy = os.environ.get('HTTPS_PROXY')\n"
                f"if proxy:\n"
                f"    u = urllib.parse.urlsplit(proxy); s = socket.create_connection((u.hostname, u.port), 5)\n"
                f"    s.sendall(b'CONNECT 127.0.0.1:{port_of(stage)} HTTP/1.1\\r\\n\\r\\n')\n"
                f"else:\n"
                f"    s = socket.create_connection(('127.0.0.1', {port_of(stage)}), 5)\n"
                f"print(s.makefile('rb').read(4096).decode())\n")
        return f"{PY} -c {shlex.quote(code)}"

    return prepare


def _tests_command() -> str:
    """The project's tests as a check runs them: pytest where the Python in use has it (a dev install), else
    unittest (an installed wheel brings no pytest); the battery's project suits both."""
    if importlib.util.find_spec("pytest") is not None:
        return f"{PY} -m pytest -q -p no:cacheprovider"
    return f"{PY} -m unittest discover -q"


def _tests_passed(output: str) -> bool:
    return "2 passed" in output or "1 passed" in output or re.search(r"^OK$", output, re.M) is not None


def _conftest(stage: Stage, repo: Repo) -> str:
    leak, host_file = repo.wt / "leak.txt", Path(tempfile.gettempdir()) / f"lw-battery-conftest-{stage.token}"
    escape = (
        "import pathlib, subprocess\n"
        f"for src, dst in (({str(stage.home / '.ssh/id_ed25519')!r}, {str(leak)!r}), ('pwned', {str(host_file)!r})):\n"
        "    try:\n"
        "        text = pathlib.Path(src).read_text() if src != 'pwned' else src\n"
        "        pathlib.Path(dst).write_text(text)\n"
        "    except OSError:\n"
        "        pass\n"
        "subprocess.run(['git', 'update-ref', 'refs/heads/main', 'HEAD'])\n")
    (repo.wt / "conftest.py").write_text(escape)  # what pytest runs first
    (repo.wt / "test_escape.py").write_text(escape)  # what any test runner imports
    repo.before = repo.ref("main")
    return _tests_command()


def _conftest_worked(stage: Stage, repo: Repo, out: Outcome) -> bool:
    leak, host_file = repo.wt / "leak.txt", Path(tempfile.gettempdir()) / f"lw-battery-conftest-{stage.token}"
    escaped = host_file.exists() or repo.ref("main") != repo.before or (
        leak.exists() and stage.secret(".ssh/id_ed25519") in leak.read_text())
    host_file.unlink(missing_ok=True)
    return escaped


def _host_tmp(stage: Stage, repo: Repo) -> Path:
    return Path(tempfile.gettempdir()) / f"lw-battery-{stage.token}-{repo.path.parent.name}"


def _host_tmp_worked(stage: Stage, repo: Repo, out: Outcome) -> bool:
    path = _host_tmp(stage, repo)
    escaped = path.exists()
    path.unlink(missing_ok=True)
    return escaped


def _symlink(stage: Stage, repo: Repo) -> str:
    return f"ln -s {shlex.quote(str(stage.outside))} escape && echo pwned > escape/{repo.path.parent.name}"


def _proc_root(stage: Stage, repo: Repo) -> str:
    key = shlex.quote(str(stage.home / ".ssh/id_ed25519"))
    return f"cat /proc/1/root{key}; cat /proc/{stage.daemon.pid}/root{key}"


def _kill(stage: Stage, repo: Repo) -> str:
    repo.before = stage.victim()
    return f"kill -9 {repo.before.pid}"


def _killed(stage: Stage, repo: Repo, out: Outcome) -> bool:
    """Dead, or SIGKILL pending (sent, not yet acted on: the `kill` has returned by now), or dead within 0.2 s."""
    victim = repo.before
    assert isinstance(victim, subprocess.Popen)
    if victim.poll() is not None:
        return True
    try:
        status = Path(f"/proc/{victim.pid}/status").read_text()
    except OSError:
        return True
    pending = 0
    for m in re.finditer(r"^(?:SigPnd|ShdPnd):\s*([0-9a-f]+)", status, re.M):
        pending |= int(m[1], 16)
    if pending & (1 << (signal.SIGKILL - 1)):
        return True
    try:
        victim.wait(timeout=0.2)
    except subprocess.TimeoutExpired:
        return False
    return True


def _db(stage: Stage, repo: Repo) -> str:
    code = (f"import sqlite3; db = sqlite3.connect('file:{repo.db}?mode=rw', uri=True)\n"
            f"print(db.execute('select status from tasks').fetchall())\n"
            f"db.execute(\"update tasks set status = 'succeeded'\"); db.commit()")
    return f"{PY} -c {shlex.quote(code)}"


def _db_worked(stage: Stage, repo: Repo, out: Outcome) -> bool:
    with sqlite3.connect(repo.db) as db:
        status = db.execute("select status from tasks").fetchone()[0]
    db.close()
    return "running" in out.output or status != "running"


def _hook(stage: Stage, repo: Repo) -> Path:
    return repo.path / ".git" / "hooks" / "post-checkout"


def _fork(stage: Stage, repo: Repo) -> str:
    code = (f"import os, time\nn = 0\ntry:\n    for _ in range({FORKS}):\n        if os.fork() == 0:\n"
            f"            time.sleep(1); os._exit(0)\n        n += 1\nexcept OSError as e:\n    print(e)\n"
            f"print('forked', n)")
    return f"{PY} -c {shlex.quote(code)}"


def _big_file(stage: Stage, repo: Repo) -> str:
    return f"head -c {BIG_FILE_MB * 1024 * 1024} /dev/zero > big.bin"


def _memory(stage: Stage, repo: Repo) -> str:
    code = f"b = bytearray({MEMORY_MB} * 1024 * 1024); print(len(b) >> 20, 'MB held')"
    return f"{PY} -c {shlex.quote(code)}"


def _wheel(stage: Stage, repo: Repo) -> str:
    """A wheel built here (no network, no build backend), installed offline into a venv inside the worktree."""
    dist = repo.wt / "dist"
    dist.mkdir()
    info = "lwprobe-1.0.dist-info"
    with zipfile.ZipFile(dist / "lwprobe-1.0-py3-none-any.whl", "w") as whl:
        whl.writestr("lwprobe.py", f"TOKEN = 'wheel-{stage.token}'\n")
        whl.writestr(f"{info}/METADATA", "Metadata-Version: 2.1\nName: lwprobe\nVersion: 1.0\n")
        whl.writestr(f"{info}/WHEEL", "Wheel-Version: 1.0\nGenerator: battery\nRoot-Is-Purelib: true\n"
                                      "Tag: py3-none-any\n")
        whl.writestr(f"{info}/RECORD", f"lwprobe.py,,\n{info}/METADATA,,\n{info}/WHEEL,,\n{info}/RECORD,,\n")
    # the Python in use's pip installs into the venv (--python): a venv of its own with pip takes seconds more
    pip = (f"{PY} -m venv --without-pip .venv && {PY} -m pip --python .venv/bin/python"
           if importlib.util.find_spec("pip") is not None else f"{PY} -m venv .venv && .venv/bin/python -m pip")
    return (f"{pip} install -q --no-index --disable-pip-version-check dist/lwprobe-1.0-py3-none-any.whl && "
            f".venv/bin/python -c 'import lwprobe; print(lwprobe.TOKEN)'")


def _git_add(stage: Stage, repo: Repo) -> str:
    (repo.wt / "calc.py").write_text("def add(a, b):\n    return b + a\n")
    return "git status --short && git add calc.py && git diff --cached --stat && git log --oneline -1"


PROBES: list[Probe] = [
    Probe("write $HOME", "escape", *_write(lambda s, r: s.home / f"pwned-{r.path.parent.name}")),
    Probe("write the host's /tmp", "escape", lambda s, r: f"echo pwned > {_host_tmp(s, r)}", _host_tmp_worked),
    Probe("write the main checkout", "escape", *_write(lambda s, r: r.path / "pwned.txt")),
    Probe("write another run's worktree", "escape", *_write(lambda s, r: r.wt2 / "pwned.txt")),
    Probe("read ~/.ssh/id_ed25519", "escape", *_read(".ssh/id_ed25519")),
    Probe("read ~/.aws/credentials", "escape", *_read(".aws/credentials")),
    Probe("read ~/.netrc", "escape", *_read(".netrc")),
    Probe("open .loopwright/state.db", "escape", _db, _db_worked),
    Probe("write through a symlink out of the worktree", "escape", _symlink,
          lambda s, r, o: (s.outside / r.path.parent.name).exists()),
    Probe("/proc/1/root, /proc/<daemon>/root", "escape", _proc_root,
          lambda s, r, o: s.secret(".ssh/id_ed25519") in o.output),
    Probe("/proc/<daemon>/environ", "escape", lambda s, r: f"tr '\\0' '\\n' < /proc/{s.daemon.pid}/environ",
          lambda s, r, o: f"sk-battery-{s.token}" in o.output),
    Probe("kill the daemon", "escape", _kill, _killed),
    Probe("write a host-wide kernel setting (core_pattern, unchanged)", "escape",
          lambda s, r: "v=$(cat /proc/sys/kernel/core_pattern) && echo \"$v\" > /proc/sys/kernel/core_pattern && "
                       "echo written", lambda s, r, o: "written" in o.output, root_only=True),
    Probe("loopback TCP server (network off)", "escape", _connect_script(lambda s: s.allowed.port),
          lambda s, r, o: s.allowed.token in o.output),
    Probe("host not on allow_hosts, through the proxy (network allow)", "escape",
          _connect_script(lambda s: s.other.port), lambda s, r, o: s.other.token in o.output, network="allow"),
    Probe("git update-ref refs/heads/main HEAD", "escape", *_ref_moves("main", "git update-ref refs/heads/main HEAD")),
    Probe("git update-ref another run's branch", "escape",
          *_ref_moves("lw/r2", "git update-ref refs/heads/lw/r2 HEAD")),
    Probe("git commit (refused: checkpoints commit)", "escape",
          *_ref_moves("lw/r1", "echo x >> notes.txt && git commit -qam 'agent commit'")),
    Probe("git config core.hooksPath", "escape", lambda s, r: "git config core.hooksPath /tmp",
          lambda s, r, o: r.config("core.hooksPath") != ""),
    Probe("write .git/hooks/post-checkout", "escape",
          lambda s, r: "echo 'echo pwned' > \"$(git rev-parse --git-common-dir)/hooks/post-checkout\"",
          lambda s, r, o: _hook(s, r).exists()),
    Probe("point the worktree's .git elsewhere", "escape", lambda s, r: "echo 'gitdir: /tmp' > .git",
          lambda s, r, o: "/tmp\n" == (r.wt / ".git").read_text()[-5:]),
    Probe("conftest.py in the acceptance check", "escape", _conftest, _conftest_worked),
    Probe(f"fork bomb ({FORKS} processes, limit {MAX_PROCESSES})", "escape", _fork,
          lambda s, r, o: f"forked {FORKS}" in o.output),
    Probe(f"big file ({BIG_FILE_MB} MB, limit {MAX_FILE_MB} MB)", "escape", _big_file,
          lambda s, r, o: (r.wt / "big.bin").stat().st_size >= BIG_FILE_MB << 20),
    Probe(f"memory ({MEMORY_MB} MB, limit {MAX_MEMORY_MB} MB)", "escape", _memory,
          lambda s, r, o: "MB held" in o.output),
    Probe("read the project's files", "allowed", lambda s, r: "cat calc.py",
          lambda s, r, o: "return a + b" in o.output),
    Probe("the project's tests (pytest, or unittest where pytest is not installed)", "allowed",
          lambda s, r: _tests_command(), lambda s, r, o: _tests_passed(o.output)),
    Probe("git status, add, diff --cached, log", "allowed", _git_add,
          lambda s, r, o: "calc.py" in _git(r.wt, "diff", "--cached", "--name-only") and "checkpoint" in o.output),
    Probe("pip install a local wheel into a venv in the worktree", "allowed", _wheel,
          lambda s, r, o: f"wheel-{s.token}" in o.output),
    Probe("allowed host through the proxy (network allow)", "allowed", _connect_script(lambda s: s.allowed.port),
          lambda s, r, o: s.allowed.token in o.output, network="allow"),
]
