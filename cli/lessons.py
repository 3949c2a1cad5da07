"""`loopwright lessons ...`: what agents learned, searched, shown with history, added, edited, forgotten, moved."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from loopwright.cli.common import add_actions, print_json
from loopwright.memory.lesson_model import Lesson, LessonError
from loopwright.memory.lessons import Lessons
from loopwright.runtime.project import open_project


def _open() -> Lessons:
    project = open_project(Path.cwd())
    return Lessons(project.store, project.config.memory)


def _note_global(lessons: Lessons) -> None:
    """Say once, on stderr, why global lessons are missing from a listing."""
    if lessons.global_problem:
        print(f"loopwright: note: {lessons.global_problem}", file=sys.stderr)


def _data(lesson: Lesson) -> dict:
    return {"ref": lesson.ref, **lesson.model_dump(), "score": round(lesson.score, 3)}


def _line(lesson: Lesson) -> str:
    status = "" if lesson.status == "active" else f" [{lesson.status}]"
    tags = f"  #{' #'.join(lesson.tags)}" if lesson.tags else ""
    text = lesson.text if len(lesson.text) <= 100 else lesson.text[:99] + "…"
    return f"{lesson.ref:>6}  +{lesson.helpful}/-{lesson.harmful}  {text}{tags}{status}"


def _when(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(ts))


def _scope_books(lessons: Lessons, scope: str | None):
    if scope is not None:
        return [lessons.book(scope)]
    _note_global(lessons)
    return lessons.books()


def cmd_list(args: argparse.Namespace) -> int:
    lessons = _open()
    found = [x for book in _scope_books(lessons, args.scope)
             for x in book.list(status=None if args.all else "active", tag=args.tag)]
    if args.json:
        print_json([_data(x) for x in found])
        return 0
    if not found:
        print("no lessons yet" + (f" tagged {args.tag}" if args.tag else "") +
              " (agents write them after runs; add one with `loopwright lessons add TEXT`)")
    for x in found:
        print(_line(x))
    return 0


def cmd_search(args: argparse.Namespace) -> int:
    lessons = _open()
    _note_global(lessons)
    found = lessons.search(args.query, limit=args.limit, include_retired=args.all)
    if args.json:
        print_json([_data(x) for x in found])
        return 0
    if not found:
        print(f"no lesson matches {args.query!r}")
    for x in found:
        print(_line(x))
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    lessons = _open()
    book, lesson_id = lessons.resolve(args.ref)
    lesson, history = book.get(lesson_id), book.history(lesson_id)
    if args.json:
        print_json({**_data(lesson), "history": [h.model_dump() for h in history]})
        return 0
    print(f"lesson {lesson.ref} ({lesson.scope}, {lesson.status}): helpful {lesson.helpful}, harmful "
          f"{lesson.harmful}, recalled {lesson.recalled}, score {lesson.score:.2f}")
    if lesson.tags:
        print(f"tags: {', '.join(lesson.tags)}")
    origin = f"run {lesson.run_id} (task {lesson.task_id}, {lesson.outcome})" if lesson.run_id else lesson.outcome
    print(f"from: {origin}; created {_when(lesson.created_at)}, updated {_when(lesson.updated_at)}")
    if lesson.retired_reason:
        print(f"retired: {lesson.retired_reason}")
    if lesson.merged_into:
        print(f"merged into: {book.ref(lesson.merged_into)}")
    print()
    print(lesson.text)
    print("\nhistory:")
    for h in history:
        extra = ""
        if h.action in ("edit", "merge", "import") and h.before is not None and h.before != h.after:
            extra = f": {h.before!r} -> {h.after!r}"
        elif h.action == "credit":
            extra = f": {h.detail.get('mark')}"
        elif h.action == "retire":
            extra = f": {h.detail.get('reason', '')}"
        print(f"  {_when(h.ts)}  {h.action} by {h.by}{extra}")
    return 0


def cmd_add(args: argparse.Namespace) -> int:
    lessons = _open()
    book = lessons.book("global" if args.global_ else "project")
    lesson, merged = book.add(args.text, args.tag or (), by="cli")
    if args.json:
        print_json({**_data(lesson), "merged": merged})
    elif merged:
        print(f"merged into lesson {lesson.ref} (a near-duplicate), which now reads: {lesson.text}")
    else:
        print(f"added lesson {lesson.ref}")
    return 0


def cmd_edit(args: argparse.Namespace) -> int:
    if args.text is None and args.tag is None:
        raise LessonError("nothing to change: give --text and/or --tag")
    lessons = _open()
    book, lesson_id = lessons.resolve(args.ref)
    lesson = book.edit(lesson_id, text=args.text, tags=args.tag, by="cli")
    if args.json:
        print_json(_data(lesson))
    else:
        print(f"edited lesson {lesson.ref}")
    return 0


def cmd_forget(args: argparse.Namespace) -> int:
    lessons = _open()
    book, lesson_id = lessons.resolve(args.ref)
    if args.purge:
        lesson = book.purge(lesson_id)
        message = f"deleted lesson {lesson.ref} and its history"
    else:
        lesson = book.retire(lesson_id, args.reason, by="cli")
        message = (f"retired lesson {lesson.ref}: no longer recalled, but kept in the store with its history "
                   f"(`--purge` deletes it)")
    if args.json:
        print_json({**_data(lesson), "purged": args.purge})
    else:
        print(message)
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    lessons = _open()
    if args.scope is None:
        _note_global(lessons)
    data = lessons.export(args.scope)
    if args.output is None:
        print_json(data)
        return 0
    try:
        Path(args.output).write_text(json.dumps(data, indent=2) + "\n")
    except OSError as e:
        raise LessonError(f"cannot write {args.output}: {e.strerror or e}") from None
    if args.json:
        print_json({"file": args.output, "lessons": len(data["lessons"])})
    else:
        print(f"exported {len(data['lessons'])} lesson(s) to {args.output}")
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    try:
        data = json.loads(Path(args.file).read_text())
    except OSError as e:
        raise LessonError(f"cannot read {args.file}: {e.strerror or e}") from None
    except (ValueError, UnicodeDecodeError) as e:
        raise LessonError(f"{args.file} is not JSON: {e}") from None
    lessons = _open()
    scope = "global" if args.global_ else "project"
    total = len(data.get("lessons", [])) if isinstance(data, dict) and isinstance(data.get("lessons"), list) else 0
    added = lessons.import_data(data, scope=scope, by="cli")
    if args.json:
        print_json({"scope": scope, "added": added, "merged": total - added})
    else:
        print(f"imported {total} lesson(s) into the {scope} lessons: {added} added, {total - added} merged into "
              "near-duplicates")
    return 0


def add_parsers(sub, add) -> None:
    """Register `lessons ...` on the main parser (`add(name, func, help)` makes a subparser)."""
    lessons = add("lessons", None, "what agents learned across runs: list, search, show, add, edit, forget, export, "
                                   "import", json_flag=False)
    action = add_actions(lessons, "lessons_command")

    def scope_option(p) -> None:
        p.add_argument("--scope", choices=["project", "global"], help="only this project's lessons or only the "
                                                                      "global ones (default: both)")

    p = action("list", cmd_list, "active lessons, project (12) and global (g12), with their record")
    p.add_argument("--tag", help="only lessons with this tag")
    p.add_argument("--all", action="store_true", help="retired and merged ones too")
    scope_option(p)
    p = action("search", cmd_search, "lessons ranked by relevance to a query")
    p.add_argument("query")
    p.add_argument("--limit", type=int, default=10)
    p.add_argument("--all", action="store_true", help="retired and merged ones too")
    action("show", cmd_show, "one lesson with its provenance and history").add_argument("ref", help="12 or g12")
    p = action("add", cmd_add, "add a lesson by hand (a near-duplicate merges into the existing one)")
    p.add_argument("text")
    p.add_argument("--tag", action="append", metavar="TAG", help="a topic tag (repeatable)")
    p.add_argument("--global", dest="global_", action="store_true", help="to your global lessons (all projects)")
    p = action("edit", cmd_edit, "change a lesson's text or tags (the change is kept in its history)")
    p.add_argument("ref", help="12 or g12")
    p.add_argument("--text")
    p.add_argument("--tag", action="append", metavar="TAG", help="the new tags (repeatable; replace the old ones)")
    p = action("forget", cmd_forget, "retire a lesson: no longer recalled, kept with its history; --purge deletes it")
    p.add_argument("ref", help="12 or g12")
    p.add_argument("--reason", default="forgotten by the user", help="why (kept in its history)")
    p.add_argument("--purge", action="store_true", help="delete the lesson and its history for good")
    p = action("export", cmd_export, "every lesson (retired ones too) as JSON, for a backup or another project")
    scope_option(p)
    p.add_argument("-o", "--output", metavar="FILE", help="write to FILE (default: standard output)")
    p = action("import", cmd_import, "add the lessons of an export; near-duplicates merge into existing ones")
    p.add_argument("file")
    p.add_argument("--global", dest="global_", action="store_true", help="into your global lessons")
