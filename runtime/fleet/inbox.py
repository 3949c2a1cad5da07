"""The task inbox: markdown files dropped into `.loopwright/inbox/` become queued tasks.

A file is optional YAML front matter (between `---` lines at the very top)
holding the options of `loopwright post` under their `TaskRequest` names
(`title`, `check`, `priority`, `after`, `until`, `max_attempts`, `budget_usd`,
`target`, `provider`, `model`, `base_url`, `script`, `keep`), then the goal.
Without a `title` the first markdown heading is the title.

A watchdog observer (non-recursive) only notes which paths changed; the
daemon's `drain()` does the work on its own thread, once a file has been
unchanged (mtime and size) for `inbox.settle_seconds`. A queued file moves to
`inbox/done/<stem>.task-<id>.md`; anything wrong with a file moves it to
`inbox/rejected/` with a `<name>.error` beside it saying what, in one line.
Nothing is ever overwritten, and no file is lost or read half-written.
"""

from __future__ import annotations

import os
import re
import stat
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import yaml
from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer

from loopwright.errors import LoopwrightError
from loopwright.harness.models import ModelError
from loopwright.memory.store import StoreError
from loopwright.runtime.config import ConfigError
from loopwright.runtime.posting import PostError, TaskRequest, parse_request, post_task
from loopwright.runtime.project import Project

POLL_WITHOUT_WATCHER = 2.0  # seconds between full scans when the observer cannot start
HEADING = re.compile(r"^\s{0,3}#{1,6}\s+(.+?)(?:\s+#+)?\s*$")
AGAIN = "fix it and move it back into .loopwright/inbox/"
OPTIONS_HINT = "the front matter takes the options of `loopwright post`, " + AGAIN
YAML_HINT = "the front matter is `option: value` lines between two `---` lines at the very top; " + AGAIN


@dataclass
class InboxResult:
    """What became of one inbox file: the task it queued, or why it was rejected."""

    path: Path  # where the file was in the inbox
    task_id: int | None = None
    error: str | None = None
    moved_to: Path | None = None  # in done/ or rejected/; None if it could not be moved


class Rejected(LoopwrightError):
    """The file cannot become a task: a one-line reason and a hint."""

    def __init__(self, message: str, hint: str = AGAIN):
        super().__init__(message, hint)


def ignored(name: str) -> bool:
    """Dotfiles and editor temporaries (`*.swp`, `*~`, `.#*`) are not tasks and stay where they are."""
    return name.startswith(".") or name.endswith(("~", ".swp", ".swx"))


def one_line(text: str) -> str:
    return " ".join(str(text).split())


def split_front_matter(text: str) -> tuple[dict, str]:
    """(options, body) of an inbox file; Rejected when the front matter is malformed."""
    text = text.removeprefix("\ufeff")
    lines = text.splitlines(keepends=True)
    if not lines or lines[0].strip() != "---":
        return {}, text
    end = next((i for i in range(1, len(lines)) if lines[i].strip() in ("---", "...")), None)
    if end is None:
        raise Rejected("the front matter has no closing `---` line", YAML_HINT)
    try:
        data = yaml.safe_load("".join(lines[1:end]))
    except (yaml.YAMLError, ValueError) as e:  # ValueError: a date like 2024-13-45
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 2}" if mark is not None else ""  # +1 for 0-based, +1 for the opening ---
        problem = getattr(e, "problem", None) or e
        raise Rejected(f"the front matter is not valid YAML: {one_line(problem)}{where}", YAML_HINT) from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        kind = {"list": "a list", "str": "plain text"}.get(type(data).__name__, f"a {type(data).__name__}")
        raise Rejected(f"the front matter is {kind}, not a mapping of options (`option: value` lines)", YAML_HINT)
    return {str(k): v for k, v in data.items()}, "".join(lines[end + 1:])


def request_from(text: str, root: Path) -> TaskRequest:
    """The TaskRequest an inbox file asks for (a relative `script` is taken from the project root)."""
    options, body = split_front_matter(text)
    if "goal" in options:
        raise Rejected("`goal` is not an option: the text below the front matter is the goal", OPTIONS_HINT)
    if not options.get("title"):
        heading = next((m.group(1) for m in map(HEADING.match, body.splitlines()) if m), None)
        if heading:
            options["title"] = heading
    request = parse_request(options | {"goal": body})
    if request.script and not Path(request.script).expanduser().is_absolute():
        request = request.model_copy(update={"script": str(root / request.script)})
    return request


