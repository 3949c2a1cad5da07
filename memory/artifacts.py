"""Artifacts: files a run produced (a plan, a report, a figure, …) registered with a kind and a title.

The file is copied to `.loopwright/artifacts/<run>/` (so it outlives the run's
worktree) before its row goes into the store's `artifacts` table; a failed copy
leaves no row. Only single files are registered: a folder is refused with a hint
to archive it first. The row's `path` is relative to the artifacts root, so the
project can move; a row whose file has vanished is listed as missing.

Here: the storage functions and the agent's `artifact` tool (`loopwright artifacts` is cli/artifacts.py).
"""

from __future__ import annotations

import os
import re
import shutil
import time
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, StringConstraints, ValidationError

from loopwright.errors import LoopwrightError
from loopwright.harness.tools import FileTool, ToolArgs, ToolContext, ToolError, ToolOutcome, resolve_in
from loopwright.memory.store import Store, StoreError

KINDS = ("plan", "report", "walkthrough", "diff", "data", "figure", "screenshot", "other")
Kind = Literal["plan", "report", "walkthrough", "diff", "data", "figure", "screenshot", "other"]
Title = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
MAX_BYTES = 50 * 1024 * 1024


class ArtifactError(LoopwrightError):
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
