"""Wall time the sandbox adds, measured in one run: per agent command, and to a whole run.

Each command (`true`, `python -c pass`) runs through `Sandbox.wrap` in a
worktree made by `git worktree add`, with mode "none" (bash, as without a
sandbox) and with bwrap (network off, and network "allow", which also starts
the proxy bridge inside the jail), the modes interleaved so drift hits them
alike. Reported: the median wall time per command and what bwrap adds to it,
as ms and as a ratio. Goal: <= 15 ms added per command.

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
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from loopwright.harness.sandbox import Sandbox, SandboxPolicy
from loopwright.harness.sandbox_battery import Repo

COMMANDS = {"true": "true", "python -c pass": f"{sys.executable} -c pass"}


def timed(box: Sandbox, command: str, worktree: Path) -> float:
    """Seconds from start to exit of one wrapped command (the wrap included)."""
    t0 = time.perf_counter()
    argv, env = box.wrap(command, worktree=worktree)
    subprocess.run(argv, env=env, cwd=worktree, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, check=True)
    return time.perf_counter() - t0


def scripted_run(base: Path, mode: str, turns: int, label: str) -> float:
    """Seconds of one `turns`-turn scripted run through the Runner (a fresh repository each), `mode` as the
    [sandbox] mode."""
    import asyncio
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
    print(f"  without the sandbox: {none:.2f} s   with bwrap: {jailed:.2f} s   ratio {jailed / none:.3f}x "
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
        worktree = Repo(Path(tmp)).wt
        boxes = {"none": Sandbox.for_policy(SandboxPolicy(mode="none")),
                 "bwrap": Sandbox.for_policy(SandboxPolicy(mode="bwrap")),
                 "bwrap+allow": Sandbox.for_policy(SandboxPolicy(mode="bwrap", network="allow",
                                                                 allow_hosts=["packages.example.org"]))}
        print(f"bwrap: {boxes['bwrap'].version()} ({boxes['bwrap'].bwrap})")
        print(f"ms per command, median of {args.runs} runs; 'added' = bwrap - none")
        print(f"{'command':<16} {'none':>7} {'bwrap':>7} {'added':>7} {'ratio':>6} {'+allow':>7} {'added':>7}")
        for name, command in COMMANDS.items():
            for box in boxes.values():
                timed(box, command, worktree)  # warm caches
            samples: dict[str, list[float]] = {mode: [] for mode in boxes}
            for _ in range(args.runs):
                for mode, box in boxes.items():
                    samples[mode].append(timed(box, command, worktree) * 1000)
            med = {mode: statistics.median(s) for mode, s in samples.items()}
            print(f"{name:<16} {med['none']:>7.2f} {med['bwrap']:>7.2f} {med['bwrap'] - med['none']:>7.2f} "
                  f"{med['bwrap'] / med['none']:>5.2f}x {med['bwrap+allow']:>7.2f} "
                  f"{med['bwrap+allow'] - med['none']:>7.2f}")
        for box in boxes.values():
            box.close()
    print("goal: <= 15 ms added per command (network off)")
    whole_runs(args.turns, args.repeats)


if __name__ == "__main__":
    main()
