#!/usr/bin/env python3
"""Summarise a git diff for review: changed files with added/removed lines, and flags worth a look.

Reads `git diff --numstat` (and the hunk headers of `git diff -U0`) for a range such as
`main...HEAD`, `HEAD~3`, `abc123 def456`, or, with no range, the uncommitted changes against HEAD.
Flags very large hunks and files, binary files, deleted files, secret-looking and generated
files, and source changes without test changes. `--hunks` lists every hunk as path:lines, the
anchors a review finding needs.

Exit 0 after printing the summary (flags do not change it); exit 2 with one `error:` line on bad
input (not a git repository, unknown revision, git missing). Python 3.11+, standard library only.
"""

from __future__ import annotations

import argparse
import ast
import json
import re
import shutil
import subprocess
import sys
from dataclasses import asdict, dataclass, field
from pathlib import PurePosixPath

HUNK = re.compile(r"^@@ -(\d+)(?:,(\d+))? \+(\d+)(?:,(\d+))? @@")
SOURCE_SUFFIXES = {".py", ".pyi", ".js", ".jsx", ".ts", ".tsx", ".mjs", ".cjs", ".go", ".rs", ".java", ".kt",
                   ".scala", ".c", ".h", ".cc", ".cpp", ".hpp", ".cs", ".rb", ".php", ".swift", ".m", ".sh",
                   ".bash", ".sql", ".lua", ".ex", ".exs", ".erl", ".clj", ".dart", ".vue", ".svelte"}
TEST_NAME = re.compile(r"(^test_.*|.*_test\.\w+$|.*\.(test|spec)\.\w+$|^conftest\.py$|.*Tests?\.\w+$)")
TEST_DIRS = {"test", "tests", "__tests__", "spec", "specs", "testing"}
SECRET_NAME = re.compile(r"(^\.env(\..*)?$|\.(pem|key|p12|pfx|jks|keystore)$|^id_(rsa|dsa|ecdsa|ed25519)$|"
                         r"credential|secret|\.netrc$|\.pgpass$|\.htpasswd$)", re.IGNORECASE)
GENERATED_NAME = re.compile(r"(\.lock$|^package-lock\.json$|^pnpm-lock\.yaml$|^go\.sum$|\.min\.(js|css)$|"
                            r"_pb2\.py$|\.pb\.go$|\.snap$|\.svg$)", re.IGNORECASE)


class GitError(Exception):
    pass


@dataclass
class FileStat:
    path: str
    added: int | None  # None: binary
    removed: int | None
    old_path: str | None = None  # set for renames and copies
    kind: str = "modified"  # or added, deleted, renamed, copied, type changed
    tags: list[str] = field(default_factory=list)
    hunks: list[dict] = field(default_factory=list)  # {"start", "end", "added", "removed"} in the new file


def git(repo: str, *args: str) -> str:
    try:
        proc = subprocess.run(["git", "-C", repo, "-c", "core.quotePath=false", *args],
                              check=False, capture_output=True, text=True, encoding="utf-8", errors="replace")
    except OSError as e:
        raise GitError(f"cannot run git: {e.strerror or e}") from None
    if proc.returncode != 0:
        lines = [ln.removeprefix("fatal: ").removeprefix("error: ").strip()
                 for ln in proc.stderr.splitlines() if ln.strip()]
        raise GitError(lines[0] if lines else f"git {args[0]} exited with {proc.returncode}")
    return proc.stdout


def unquote(path: str) -> str:
    """git's C-style quoting of unusual paths ("a\\tb", octal UTF-8 bytes) back to text."""
    if len(path) >= 2 and path[0] == path[-1] == '"':
        try:
            return ast.literal_eval("b" + path).decode("utf-8", "replace")
        except (ValueError, SyntaxError):
            return path[1:-1]
    return path


