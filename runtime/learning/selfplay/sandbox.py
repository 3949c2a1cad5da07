"""Run proposed code in a child process: scrubbed environment, temporary folder, resource limits, a wall-clock cap.

On its own this is containment for honest mistakes (a hang, a runaway
allocation, stray files), not a security boundary: the banned-API scan
(gates.py) keeps tests and references away from the network, the clock,
randomness and the file system. Given a `sandbox` in bwrap mode (the project's
`[sandbox]`, harness/sandbox.py), the child runs in its jail around its folder:
the rest of the machine read-only or hidden, no network, the store and keys out
of reach.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from loopwright.harness.sandbox import Sandbox

HARNESS = Path(__file__).with_name("_harness.py")
MARKER = "@@loopwright-selfplay@@"


@dataclass
class SandboxResult:
    """What one child process reported: one entry per run, in order (empty when it timed out or crashed)."""

    runs: list[dict] = field(default_factory=list)
    timed_out: bool = False
    crashed: str = ""
    seconds: float = 0.0

    def by_label(self) -> dict[str, dict]:
        return {r["label"]: r for r in self.runs}


def run_job(runs: list[dict], *, limit: float, wall: float | None = None, hash_seed: int = 0,
            memory_mb: int = 1024, cwd: Path | None = None, sandbox: Sandbox | None = None,
            repo_root: Path | None = None) -> SandboxResult:
    """Run `runs` (see _harness.py) in one child with PYTHONHASHSEED=`hash_seed`; each run gets `limit` seconds.

    The child works in a fresh temporary folder, or in `cwd` (the repo domain runs tests in a worktree of the
    repository at `repo_root`); with a bwrap `sandbox`, in its jail around that folder."""
    wall = wall if wall is not None else limit * len(runs) + 5.0
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONHASHSEED": str(hash_seed),
           "PYTHONDONTWRITEBYTECODE": "1", "LC_ALL": "C.UTF-8"}
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="lw-selfplay-") as tmp:
        folder = Path(cwd or tmp)
        argv = [sys.executable, "-s", "-B", str(HARNESS)]
        if sandbox is not None and sandbox.mode == "bwrap":  # the harness's source goes in: its file is not mounted
            command = shlex.join([sys.executable, "-s", "-B", "-c", HARNESS.read_text()])
            argv, env = sandbox.wrap(f"exec {command}", worktree=folder, repo_root=repo_root, env=env,
                                     new_session=False)  # its own session below: killpg ends the jail
        proc = subprocess.Popen(argv, cwd=str(folder), env=env, stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
        job = {"limit": limit, "runs": runs, "rlimits": {"cpu": int(wall) + 2, "memory_mb": memory_mb}}
        try:
            out, err = proc.communicate(json.dumps(job), timeout=wall)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.communicate()
            return SandboxResult(timed_out=True, seconds=time.monotonic() - started)
    seconds = time.monotonic() - started
    for line in reversed(out.splitlines()):
        if line.startswith(MARKER):
            return SandboxResult(runs=json.loads(line[len(MARKER):]), seconds=seconds)
    return SandboxResult(crashed=(err or out or f"exit {proc.returncode}")[-500:], seconds=seconds)
