"""Checkpoint cost in a 10,000-file repository, against plain `git add -A && git commit`.

Separate worktrees of one repository get the same edits each round (a few
files changed, one added). One is checkpointed by `Workspace.checkpoint`, one
by `Workspace.checkpoint` with `copy_files=[".env"]` (one extra git command),
and one by the plain git commands. Prints the median of each and the ratio
to plain git. Goal: <= 1.5x. No assertions on the timings.

    python -m loopwright.bench.checkpoint [--files 10000] [--rounds 15]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from loopwright.workspaces.git import Workspace


def git(cwd: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True)


def make_repo(top: Path, files: int) -> Path:
    """A committed repository of `files` one-line files spread over 50 x 7 directories."""
    root = top / "repo"
    for i in range(files):
        d = root / f"pkg{i % 50}" / f"mod{i % 7}"
        d.mkdir(parents=True, exist_ok=True)
        (d / f"f{i}.py").write_text(f"value_{i} = {i}\n")
    (root / ".gitignore").write_text("*.log\n")
    git(root, "init", "-q", "-b", "main")
    git(root, "config", "user.name", "bench")
    git(root, "config", "user.email", "bench@example.invalid")
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", f"{files} files")
    return root


def edit(tree: Path, round_no: int, files: int) -> None:
    """Change three existing files and add one new one."""
    for i in range(3):
        n = (round_no * 37 + i * 101) % files
        f = tree / f"pkg{n % 50}" / f"mod{n % 7}" / f"f{n}.py"
        f.write_text(f.read_text() + f"# round {round_no}\n")
    (tree / f"pkg{round_no % 50}" / f"new_{round_no}.py").write_text(f"added = {round_no}\n")


def timed(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return (time.perf_counter() - t0) * 1000


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", type=int, default=10_000)
    ap.add_argument("--rounds", type=int, default=15)
    args = ap.parse_args()
    top = Path(tempfile.mkdtemp(prefix="lw-bench-ckpt-"))
    try:
        print(f"making a repository of {args.files:,} files in {top} ...", flush=True)
        root = make_repo(top, args.files)
        (root / ".env").write_text("SECRET=1\n")  # not ignored: only copy_files keeps it out
        ours = Workspace.create(root, "bench", target_branch="main", worktrees_dir=top / "wt")
        ours_env = Workspace.create(root, "bench-env", target_branch="main", worktrees_dir=top / "wt",
                                    copy_files=[".env"])
        plain = top / "wt" / "plain"
        git(root, "worktree", "add", "-q", "-b", "plain", str(plain))

        def plain_commit(r: int) -> None:
            subprocess.run(f"git add -A && git commit -q -m 'round {r}'", shell=True, cwd=plain, check=True)

        contenders: dict[str, Callable[[int], object]] = {
            "Workspace.checkpoint": lambda r: ours.checkpoint(f"round {r}", step=r),
            "  with copy_files=['.env']": lambda r: ours_env.checkpoint(f"round {r}", step=r),
            "git add -A && git commit": plain_commit,
        }
        trees = {"Workspace.checkpoint": ours.path, "  with copy_files=['.env']": ours_env.path,
                 "git add -A && git commit": plain}
        times: dict[str, list[float]] = {name: [] for name in contenders}
        for r in range(args.rounds + 1):
            names = list(contenders)
            names = names[r % len(names):] + names[:r % len(names)]  # rotate the order: caches favour no one
            for name in names:
                edit(trees[name], r, args.files)
                ms = timed(lambda fn=contenders[name], r=r: fn(r))
                if r > 0:  # round 0 warms the caches of each fresh worktree
                    times[name].append(ms)
        made = len(ours.checkpoints())
        if made != args.rounds + 1:
            print(f"warning: {made} checkpoints for {args.rounds + 1} rounds: the timings are not comparable")
        base = statistics.median(times["git add -A && git commit"])
        print(f"repository: {args.files:,} files; {args.rounds} rounds of 3 changed files + 1 new file\n")
        print(f"{'':28} {'median':>9} {'min':>9} {'max':>9}  ratio")
        for name, ts in times.items():
            med = statistics.median(ts)
            print(f"{name:28} {med:7.1f}ms {min(ts):7.1f}ms {max(ts):7.1f}ms  {med / base:.2f}x")
        ratio = statistics.median(times["Workspace.checkpoint"]) / base
        print(f"\ncheckpoint / plain git = {ratio:.2f}x (goal <= 1.5x)")
    finally:
        shutil.rmtree(top, ignore_errors=True)


if __name__ == "__main__":
    main()
