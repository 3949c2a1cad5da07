"""Checkpoint cost in a 10,000-file repository, against plain `git add -A && git commit`, in one run.

Two worktrees of the same repository get the same edits each round (a few
files changed, one added); one is checkpointed by `Workspace.checkpoint`, the
other by the plain git commands. Prints the median of each and their ratio.
Goal: <= 1.5x.

    python -m loopwright.bench.checkpoint [--files 10000] [--rounds 15]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from ..workspaces.git import Workspace


def git(cwd: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True)


def make_repo(files: int) -> Path:
    root = Path(tempfile.mkdtemp(prefix="lw-bench-ckpt-"))
    for i in range(files):
        d = root / f"pkg{i % 50}" / f"mod{i % 7}"
        d.mkdir(parents=True, exist_ok=True)
        (d / f"f{i}.py").write_text(f"value_{i} = {i}\n")
    git(root, "init", "-q", "-b", "main")
    git(root, "config", "user.name", "bench")
    git(root, "config", "user.email", "bench@example.invalid")
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "10k files")
    return root


def edit(tree: Path, round_no: int) -> None:
    for i in range(3):
        n = (round_no * 37 + i * 101) % 1000
        f = tree / f"pkg{n % 50}" / f"mod{n % 7}" / f"f{n}.py"
        f.write_text(f.read_text() + f"# round {round_no}\n")
    (tree / f"new_{round_no}.py").write_text(f"added = {round_no}\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", type=int, default=10_000)
    ap.add_argument("--rounds", type=int, default=15)
    args = ap.parse_args()
    root = make_repo(args.files)
    ws = Workspace.create(root, "bench", target_branch="main", worktrees_dir=root.parent / f"{root.name}-wt")
    plain = root.parent / f"{root.name}-plain"
    git(root, "worktree", "add", "-q", "-b", "plain", str(plain))
    ours, baseline = [], []
    for r in range(args.rounds):
        edit(ws.path, r)
        edit(plain, r)
        # alternate which goes first so caches favour neither
        order = [("ours", ws), ("plain", plain)] if r % 2 == 0 else [("plain", plain), ("ours", ws)]
        for name, _ in order:
            t0 = time.perf_counter()
            if name == "ours":
                assert ws.checkpoint(f"round {r}", step=r) is not None
                ours.append(time.perf_counter() - t0)
            else:
                subprocess.run(f"git add -A && git commit -q -m 'round {r}'", shell=True, cwd=plain, check=True)
                baseline.append(time.perf_counter() - t0)
    a, b = statistics.median(ours) * 1000, statistics.median(baseline) * 1000
    print(f"repository: {args.files:,} files, {args.rounds} rounds of 3 edits + 1 new file")
    print(f"Workspace.checkpoint       median {a:7.1f} ms")
    print(f"git add -A && git commit   median {b:7.1f} ms")
    print(f"ratio {a / b:.2f}x (goal <= 1.5x)")


if __name__ == "__main__":
    main()
