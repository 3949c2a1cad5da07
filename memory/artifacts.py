"""Artifacts: files a run produced (a plan, a report, a figure, …) registered with a kind and a title.

The file is copied to `.loopwright/artifacts/<run>/` (so it outlives the run's
worktree) before its row goes into the store's `artifacts` table; a failed copy
leaves no row. Only single files are registered: a folder is refused with a hint
to archive it first. The row's `path` is relative to the artifacts root, so the
project can move; a row whose file has vanished is listed as missing.

Here: the storage functions, the agent's `artifact` tool and `loopwright artifacts`.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, StringConstraints, ValidationError

from loopwright.harness.tools import FileTool, ToolArgs, ToolContext, ToolError, ToolOutcome, resolve_in
from loopwright.memory.store import Store, StoreError

KINDS = ("plan", "report", "walkthrough", "diff", "data", "figure", "screenshot", "other")
Kind = Literal["plan", "report", "walkthrough", "diff", "data", "figure", "screenshot", "other"]
Title = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
MAX_BYTES = 50 * 1024 * 1024


class ArtifactError(Exception):
    """An artifact cannot be registered or found; said in one line."""


class Artifact(BaseModel):
    id: int
    run_id: str
    kind: str
    title: str
    path: str  # absolute
    created_at: float
    size: int | None  # None when the file is missing
    exists: bool


class _Meta(BaseModel):
    kind: Kind
    title: Title


def _meta(kind: str, title: str) -> _Meta:
    try:
        return _Meta(kind=kind, title=title)  # type: ignore[arg-type]
    except ValidationError as e:
        err = e.errors()[0]
        if err["loc"] == ("kind",):
            raise ArtifactError(f"unknown kind {kind!r}; the kinds are: {', '.join(KINDS)}") from None
        raise ArtifactError(f"the title must be 1-200 characters (got {len(title.strip())})") from None


def _split(name: str) -> tuple[str, str]:
    """`report.tar.gz` -> (`report`, `.tar.gz`); only short alphanumeric suffixes (`v1.2 notes.md` -> `v1.2 notes`)."""
    stem, suffix = name, ""
    while (s := Path(stem).suffix) and len(s) <= 6 and s[1:].isalnum() and len(stem) > len(s):
        stem, suffix = stem[:-len(s)], s + suffix
    return stem, suffix


def _claim(folder: Path, name: str) -> Path:
    """A new, empty file `name` in `folder`, or `stem-2.ext`, `stem-3.ext`, … when taken (O_EXCL: race-free)."""
    folder.mkdir(parents=True, exist_ok=True)
    stem, suffix = _split(name)
    for n in range(1, 10_000):
        candidate = folder / (name if n == 1 else f"{stem}-{n}{suffix}")
        try:
            os.close(os.open(candidate, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
            return candidate
        except FileExistsError:
            continue
    raise ArtifactError(f"too many artifacts named {name} in {folder}")


def _slug(title: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")[:60] or "artifact"


def _insert(store: Store, artifacts_root: Path, run_id: str, target: Path, meta: _Meta) -> Artifact:
    try:
        rel = target.relative_to(artifacts_root).as_posix()
        cur = store.conn.execute(
            "INSERT INTO artifacts (run_id, kind, title, path, created_at) VALUES (?, ?, ?, ?, ?)",
            (run_id, meta.kind, meta.title, rel, time.time()))
    except BaseException:
        target.unlink(missing_ok=True)  # no file without its row
        raise
    return get(store, artifacts_root, cur.lastrowid)  # type: ignore[arg-type]


def register(store: Store, artifacts_root: Path, run_id: str, source: Path, *, kind: str, title: str) -> Artifact:
    """Copy the file `source` into `<artifacts_root>/<run>/` and record it; a folder or a file over 50 MB is refused."""
    meta = _meta(kind, title)
    run_id = store.run(run_id).id
    source = Path(source)
    if source.is_dir():
        raise ArtifactError(f"{source} is a folder; register one file (archive it first, e.g. "
                            f"`tar czf {source.name}.tar.gz {source.name}`)")
    if not source.is_file():
        raise ArtifactError(f"no such file: {source}")
    size = source.stat().st_size
    if size > MAX_BYTES:
        raise ArtifactError(f"{source} is {size / 2**20:.1f} MB; artifacts are capped at {MAX_BYTES // 2**20} MB")
    artifacts_root = Path(artifacts_root).resolve()
    target = _claim(artifacts_root / run_id, source.name)
    try:
        shutil.copyfile(source, target)
    except BaseException as e:
        target.unlink(missing_ok=True)
        if isinstance(e, OSError):
            raise ArtifactError(f"cannot copy {source}: {e.strerror or e}") from None
        raise
    return _insert(store, artifacts_root, run_id, target, meta)


def register_text(store: Store, artifacts_root: Path, run_id: str, text: str, *, kind: str, title: str,
                  name: str | None = None) -> Artifact:
    """Write `text` as a new artifact file (named `name`, default from the title with .md) and record it."""
    meta = _meta(kind, title)
    run_id = store.run(run_id).id
    data = text.encode("utf-8")
    if len(data) > MAX_BYTES:
        raise ArtifactError(f"the text is {len(data) / 2**20:.1f} MB; artifacts are capped at {MAX_BYTES // 2**20} MB")
    if name is not None and (not name.strip() or name in (".", "..") or "/" in name or "\\" in name or "\0" in name):
        raise ArtifactError(f"invalid file name {name!r}: give a plain name such as plan.md")
    artifacts_root = Path(artifacts_root).resolve()
    target = _claim(artifacts_root / run_id, name or f"{_slug(meta.title)}.md")
    try:
        target.write_bytes(data)
    except BaseException:
        target.unlink(missing_ok=True)
        raise
    return _insert(store, artifacts_root, run_id, target, meta)


def _artifact(row: Any, artifacts_root: Path) -> Artifact:
    path = Path(artifacts_root) / row["path"]  # an absolute stored path stays as it is
    size = path.stat().st_size if path.is_file() else None
    return Artifact(id=row["id"], run_id=row["run_id"], kind=row["kind"], title=row["title"], path=str(path),
                    created_at=row["created_at"], size=size, exists=size is not None)


def get(store: Store, artifacts_root: Path, artifact_id: int) -> Artifact:
    """One artifact by id; an unknown id is an ArtifactError."""
    row = store.conn.execute("SELECT * FROM artifacts WHERE id = ?", (artifact_id,)).fetchone()
    if row is None:
        raise ArtifactError(f"no artifact {artifact_id} (list them with `loopwright artifacts`)")
    return _artifact(row, artifacts_root)


def list_artifacts(store: Store, artifacts_root: Path, *, run_id: str | None = None,
                   kind: str | None = None) -> list[Artifact]:
    """Artifacts, oldest first, optionally of one run and/or one kind."""
    sql, params = "SELECT * FROM artifacts WHERE 1", []
    if run_id is not None:
        sql += " AND run_id = ?"
        params.append(run_id)
    if kind is not None:
        sql += " AND kind = ?"
        params.append(kind)
    return [_artifact(r, artifacts_root) for r in store.conn.execute(sql + " ORDER BY id", params)]


# -- the agent's tool --------------------------------------------------------------------------------


class ArtifactArgs(ToolArgs):
    kind: Kind = Field(description="what it is")
    title: Title = Field(description="short title, e.g. 'Migration plan' (1-200 characters)")
    path: str | None = Field(default=None, description="a file you produced, relative to the worktree")
    text: str | None = Field(default=None, description="instead of path: the content of a new artifact "
                                                       "(e.g. a plan or report you write now)")
    name: str | None = Field(default=None, description="with text: its file name (default: from the title, .md)")


class ArtifactTool(FileTool):
    name, args = "artifact", ArtifactArgs
    description = ("Register a deliverable of this run (plan, report, walkthrough, diff, data, figure, screenshot, "
                   "other) so people can find it after the worktree is gone: either a file you made (path) or new "
                   "content (text). Give exactly one of path or text.")

    def work(self, a: ArtifactArgs, ctx: ToolContext) -> ToolOutcome:
        mem = ctx.memory
        if mem is None or mem.store is None:
            raise ToolError("artifacts are not available in this run (it has no memory store)")
        if (a.path is None) == (a.text is None):
            raise ToolError("give exactly one of `path` (a file in the worktree) or `text` (new content)")
        if a.name is not None and a.text is None:
            raise ToolError("`name` goes with `text`; a file registered by path keeps its own name")
        try:
            if a.path is not None:
                source = resolve_in(ctx.worktree, a.path)
                art = register(mem.store, mem.artifacts_root, mem.run_id, source, kind=a.kind, title=a.title)
            else:
                art = register_text(mem.store, mem.artifacts_root, mem.run_id, a.text or "", kind=a.kind,
                                    title=a.title, name=a.name)
        except (ArtifactError, StoreError) as e:
            raise ToolError(str(e).replace(str(ctx.worktree.resolve()) + "/", "")) from None
        return ToolOutcome(f"registered artifact {art.id}: {art.kind} '{art.title}' ({art.size:,} bytes)")


ARTIFACT_TOOLS = (ArtifactTool,)


# -- loopwright artifacts ----------------------------------------------------------------------------


def _project():
    from loopwright.runtime.project import open_project

    project = open_project(Path.cwd())
    return project, project.dir / "artifacts"


def _print_json(data: Any) -> None:
    from loopwright.cli.main import _print_json as out

    out(data)


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
        _print_json([a.model_dump() for a in arts])
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
        _print_json(art.model_dump())
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
        _print_json(art.model_dump())
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
