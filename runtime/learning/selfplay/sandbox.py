"""The one executor of self-play code (gates and verification alike): a child process with a scrubbed environment,
a temporary folder, resource limits and a wall-clock cap, under stated conditions.

Conditions: the hash seed, the clock (shifted by days through the harness,
which the executor controls) and the environment. `CONDITIONS` is the set the
gates run a reference's hidden tests under and the verifier runs a solution's
under: every hash seed of `SEEDS` with the real clock, then the first seed with
the clock `CLOCK_DAYS` later, then with other environment variables (a time
zone, a home, a user). A task whose results differ between two of them is
nondeterministic: determinism is enforced by running, the banned-API scan
(gates.py) is only a fast pre-filter.

Given a `sandbox` in bwrap mode (the project's `[sandbox]`,
harness/sandbox.py), the child runs in its jail around its folder with the
network off whatever the policy says: the rest of the machine read-only or
hidden, a private /tmp, the store and keys out of reach. Without one it is
containment for honest mistakes (a hang, a runaway allocation, stray files),
not a security boundary.
"""

from __future__ import annotations

import json
import os
import secrets
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from loopwright.harness.sandbox import Sandbox

HARNESS = Path(__file__).with_name("_harness.py")
CLOCK = Path(__file__).with_name("_clock.py")
MARKER = "@@loopwright-selfplay@@"
FORBIDDEN = "@@loopwright-forbidden@@"
SEEDS = (0, 1, 2)
CLOCK_DAYS = 40
OTHER_ENV = {"TZ": "Asia/Kolkata", "HOME": "/tmp/lw-other-home", "USER": "lw-other", "LOGNAME": "lw-other",
             "LW_SELFPLAY_ENV": "other"}


@dataclass(frozen=True)
class Conditions:
    """What a child process runs under: a hash seed, a clock `clock_days` later than the real one, another
    environment."""

    hash_seed: int = SEEDS[0]
    clock_days: int = 0
    other_env: bool = False

    def describe(self) -> str:
        if self.clock_days:
            return f"the clock {self.clock_days} days later"
        return "another environment" if self.other_env else f"hash seed {self.hash_seed}"


CONDITIONS = (*(Conditions(seed) for seed in SEEDS), Conditions(clock_days=CLOCK_DAYS), Conditions(other_env=True))


@dataclass
class SandboxResult:
    """What one child process reported: one entry per run, in order (empty when it timed out or crashed)."""

    runs: list[dict] = field(default_factory=list)
    timed_out: bool = False
    crashed: str = ""
    forbidden: str = ""  # what the code did that it may not (the harness ended the child for it)
    seconds: float = 0.0

    def by_label(self) -> dict[str, dict]:
        return {r["label"]: r for r in self.runs}


def run_job(runs: list[dict], *, limit: float, wall: float | None = None, conditions: Conditions = Conditions(),
            memory_mb: int = 1024, cwd: Path | None = None, sandbox: Sandbox | None = None,
            repo_root: Path | None = None) -> SandboxResult:
    """Run `runs` (see _harness.py) in one child under `conditions`; each run gets `limit` seconds.

    The child works in a fresh temporary folder, or in `cwd` (the repo domain runs tests in a worktree of the
    repository at `repo_root`); with a bwrap `sandbox`, in its jail around that folder, network off."""
    wall = wall if wall is not None else limit * len(runs) + 5.0
    env = environment(conditions)
    nonce = secrets.token_hex(16)  # the report line the code under test cannot forge: it never sees the nonce
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="lw-selfplay-") as tmp:
        folder = Path(cwd or tmp)
        # the source goes in (in a jail the files are not mounted), the clock's first
        argv = [sys.executable, "-s", "-B", "-c", CLOCK.read_text() + HARNESS.read_text()]
        argv, env = jailed(argv, sandbox, folder, env, repo_root=repo_root)
        proc = subprocess.Popen(argv, cwd=str(folder), env=env, stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
        job = {"limit": limit, "runs": runs, "rlimits": {"cpu": int(wall) + 2, "memory_mb": memory_mb},
               "clock_days": conditions.clock_days, "nonce": nonce}
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
        if line.startswith(MARKER + nonce):
            return SandboxResult(runs=json.loads(line[len(MARKER + nonce):]), seconds=seconds)
    forbidden = next((line[len(FORBIDDEN):] for line in err.splitlines() if line.startswith(FORBIDDEN)), "")
    return SandboxResult(crashed=(err or out or f"exit {proc.returncode}")[-500:], forbidden=forbidden,
                         seconds=seconds)


def environment(conditions: Conditions) -> dict[str, str]:
    """The whole environment of a child under `conditions` (the clock is the harness's or `sitecustomize`'s)."""
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONHASHSEED": str(conditions.hash_seed),
            "PYTHONDONTWRITEBYTECODE": "1", "LC_ALL": "C.UTF-8", "TZ": "UTC",
            **(OTHER_ENV if conditions.other_env else {})}


def sitecustomize(folder: Path, conditions: Conditions) -> dict[str, str]:
    """For a Python process that is not the harness: a `sitecustomize` in `folder` that sets its clock, and the
    environment (PYTHONPATH included) that loads it."""
    (folder / "sitecustomize.py").write_text(f"{CLOCK.read_text()}\nshift_clock({conditions.clock_days})\n")
    return environment(conditions) | {"PYTHONPATH": str(folder)}


def jailed(argv: list[str], sandbox: Sandbox | None, folder: Path, env: dict[str, str], *,
           repo_root: Path | None = None, readable: Sequence[Path] = ()) -> tuple[list[str], dict[str, str]]:
    """`argv` in `sandbox`'s jail around `folder` with the network off, when it is a bwrap one (else as it is)."""
    if sandbox is None or sandbox.mode != "bwrap":
        return argv, env
    jail = sandbox.variant(network="off") if sandbox.policy.network != "off" else sandbox
    return jail.wrap(f"exec {shlex.join(argv)}", worktree=folder, repo_root=repo_root, env=env, readable=readable,
                     new_session=False)  # its own session (start_new_session): killpg ends the jail


def run_everywhere(runs: list[dict], *, first: Sequence[dict] = (), **kw) -> list[tuple[Conditions, SandboxResult]]:
    """`runs` under each of CONDITIONS (`first`: more runs for the first child only), in that order; the children
    run at the same time."""
    with ThreadPoolExecutor(len(CONDITIONS)) as pool:
        jobs = [pool.submit(run_job, [*runs, *(first if i == 0 else [])], conditions=c, **kw)
                for i, c in enumerate(CONDITIONS)]
        return [(c, job.result()) for c, job in zip(CONDITIONS, jobs)]
