"""The rig of the fleet benchmarks (bench/fleet.py, bench/ray.py): a small committed project whose config points
the anthropic SDK at the loopback server, run as its own process with a ten-turn script; tasks posted as `loopwright
post` does; `loopwright serve` as a subprocess; CPU and memory read from /proc.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

TURNS = 10
API_KEY = "sk-bench-not-a-key"
MODEL = "claude-sonnet-4-6"  # in the price table: the run is costed like a real one
TERMINAL = ("succeeded", "failed", "needs_review", "cancelled", "killed", "budget_exceeded")

FILES = {
    "README.md": "# calc\n\nA tiny calculator used by the fleet benchmark.\n",
    "src/calc.py": "def add(a, b):\n    return a + b\n\n\ndef mul(a, b):\n    return a * b\n",
    "src/util.py": "def clamp(x, lo, hi):\n    return max(lo, min(x, hi))\n",
    "tests/test_calc.py": "from src.calc import add, mul\n\n\ndef test_add():\n    assert add(2, 3) == 5\n\n\n"
                          "def test_mul():\n    assert mul(2, 3) == 6\n",
    "docs/design.md": "# Design\n\nOne module per concern.\n",
}


def _call(name: str, **arguments) -> dict:
    return {"name": name, "arguments": arguments}


# Ten turns of cheap, realistic tool calls (what a coding agent does first on a small task). Turns 6 and 7 change
# files, so the loop checkpoints after them; turn 8's shell step makes the loop check for changes too.
SCRIPT_TURNS: list[tuple[str, list[dict]]] = [
    ("Looking at the repository.", [_call("list_files")]),
    ("Reading the README and noting the plan.", [
        _call("read_file", path="README.md"),
        _call("scratchpad", action="append", text="plan: read calc, add sub(), note it in docs")]),
    ("Reading the module.", [_call("read_file", path="src/calc.py")]),
    ("Finding the functions.", [_call("grep", pattern=r"^def ", path="src")]),
    ("Reading the tests.", [_call("read_file", path="tests/test_calc.py")]),
    ("Writing the design note.", [_call("write_file", path="docs/sub.md", content="# sub\n\nsub(a, b) = a - b\n")]),
    ("Adding sub().", [_call("edit_file", path="src/calc.py", old="def mul(a, b):",
                             new="def sub(a, b):\n    return a - b\n\n\ndef mul(a, b):")]),
    ("Checking the change.", [_call("shell", command="git status --short && git diff --stat")]),
    ("Re-reading my notes.", [_call("scratchpad", action="read"), _call("read_file", path="src/calc.py")]),
    ("Done.", [_call("finish", summary="added sub() and a design note")]),
]
SCRIPT_SAYS = ("list_files; read_file README + scratchpad append; read_file; grep; read_file; write_file (checkpoint); "
               "edit_file (checkpoint); shell `git status && git diff --stat`; scratchpad read + read_file; finish "
               "-> check `true` -> squash-merge")
USAGE = {"input_tokens": 2500, "output_tokens": 120}  # ~$0.009 a turn at claude-sonnet-4-6 prices


def write_script(path: Path) -> Path:
    turns = [{"text": text, "tool_calls": calls, "usage": USAGE} for text, calls in SCRIPT_TURNS]
    assert len(turns) == TURNS
    path.write_text(json.dumps({"turns": turns}))
    return path


# -- processes --------------------------------------------------------------------------------------


def bench_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOOPWRIGHT_")}
    env["ANTHROPIC_API_KEY"] = API_KEY
    return env


def cpu_seconds(pid: int, children: bool = False) -> float:
    """utime + stime of a live process (or of its children it has reaped: git, shells), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    first = 13 if children else 11
    return (int(fields[first]) + int(fields[first + 1])) / os.sysconf("SC_CLK_TCK")


def daemon_processes(pid: int) -> list[int]:
    """The daemon `pid` and the worker processes it runs runs in (runtime/fleet/workers.py)."""
    found = [pid]
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            children = (task / "children").read_text().split()
        except OSError:
            continue
        for child in children:
            try:
                if b"loopwright.runtime.fleet.workers" in Path(f"/proc/{child}/cmdline").read_bytes():
                    found.append(int(child))
            except OSError:
                pass
    return found


def fleet_cpu(pid: int) -> dict[int, tuple[float, float]]:
    """Per process of the daemon (`daemon_processes`): (its CPU seconds, its reaped children's: git, shells)."""
    out = {}
    for p in daemon_processes(pid):
        with contextlib.suppress(OSError):
            out[p] = (cpu_seconds(p), cpu_seconds(p, True))
    return out


def fleet_cpu_since(pid: int, before: dict[int, tuple[float, float]]) -> tuple[float, float, int]:
    """(the daemon's processes' CPU, their children's, how many processes) since `before`; a worker started since
    counts from zero (its start included)."""
    now = fleet_cpu(pid)
    own = sum(c[0] - before.get(p, (0.0, 0.0))[0] for p, c in now.items())
    kids = sum(c[1] - before.get(p, (0.0, 0.0))[1] for p, c in now.items())
    return own, kids, len(now)


def fleet_rss_mb(pid: int) -> float:
    """VmRSS of the daemon and its worker processes together."""
    return sum(rss_mb(p) for p in daemon_processes(pid))