def _move(src: Path, folder: Path, stem: str, suffix: str, *, extra: str = "") -> Path:
    """Move `src` to `folder/<stem><suffix>` (or `<stem>-2<suffix>`, ...) without overwriting anything."""
    folder.mkdir(parents=True, exist_ok=True)
    n = 1
    while True:
        dst = folder / f"{stem}{f'-{n}' if n > 1 else ''}{suffix}"
        n += 1
        if dst.exists() or (extra and Path(str(dst) + extra).exists()):
            continue
        try:
            os.link(src, dst)  # fails if dst exists: no race can make us overwrite
        except FileExistsError:
            continue
        except OSError:  # no hard links here (some file systems): check, then rename
            if dst.exists():
                continue
            os.rename(src, dst)
            return dst
        os.unlink(src)
        return dst


class _Noter(FileSystemEventHandler):
    """On the observer's thread: only note which paths changed."""

    def __init__(self, inbox: Inbox):
        self.inbox = inbox

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.is_directory or event.event_type in ("opened", "closed_no_write"):
            return
        paths = [event.src_path] + ([event.dest_path] if getattr(event, "dest_path", "") else [])
        with self.inbox._lock:
            self.inbox._touched.update(Path(os.fsdecode(p)) for p in paths)


class Inbox:
    """The inbox folder of one project, drained by the daemon every poll."""

    def __init__(self, project: Project, say: Callable[[str], None]):
        self.project, self.say = project, say
        self.dir = project.dir / "inbox"
        self.done, self.rejected = self.dir / "done", self.dir / "rejected"
        self._lock = threading.Lock()
        self._touched: set[Path] = set()  # written by the observer's thread
        self._scan = False
        self._settling: dict[Path, tuple[tuple[int, int], float]] = {}  # path -> (mtime_ns, size), first seen
        self._stuck: dict[Path, tuple[int, int]] = {}  # could not be moved away: not taken again while unchanged
        self._observer = None
        self._next_poll: float | None = None  # full scans on a timer when there is no observer

    @property
    def settle(self) -> float:
        return self.project.config.inbox.settle_seconds

    def start(self) -> None:
        """Create the folders, start watching, and take the files already waiting."""
        for d in (self.dir, self.done, self.rejected):
            d.mkdir(parents=True, exist_ok=True)
        with self._lock:
            self._scan = True
        observer = Observer()
        try:
            observer.schedule(_Noter(self), str(self.dir), recursive=False)
            observer.start()
        except OSError as e:  # e.g. the inotify watch limit: fall back to scanning now and then
            self.say(f"inbox: cannot watch {self.dir} ({one_line(e)}); scanning it every {POLL_WITHOUT_WATCHER:g} s")
            self._next_poll = time.monotonic() + POLL_WITHOUT_WATCHER
        else:
            self._observer = observer

    def stop(self) -> None:
        """Stop watching (files still settling are taken by the next daemon)."""
        if self._observer is not None:
            self._observer.stop()
            self._observer.join(timeout=5)
            self._observer = None

    def drain(self) -> list[InboxResult]:
        """Take every settled file waiting; cheap when watchdog saw nothing and nothing is settling."""
        with self._lock:
            scan, touched = self._scan, self._touched
            self._scan, self._touched = False, set()
        if self._next_poll is not None and time.monotonic() >= self._next_poll:
            scan, self._next_poll = True, time.monotonic() + POLL_WITHOUT_WATCHER
        if not (scan or touched or self._settling):
            return []
        candidates = touched | set(self._settling)
        if scan:
            try:
                candidates.update(self.dir.iterdir())
            except OSError as e:
                self.say(f"inbox: cannot list {self.dir}: {one_line(e)}")
        ready: list[tuple[int, str, Path]] = []
        now = time.monotonic()
        for path in candidates:
            sig = self._settled(path, now)
            if sig is not None:
                ready.append((sig[0], path.name, path))
        results = []
        for _, _, path in sorted(ready):  # oldest first: files dropped in order queue in order
            try:
                results.append(self._take(path))
            except Exception as e:  # never take the daemon down; leave the file where it is
                self.say(f"inbox: could not take {path.name} ({type(e).__name__}: {one_line(e)}); "
                         f"it stays in the inbox until it changes or the daemon restarts")
                self._note_stuck(path)
        return results

    def _settled(self, path: Path, now: float) -> tuple[int, int] | None:
        """The file's (mtime_ns, size) once unchanged for `settle` seconds; None while settling or not a task file."""
        if path.parent != self.dir or ignored(path.name):
            return None
        try:
            st = path.stat()
        except OSError:  # gone (moved away, deleted)
            self._settling.pop(path, None)
            self._stuck.pop(path, None)
            return None
        if not stat.S_ISREG(st.st_mode):
            return None
        sig = (st.st_mtime_ns, st.st_size)
        if self._stuck.get(path) == sig:
            self._settling.pop(path, None)
            return None
        self._stuck.pop(path, None)
        seen = self._settling.get(path)
        if seen is None or seen[0] != sig:
            self._settling[path] = (sig, now)
            if self.settle > 0:
                return None
        elif now - seen[1] < self.settle:
            return None
        self._settling.pop(path, None)
        return sig

    def _note_stuck(self, path: Path) -> None:
        try:
            st = path.stat()
        except OSError:
            return
        self._stuck[path] = (st.st_mtime_ns, st.st_size)

    def _take(self, path: Path) -> InboxResult:
        """Queue one settled file and move it to done/, or move it to rejected/ with its .error."""
        try:
            if path.suffix.lower() != ".md":
                raise Rejected(f"only .md files are read from the inbox, not {path.suffix or 'a file without one'}",
                               f"rename it to {path.stem}.md and move it back into .loopwright/inbox/")
            try:
                text = path.read_text(encoding="utf-8")
            except UnicodeDecodeError as e:
                raise Rejected(f"the file is not UTF-8 text (byte {e.start})", "save it as UTF-8; " + AGAIN) from None
            except FileNotFoundError:
                return InboxResult(path)  # gone between the look and the read
            except OSError as e:
                raise Rejected(f"the file cannot be read: {one_line(e.strerror or e)}") from None
            task = post_task(self.project, request_from(text, self.project.root))
        except Rejected as e:
            return self._reject(path, one_line(e.message), e.hint)
        except (PostError, StoreError, ConfigError, ModelError) as e:
            empty = str(e).startswith("goal:")
            return self._reject(path, one_line(e), "write the goal below the front matter; " + AGAIN if empty
                                else OPTIONS_HINT)
        try:
            moved = _move(path, self.done, f"{path.stem}.task-{task.id}", path.suffix)
        except OSError as e:
            self.say(f"task {task.id} queued from inbox/{path.name}: {task.title} (but it could not be moved to "
                     f"inbox/done/: {one_line(e)}; remove it, or it is not taken again while unchanged)")
            self._note_stuck(path)
            return InboxResult(path, task_id=task.id)
        self.say(f"task {task.id} queued from inbox/{path.name} (now inbox/done/{moved.name}): {task.title}")
        return InboxResult(path, task_id=task.id, moved_to=moved)

    def _reject(self, path: Path, error: str, hint: str) -> InboxResult:
        try:
            moved = _move(path, self.rejected, path.stem, path.suffix, extra=".error")
        except OSError as e:
            self.say(f"inbox/{path.name} rejected: {error} (and it could not be moved to inbox/rejected/: "
                     f"{one_line(e)})")
            self._note_stuck(path)
            return InboxResult(path, error=error)
        try:
            Path(str(moved) + ".error").write_text(f"{error} (hint: {hint})\n", encoding="utf-8")
        except OSError as e:
            self.say(f"inbox: could not write {moved.name}.error: {one_line(e)}")
        self.say(f"inbox/{path.name} rejected (now inbox/rejected/{moved.name}): {error}")
        return InboxResult(path, error=error, moved_to=moved)
