"""Wall time the sandbox adds, measured in one run: per agent command, and to a whole run.

Each command (`true`, `python -c pass`) runs through `run_command` in a
worktree made by `git worktree add`: with mode "none" (bash, as without a
sandbox), in a bwrap jail of its own (`Sandbox.wrap`, as the acceptance check
runs) and in a run's long-lived jail (harness/sandbox_jail.py, as the shell
tool runs), each with the network off and with network "allow" (a proxy bridge
inside the jail), the modes interleaved so drift hits them alike. Reported:
the median wall time per command and what each jail adds to it. Goal: <= 15 ms
added per command.

Then a whole run: a scripted agent of `--turns` turns (a shell command each,
every fifth a file edit, then finish and an acceptance check) through the
Runner in a fresh repository, end to end (worktree, checkpoints, check), with
`[sandbox] mode = "none"` and with the default sandbox, interleaved,
`--repeats` times each. Reported: the median seconds of each and their ratio.
Goal: <= 1.1. Printed, not asserted.

    python -m loopwright.bench.sandbox [--runs 40] [--turns 100] [--repeats 3]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from loopwright.harness.commands import run_command
from loopwright.harness.sandbox import Sandbox, SandboxPolicy
from loopwright.harness.sandbox_battery import Repo
from loopwright.harness.sandbox_jail import RunJail, run_jail

COMMANDS = {"true": "true", "python -c pass": f"{sys.executable} -c pass"}


async def timed(command: str, worktree: Path, box: Sandbox | None, jail: RunJail | None) -> float:
    """Seconds of one command through run_command: unjailed, in a jail of its own (`box`), or in `jail`."""
    t0 = time.perf_counter()
    result = await run_command(command, cwd=worktree, timeout=60, sandbox=box, jail=jail)
    if result.exit_code != 0:
        raise SystemExit(f"{command!r} failed: {result.output}")
    return time.perf_counter() - t0


async def per_command(runs: int, worktree: Path) -> None:
    boxes = {"off": Sandbox.for_policy(SandboxPolicy(mode="bwrap")),
             "allow": Sandbox.for_policy(SandboxPolicy(mode="bwrap", network="allow",
                                                       allow_hosts=["packages.example.org"]))}
    jails = {net: run_jail(box, worktree) for net, box in boxes.items()}
    ways: dict[str, tuple[Sandbox | None, RunJail | None]] = {
        "none": (None, None), "bwrap": (boxes["off"], None), "jail": (None, jails["off"]),
        "bwrap+allow": (boxes["allow"], None), "jail+allow": (None, jails["allow"])}
    if boxes["off"].mode != "bwrap":
        raise SystemExit(f"no bwrap here: {boxes['off'].warning}")
    print(f"bwrap: {boxes['off'].version()} ({getattr(boxes['off'], 'bwrap', '')})")
    print(f"ms per command through run_command, median of {runs}; bwrap: a jail of its own (the check), "
          f"jail: the run's long-lived one (the shell tool); +N: added to none")
    print(f"{'command':<16} {'none':>7} {'bwrap':>13} {'jail':>13} {'bwrap+allow':>14} {'jail+allow':>14}")
    try:
        for name, command in COMMANDS.items():
            for box, jail in ways.values():
                await timed(command, worktree, box, jail)  # warm caches, start the jails
            samples: dict[str, list[float]] = {way: [] for way in ways}
            for _ in range(runs):
                for way, (box, jail) in ways.items():
                    samples[way].append(await timed(command, worktree, box, jail) * 1000)
            med = {way: statistics.median(s) for way, s in samples.items()}
            cells = [f"{med[w]:.2f} {med[w] - med['none']:+.1f}" for w in ("bwrap", "jail", "bwrap+allow",
                                                                             "jail+allow")]
            print(f"{name:<16} {med['none']:>7.2f} {cells[0]:>13} {cells[1]:>13} {cells[2]:>14} {cells[3]:>14}")
    finally:
        for jail in jails.values():
            if jail is not None:
                jail.close()
        for box in boxes.values():
            box.close()
    print("goal: <= 15 ms added per command (network off)")


def scripted_run(base: Path, mode: str, turns: int, label: str) -> float:
    """Seconds of one `turns`-turn scripted run through the Runner (a fresh repository each), `mode` as the
    [sandbox] mode."""
    import json

    from loopwright.runtime.project import open_project
    from loopwright.runtime.runner import Runner

    root = base / label / "project"
    root.mkdir(parents=True)
    (root / "calc.py").write_text("def add(a, b):\n    return a + b\n")
    for args in (["init", "-q", "-b", "main"], ["config", "user.name", "bench"],
                 ["config", "user.email", "bench@example.invalid"], ["add", "-A"], ["commit", "-q", "-m", "init"]):
        subprocess.run(["git", *args], cwd=root, check=True, capture_output=True)
    steps = []
    for i in range(turns - 1):
        if i % 5 == 4:
            steps.append({"text": "", "tool_calls": [{"name": "write_file", "arguments": {
                "path": f"notes/{i}.txt", "content": f"step {i}\n"}}]})
        else:
            steps.append({"text": "", "tool_calls": [{"name": "shell", "arguments": {
                "command": f"echo step {i} >> log.txt && git status --short | wc -l"}}]})
    steps.append({"text": "", "tool_calls": [{"name": "finish", "arguments": {"summary": "done"}}]})
    script = base / label / "script.json"
    script.write_text(json.dumps({"turns": steps}))
    project = open_project(root, create=True, overrides={"provider": "scripted", "script": str(script),
                                                         "sandbox.mode": mode, "budget.max_turns": turns + 10})
    t0 = time.perf_counter()
    runner = Runner(project)
    result = asyncio.run(runner.start("bench", check=f"{sys.executable} -c 'import calc'"))
    seconds = time.perf_counter() - t0
    if result.run.status != "succeeded":
        raise SystemExit(f"the {mode} run did not succeed: {result.run.status} {result.run.reason}")
    if mode != "none" and runner.sandbox.mode != "bwrap":
        raise SystemExit(f"no bwrap here: {runner.sandbox.warning}")
    project.store.close()
    return seconds


def whole_runs(turns: int, repeats: int) -> None:
    print(f"\na {turns}-turn scripted run end to end (Runner: worktree, tools, checkpoints, check), "
          f"median of {repeats}:")
    samples: dict[str, list[float]] = {"none": [], "auto": []}
    with tempfile.TemporaryDirectory(prefix="lw-bench-sandbox-run-") as tmp:
        for i in range(repeats):
            for mode in samples:
                samples[mode].append(scripted_run(Path(tmp), mode, turns, f"{mode}-{i}"))
    none, jailed = (statistics.median(samples[m]) for m in ("none", "auto"))
    print(f"  without the sandbox: {none:.2f} s   with bwrap (the run's jail): {jailed:.2f} s   "
          f"ratio {jailed / none:.3f}x "
          f"({(jailed - none) / turns * 1000:+.1f} ms per turn)")
    print(f"  (the scripted model answers at once: {none / turns * 1000:.0f} ms a turn in all; computed, not "
          f"measured: with a model taking 1 s a turn the ratio would be {(jailed + turns) / (none + turns):.3f}x)")
    print("goal: ratio <= 1.1")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=40, help="runs of each command in each mode")
    ap.add_argument("--turns", type=int, default=100, help="turns of the scripted run")
    ap.add_argument("--repeats", type=int, default=3, help="scripted runs in each mode")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="lw-bench-sandbox-") as tmp:
        asyncio.run(per_command(args.runs, Repo(Path(tmp)).wt))
    whole_runs(args.turns, args.repeats)


if __name__ == "__main__":
    main()