def numstat(repo: str, revs: list[str]) -> list[FileStat]:
    out = git(repo, "diff", "--numstat", "-z", "-M", "--no-color", "--no-ext-diff", *revs, "--")
    parts = out.split("\0")
    stats: list[FileStat] = []
    i = 0
    while i < len(parts) and parts[i]:
        added, removed, path = parts[i].split("\t", 2)
        old = None
        if path == "":  # rename/copy: the two paths follow as separate fields
            old, path = parts[i + 1], parts[i + 2]
            i += 3
        else:
            i += 1
        binary = added == "-"
        stats.append(FileStat(path=path, added=None if binary else int(added),
                              removed=None if binary else int(removed), old_path=old,
                              kind="renamed" if old else "modified"))
    return stats


def kinds(repo: str, revs: list[str]) -> dict[str, str]:
    """added / deleted / renamed / copied per path, from `git diff --name-status`."""
    names = {"A": "added", "D": "deleted", "R": "renamed", "C": "copied", "T": "type changed"}
    parts = git(repo, "diff", "--name-status", "-z", "-M", "--no-color", *revs, "--").split("\0")
    found: dict[str, str] = {}
    i = 0
    while i < len(parts) and parts[i]:
        status = parts[i][:1]
        if status in "RC":
            found[parts[i + 2]] = names[status]
            i += 3
        else:
            if status in names:
                found[parts[i + 1]] = names[status]
            i += 2
    return found


def hunks(repo: str, revs: list[str]) -> dict[str, list[dict]]:
    """Hunks per file (keyed by the new path, or the old one for a deleted file)."""
    out = git(repo, "diff", "-U0", "-M", "--no-color", "--no-ext-diff", "--src-prefix=a/", "--dst-prefix=b/",
              *revs, "--")
    found: dict[str, list[dict]] = {}
    old_path = new_path = None
    current: list[dict] | None = None
    for line in out.splitlines():
        if line.startswith("diff --git "):
            old_path = new_path = None
            current = None
        elif line.startswith("--- ") and current is None:
            old_path = None if line[4:] == "/dev/null" else unquote(line[4:]).removeprefix("a/")
        elif line.startswith("+++ ") and current is None:
            new_path = None if line[4:] == "/dev/null" else unquote(line[4:]).removeprefix("b/")
            key = new_path or old_path
            current = found.setdefault(key, []) if key else None
        elif current is not None and (m := HUNK.match(line)):
            removed = 1 if m.group(2) is None else int(m.group(2))
            added = 1 if m.group(4) is None else int(m.group(4))
            start = int(m.group(3))
            if added == 0:  # pure deletion: git gives the line before the gap
                start, end = start + 1, start
            else:
                end = start + added - 1
            current.append({"start": start, "end": end, "added": added, "removed": removed})
    return found


def is_test(path: str) -> bool:
    p = PurePosixPath(path)
    return bool(TEST_NAME.match(p.name)) or any(part.lower() in TEST_DIRS for part in p.parts[:-1])


def is_source(path: str) -> bool:
    return PurePosixPath(path).suffix.lower() in SOURCE_SUFFIXES and not is_test(path)


def analyse(stats: list[FileStat], by_file: dict[str, list[dict]], large_hunk: int,
            large_file: int) -> list[str]:
    flags: list[str] = []
    for s in stats:
        s.hunks = by_file.get(s.path, [])
        name = PurePosixPath(s.path).name
        if is_test(s.path):
            s.tags.append("test")
        if s.added is None:
            s.tags.append("binary")
            flags.append(f"BINARY      {s.path}  (cannot be reviewed as text; check it belongs in the repo)")
        if s.kind != "modified":
            s.tags.append(s.kind)
        if SECRET_NAME.search(name):
            s.tags.append("secret?")
            flags.append(f"SECRET?     {s.path}  (name looks like it may hold credentials; open it)")
        if GENERATED_NAME.search(name):
            s.tags.append("generated")
        total = (s.added or 0) + (s.removed or 0)
        if total > large_file and "generated" not in s.tags:
            flags.append(f"LARGE FILE  {s.path}  (+{s.added} -{s.removed}; read it hunk by hunk)")
        for h in s.hunks:
            size = h["added"] + h["removed"]
            if size > large_hunk and "generated" not in s.tags:
                flags.append(f"LARGE HUNK  {s.path}:{where(h)}  (+{h['added']} -{h['removed']} in one hunk)")
    sources = [s.path for s in stats if is_source(s.path) and s.kind != "deleted"]
    if sources and not any("test" in s.tags for s in stats):
        flags.append(f"NO TESTS    {len(sources)} source file(s) changed, no test file did")
    return flags