def machine_busy() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine since boot, from /proc/stat."""
    ticks = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = ticks[3] + ticks[4]  # idle + iowait
    hz = os.sysconf("SC_CLK_TCK")
    return (sum(ticks) - idle) / hz, sum(ticks) / hz


def proc_status(pid: int) -> dict[str, str]:
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        k, _, v = line.partition(":")
        out[k] = v.strip()
    return out


def rss_mb(pid: int) -> float:
    return int(proc_status(pid)["VmRSS"].split()[0]) / 1024


class Loopback:
    """The loopback server as its own process, replaying `script` (default: the fleet's ten turns) per
    conversation; its request log says when each conversation called."""

    def __init__(self, work: Path, latency: float, script: Path | None = None):
        self.log_path = work / f"requests-{latency:g}s.jsonl"
        self.out = (work / f"loopback-{latency:g}s.out").open("w")
        argv = [sys.executable, "-m", "loopwright.harness.loopback",
                "--script", str(script or write_script(work / "script.json")),
                "--per-conversation", "--latency", str(latency), "--port", "0", "--log-requests", str(self.log_path),
                "--no-accounting"]
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=self.out, text=True, env=bench_env())
        self.base_url = ""
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()  # type: ignore[union-attr]
            if not line:
                raise RuntimeError(f"the loopback server exited: {Path(self.out.name).read_text()}")
            if "anthropic base_url:" in line:
                self.base_url = line.split("anthropic base_url:")[1].strip()
                break

    @property
    def openai_base_url(self) -> str:
        return self.base_url + "/v1"

    def requests(self) -> list[dict]:
        if not self.log_path.exists():
            return []
        return [json.loads(line) for line in self.log_path.read_text().splitlines() if line.strip()]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.out.close()


class Daemon:
    """`loopwright serve --max-parallel N` as a subprocess; ready once it holds the project's lock."""

    def __init__(self, repo: Path, log: Path, max_parallel: int, *, wrapper: list[str] | None = None):
        self.repo = repo
        argv = [sys.executable, *(wrapper or ["-m", "loopwright.cli.main"]), "serve",
                "--max-parallel", str(max_parallel)]
        with log.open("a") as out:
            self.launched = time.time()
            self.proc = subprocess.Popen(argv, cwd=repo, stdout=out, stderr=subprocess.STDOUT, env=bench_env())
        pid_file = repo / ".loopwright" / "daemon.pid"
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if pid_file.read_text().strip() == str(self.proc.pid):
                    break
            except OSError:
                pass
            if self.proc.poll() is not None:
                raise RuntimeError(f"the daemon exited ({self.proc.returncode}): {log.read_text()[-3000:]}")
            time.sleep(0.005)
        else:
            raise RuntimeError("the daemon did not take its lock in 120 s")
        self.ready = time.time()  # the lock is taken just before it recovers runs and starts scheduling

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stop(self, timeout: float = 60) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()

    def kill(self) -> float:
        """kill -9, reaped at once; the time it was sent."""
        at = time.time()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        return at


# -- the project ------------------------------------------------------------------------------------


def git(cwd: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True)


def make_project(top: Path, name: str, base_url: str, max_parallel: int, workers: int | None = None) -> Path:
    """A committed repository, `loopwright init`, and a config for the anthropic SDK against the loopback
    (`workers`: the daemon's processes; None: its default)."""
    repo = top / name
    for rel, text in FILES.items():
        (repo / rel).parent.mkdir(parents=True, exist_ok=True)
        (repo / rel).write_text(text)
    git(repo, "init", "-q", "-b", "main")
    git(repo, "config", "user.name", "bench")
    git(repo, "config", "user.email", "bench@example.invalid")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "calc")
    # `loopwright init`, in this process: a subprocess would import the SDKs again, seconds on a slow machine
    from loopwright.cli.main import main as loopwright

    with contextlib.chdir(repo), contextlib.redirect_stdout(io.StringIO()):
        if loopwright(["init"]) != 0:
            raise RuntimeError(f"`loopwright init` failed in {repo}")
    (repo / ".loopwright" / "config.toml").write_text(
        f'# written by bench/fleet_rig.py\nprovider = "anthropic"\nmodel = "{MODEL}"\nbase_url = "{base_url}"\n'
        f"max_parallel = {max_parallel}\n" + (f"workers = {workers}\n" if workers else "") + "\n"
        "[budget]  # far above what 10 turns use: limits must not shape the figures\n"
        "max_turns = 1000\nmax_usd = 1000.0\nmax_tokens = 100000000\nmax_wall_seconds = 86400\n\n"
        "[memory]  # the figures are about the fleet's loop: no recall, no reflection call after each run\n"
        "recall = false\nreflect = false\n")
    return repo


def post(repo: Path, count: int, first: int = 0):
    """Queue `count` tasks with check `true`, as `loopwright post "..." --check true` does (in this process)."""
    from loopwright.runtime.posting import TaskRequest, post_task
    from loopwright.runtime.project import open_project

    os.environ["ANTHROPIC_API_KEY"] = API_KEY
    project = open_project(repo)
    try:
        for i in range(first, first + count):
            post_task(project, TaskRequest(goal=f"Add sub() to src/calc.py and a design note (agent {i}).",
                                           title=f"agent {i}", check="true"))
    finally:
        project.store.close()


def open_store(repo: Path):
    from loopwright.memory.store import Store

    return Store(repo / ".loopwright" / "state.db")


def wait_for(condition, what: str, timeout: float, every: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(every)


def task_counts(store) -> dict[str, int]:
    return {r[0]: r[1] for r in store.conn.execute("SELECT status, count(*) FROM tasks GROUP BY status")}


def all_done(store, count: int) -> bool:
    c = task_counts(store)
    return sum(c.values()) == count and sum(c.get(s, 0) for s in TERMINAL) == count

