"""`loopwright artifacts [list|add|open]`: the files runs produced, listed, registered by hand and opened."""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from loopwright.cli.common import print_json
from loopwright.memory.artifacts import KINDS, ArtifactError, get, list_artifacts, register
from loopwright.runtime.project import open_project


def _project():
    project = open_project(Path.cwd())
    return project, project.dir / "artifacts"


def _size(n: int | None) -> str:
    if n is None:
        return "-"
    if n < 1024:
        return f"{n} B"
    return f"{n / 1024:.1f} KB" if n < 1024 * 1024 else f"{n / 2**20:.1f} MB"


def cmd_list(args: argparse.Namespace) -> int:
    """List artifacts (of one run, of one kind); missing files flagged."""
    project, root = _project()
    run_id = project.store.run(args.run).id if args.run else None
    arts = list_artifacts(project.store, root, run_id=run_id, kind=args.kind)
    if args.json:
        print_json([a.model_dump() for a in arts])
        return 0
    if not arts:
        print("no artifacts" + (" match" if run_id or args.kind else " yet") + " (agents register them with their "
              "`artifact` tool; you with `loopwright artifacts add RUN PATH --kind K --title T`)")
    for a in arts:
        flag = "" if a.exists else "  [missing]"
        print(f"{a.id:>4}  {a.run_id:<8}  {a.kind:<11}  {a.title[:50]:<50}  {_size(a.size):>8}  {a.path}{flag}")
    return 0


def cmd_add(args: argparse.Namespace) -> int:
    """A person registers a file for a run."""
    project, root = _project()
    art = register(project.store, root, args.run_id, Path(args.path), kind=args.kind, title=args.title)
    if args.json:
        print_json(art.model_dump())
    else:
        print(f"registered artifact {art.id}: {art.kind} '{art.title}' ({art.size:,} bytes) -> {art.path}")
    return 0


def _is_text(path: Path) -> bool:
    with path.open("rb") as f:
        head = f.read(8192)
    if b"\0" in head:
        return False
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as e:
        return e.start >= len(head) - 3  # a multi-byte character cut by the 8 KB window
    return True


def _opener() -> list[str] | None:
    """The desktop's file opener when there is a display to open on."""
    if sys.platform == "darwin":
        return ["open"] if shutil.which("open") else None
    if (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")) and shutil.which("xdg-open"):
        return ["xdg-open"]
    return None


def cmd_open(args: argparse.Namespace) -> int:
    """Print a text artifact; open any other with the desktop's opener, or print its path with a hint."""
    project, root = _project()
    art = get(project.store, root, args.id)
    if not art.exists:
        raise ArtifactError(f"artifact {art.id}'s file is missing: {art.path} (deleted or moved)")
    path = Path(art.path)
    if args.json:
        print_json(art.model_dump())
        return 0
    if _is_text(path):
        sys.stdout.write(path.read_text(encoding="utf-8", errors="replace"))
        sys.stdout.flush()
        return 0
    opener = None if args.print else _opener()
    if opener:
        with contextlib.suppress(OSError):
            subprocess.Popen([*opener, str(path)], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL, start_new_session=True)
            print(f"opened {path} with {opener[0]}")
            return 0
    print(path)
    print(f"({art.kind}, {art.size:,} bytes, not text: open it with a viewer for its type)", file=sys.stderr)
    return 0


def add_parsers(sub, add) -> None:
    """Register `artifacts [list|add|open]` on the main parser (`add(name, func, help)` makes a subparser)."""
    help = "files runs produced (plans, reports, figures, …): list; add RUN PATH; open ID"
    top = add("artifacts", cmd_list, help, json_flag=False)

    def list_flags(p, default: Any) -> None:
        # the bare `artifacts --run R` form and `artifacts list --run R` share these dests; SUPPRESS on the
        # action keeps its unset flags from overwriting what was given before the action word
        p.add_argument("--run", metavar="RUN", default=default, help="only this run's artifacts (id or prefix)")
        p.add_argument("--kind", choices=KINDS, default=default, help="only artifacts of this kind")

    def json_flag(p, default: Any) -> None:
        p.add_argument("--json", action="store_true", default=default, help="machine-readable output")

    list_flags(top, None)
    json_flag(top, False)
    inner = top.add_subparsers(dest="artifacts_command", metavar="ACTION", parser_class=type(top))

    def action(name: str, func, help: str):
        p = inner.add_parser(name, help=help, description=help)
        p.set_defaults(func=func)
        json_flag(p, argparse.SUPPRESS)
        return p

    list_flags(action("list", cmd_list, "artifacts, oldest first; missing files flagged (the default action)"),
               argparse.SUPPRESS)
    p = action("add", cmd_add, "register a file for a run (copied into .loopwright/artifacts/RUN/)")
    p.add_argument("run_id", metavar="RUN", help="run id or prefix")
    p.add_argument("path", help="the file (folders: archive them first)")
    p.add_argument("--kind", choices=KINDS, required=True)
    p.add_argument("--title", required=True, help="1-200 characters")
    p = action("open", cmd_open, "print a text artifact; open others with xdg-open/open, or print their path")
    p.add_argument("id", type=int, help="artifact id (see `loopwright artifacts`)")
    p.add_argument("--print", action="store_true", help="never launch a viewer: print text, or the path")