def where(h: dict) -> str:
    if h["added"] == 0:
        return f"{h['start']} (deleted {h['removed']} line(s) before it)"
    return str(h["start"]) if h["end"] == h["start"] else f"{h['start']}-{h['end']}"


def render(label: str, stats: list[FileStat], flags: list[str], show_hunks: bool) -> str:
    if not stats:
        return f"no changes in {label}"
    lines = [f"diff {label}: {len(stats)} file(s) changed", f"{'added':>7} {'removed':>7}  file"]
    for s in sorted(stats, key=lambda s: -((s.added or 0) + (s.removed or 0))):
        a = "bin" if s.added is None else str(s.added)
        r = "bin" if s.removed is None else str(s.removed)
        name = f"{s.path} (from {s.old_path})" if s.old_path else s.path
        tags = f"  [{', '.join(s.tags)}]" if s.tags else ""
        lines.append(f"{a:>7} {r:>7}  {name}{tags}")
        if show_hunks:
            lines += [f"{'':>17}{s.path}:{where(h)}  +{h['added']} -{h['removed']}" for h in s.hunks]
    added = sum(s.added or 0 for s in stats)
    removed = sum(s.removed or 0 for s in stats)
    lines.append(f"{added:>7} {removed:>7}  total, {sum(len(s.hunks) for s in stats)} hunk(s)")
    lines.append("")
    lines += ["flags:", *[f"  {f}" for f in flags]] if flags else ["flags: none"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description="Changed files with added/removed lines for a git range, and flags for review: very large "
                    "hunks and files, binary, secret-looking and generated files, source changes without tests.",
        epilog="Examples: diff_stats.py main...HEAD | diff_stats.py HEAD~3 --hunks | diff_stats.py (uncommitted "
               "changes against HEAD). Exit 0 with the summary; exit 2 with one error line on bad input.")
    p.add_argument("range", nargs="*", help="what to diff, as for git diff: main...HEAD, HEAD~3, A B "
                                            "(default: uncommitted changes against HEAD)")
    p.add_argument("-C", dest="repo", default=".", metavar="DIR", help="the repository (default: current folder)")
    p.add_argument("--hunks", action="store_true", help="list every hunk as path:first-last line in the new file")
    p.add_argument("--large-hunk", type=int, default=100, metavar="N",
                   help="flag hunks with more than N changed lines (default 100)")
    p.add_argument("--large-file", type=int, default=400, metavar="N",
                   help="flag files with more than N changed lines (default 400)")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    args = p.parse_args(argv)
    revs = args.range or ["HEAD"]
    bad = next((r for r in revs if r.startswith("-")), None)
    if bad is not None:
        return fail(f"{bad!r} is not a revision or range (options go before the range)")
    if shutil.which("git") is None:
        return fail("git is not installed or not on PATH")
    try:
        git(args.repo, "rev-parse", "--git-dir")
    except GitError:
        return fail(f"not a git repository: {args.repo}")
    label = " ".join(args.range) if args.range else "HEAD (uncommitted changes)"
    try:
        stats = numstat(args.repo, revs)
        by_file = hunks(args.repo, revs)
        kinds_found = kinds(args.repo, revs)
        for s in stats:
            s.kind = kinds_found.get(s.path, s.kind)
    except GitError as e:
        return fail(f"git diff {' '.join(revs)}: {e}")
    flags = analyse(stats, by_file, args.large_hunk, args.large_file)
    if args.json:
        print(json.dumps({"range": label, "files": [asdict(s) for s in stats], "flags": flags,
                          "added": sum(s.added or 0 for s in stats),
                          "removed": sum(s.removed or 0 for s in stats)}, indent=2))
    else:
        print(render(label, stats, flags, args.hunks))
    return 0


def fail(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(130)
    except BrokenPipeError:
        sys.exit(0)
