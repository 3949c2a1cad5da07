"""Wall time the sandbox adds to one agent command, measured in one run.

Each command (`true`, `python -c pass`) runs through `Sandbox.wrap` in a
worktree made by `git worktree add`, with mode "none" (bash, as today) and
with bwrap (network off, and network "allow", which also starts the proxy
bridge inside the jail), the modes interleaved so drift hits them alike.
Reported: the median wall time per command and what bwrap adds to it, as ms
and as a ratio. Goal: <= 15 ms added per command.

    python -m loopwright.bench.sandbox [--runs 40]
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=40, help="runs of each command in each mode")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="lw-bench-sandbox-") as tmp:
        worktree = Repo(Path(tmp)).wt
        boxes = {"none": Sandbox.for_policy(SandboxPolicy(mode="none")),
                 "bwrap": Sandbox.for_policy(SandboxPolicy(mode="bwrap")),
                 "bwrap+allow": Sandbox.for_policy(SandboxPolicy(mode="bwrap", network="allow",
                                                                 allow_hosts=["pypi.org"]))}
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


if __name__ == "__main__":
    main()
