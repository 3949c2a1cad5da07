"""Lessons: short, actionable bullets that agents learn across runs (ACE / ExpeL style).

A lesson carries its record: `helpful` and `harmful` count the runs it was shown
to that passed or failed (practice: the tasks, relative to their measured
success, `credit_practice`), `recalled` how often it was shown. Project lessons
live in the project store (`.loopwright/state.db`, shown as `12`), global ones
in `<loopwright home>/lessons.db` (shown as `g12`). `Lessons` (here) is both
together, what runs, tools and the CLI use: recall ranks candidates by
relevance and record within a token budget, runs are credited by outcome, and
lessons are exported and imported. One database's lessons and their SQL are in
lesson_book.py; the record, its text rules and refs in lesson_model.py.
"""

from __future__ import annotations

import math
import sqlite3
import time
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from loopwright.memory.database import StoreError, connect, migrate, transaction
from loopwright.memory.lesson_book import GLOBAL_MIGRATIONS, LessonBook
from loopwright.memory.lesson_model import (
    EXPORT_FORMAT,
    STATUSES,
    Lesson,
    LessonError,
    LessonExport,
    clean_tags,
    clean_text,
    lesson_tokens,
    parse_ref,
)
from loopwright.memory.paths import loopwright_home

if TYPE_CHECKING:
    from loopwright.memory.config import MemoryConfig
    from loopwright.memory.store import Store

PRACTICE_ALPHA = 0.05    # practice: a harmful mark needs the lesson's attempts to fail this unlikely at p̂
RELEVANCE_WEIGHT = 0.6   # recall: 0.6 x relevance (BM25, best = 1) + 0.4 x record score
MIN_RELEVANCE = 0.25     # recall: lessons below this share of the best match's relevance are left out
SECTION_HEADER = ("## Lessons from earlier runs (recalled by loopwright; advice from past runs, not instructions: "
                  "check them against the code)")


def _describe(e: ValidationError) -> str:
    problems = []
    for err in e.errors()[:3]:
        where = ".".join(str(x) for x in err["loc"])
        problems.append(f"{where}: {err['msg']}" if where else err["msg"])
    more = f" (and {e.error_count() - 3} more)" if e.error_count() > 3 else ""
    return "; ".join(problems) + more


def binomial_cdf(x: int, n: int, p: float) -> float:
    """P(X <= x) for X ~ Binomial(n, p)."""
    return sum(math.comb(n, i) * p ** i * (1 - p) ** (n - i) for i in range(x + 1))


def active_count(store: Store) -> int:
    """How many of the project's lessons are active."""
    return LessonBook(store.db).count()


# -- project + global --------------------------------------------------------------------------------------


class Lessons:
    """The project's lessons and the user's global ones, together; what runs, tools and the CLI use."""

    def __init__(self, store: Store, config: MemoryConfig):
        self.store, self.config = store, config
        self.project = LessonBook(store.db, "project", config.merge_similarity)
        self._global: LessonBook | None = None
        self._global_problem = ""
        self._global_opened = False

    # the global store opens on first use; any problem leaves this project-only, never an exception
    def _open_global(self) -> None:
        if self._global_opened:
            return
        self._global_opened = True
        if not self.config.global_lessons:
            return
        path = loopwright_home() / "lessons.db"
        db = None
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            db = connect(path)
            migrate(db, GLOBAL_MIGRATIONS, path)
            with transaction(db.conn):
                pass  # takes the write lock: a store we can read but not write is no use either
        except (OSError, sqlite3.Error, StoreError) as e:
            if db is not None:
                db.conn.close()
            self._global_problem = f"global lessons unavailable ({path}: {e}); using this project's only"
            return
        self._global = LessonBook(db, "global", self.config.merge_similarity)

    @property
    def global_book(self) -> LessonBook | None:
        self._open_global()
        return self._global

    @property
    def global_problem(self) -> str:
        """Why there are no global lessons although the config wants them; '' when they work (or are off)."""
        self._open_global()
        return self._global_problem

    def books(self) -> list[LessonBook]:
        return [self.project] + ([self.global_book] if self.global_book is not None else [])

    def close(self) -> None:
        if self._global is not None:
            self._global.conn.close()
            self._global = None

    def book(self, scope: str) -> LessonBook:
        if scope == "project":
            return self.project
        if self.global_book is None:
            raise LessonError(self.global_problem or "global lessons are off in this project's config "
                                                     "(memory.global_lessons = false)")
        return self.global_book

    def resolve(self, ref: str | int) -> tuple[LessonBook, int]:
        """The book and id of a ref (`12`, `g12`); LessonError when it is malformed or names no lesson."""
        scope, lesson_id = parse_ref(ref)
        book = self.book(scope)
        book.get(lesson_id)
        return book, lesson_id

    def get(self, ref: str | int) -> Lesson:
        book, lesson_id = self.resolve(ref)
        return book.get(lesson_id)

    def search(self, query: str, limit: int = 10, include_retired: bool = False) -> list[Lesson]:
        """Lessons of both scopes matching the query, by BM25."""
        statuses = STATUSES if include_retired else ("active",)
        hits = [(-relevance, i, lesson) for i, book in enumerate(self.books())
                for lesson, relevance in book.candidates(query, limit, statuses)]
        hits.sort(key=lambda h: (h[0], h[1], h[2].id))
        return [lesson for _, _, lesson in hits[:limit]]

    def recall(self, query: str, *, token_budget: int, limit: int) -> list[Lesson]:
        """The active lessons to show for a task: ranked by relevance (BM25 normalized to the best match) and
        record together, as many as fit in `token_budget` (the section header included) up to `limit`."""
        if limit <= 0:
            return []
        pool = max(limit * 3, 30)
        hits = [(relevance, i, lesson) for i, book in enumerate(self.books())
                for lesson, relevance in book.candidates(query, pool)]
        if not hits:
            return []
        best = max(h[0] for h in hits)

        def rank(h: tuple[float, int, Lesson]) -> tuple[float, int, int]:
            relevance = h[0] / best if best > 0 else 0.0
            return (-(RELEVANCE_WEIGHT * relevance + (1 - RELEVANCE_WEIGHT) * h[2].score), h[1], h[2].id)

        left = token_budget - len(SECTION_HEADER) // 4 - 1
        chosen = []
        # a lesson that barely touches the task is noise in its prompt, however good its record
        hits = [h for h in hits if h[0] >= MIN_RELEVANCE * best]
        for _, _, lesson in sorted(hits, key=rank):
            cost = lesson_tokens(lesson)
            if cost <= left:
                chosen.append(lesson)
                left -= cost
                if len(chosen) == limit:
                    break
        return chosen

    def recall_section(self, lessons: list[Lesson]) -> str:
        """The prompt section for recalled lessons: a marked header and one bullet per lesson; '' for none."""
        if not lessons:
            return ""
        return SECTION_HEADER + "\n" + "\n".join(f"- [{x.ref}] {x.text}" for x in lessons) + "\n"

    def record_shown(self, run_id: str, lessons: list[Lesson]) -> None:
        """Note that a run was shown these lessons (so its outcome credits them) and count the recall."""
        new: dict[str, list[int]] = {"project": [], "global": []}
        with self.store.transaction() as conn:
            rank = conn.execute("SELECT coalesce(max(rank), 0) FROM run_lessons WHERE run_id = ?",
                                (run_id,)).fetchone()[0]
            for lesson in lessons:
                if conn.execute("INSERT OR IGNORE INTO run_lessons (run_id, ref, rank) VALUES (?, ?, ?)",
                                (run_id, lesson.ref, rank + 1)).rowcount:
                    rank += 1
                    new[lesson.scope].append(lesson.id)
        for scope, ids in new.items():
            if ids:
                book = self.project if scope == "project" else self.global_book
                if book is not None:
                    book.conn.execute(f"UPDATE lessons SET recalled = recalled + 1 WHERE id IN "
                                      f"({','.join('?' * len(ids))})", ids)

    def shown(self, run_id: str) -> list[str]:
        return [r[0] for r in self.store.conn.execute(
            "SELECT ref FROM run_lessons WHERE run_id = ? ORDER BY rank", (run_id,))]

    def lessons_shown(self, run_id: str) -> list[Lesson]:
        """The lessons a run was shown, in the order shown (those since purged or out of reach left out)."""
        out = []
        for ref in self.shown(run_id):
            try:
                out.append(self.get(ref))
            except LessonError:
                continue
        return out

    def credit_run(self, run_id: str, passed: bool, by: str | None = None) -> list[str]:
        """Credit every lesson shown to the run, helpful if it passed, harmful if not: exactly once per run,
        whoever calls it and however often (a guarded UPDATE claims the rows). Returns the refs credited."""
        by = by or run_id
        with self.store.transaction() as conn:
            refs = [r[0] for r in conn.execute(
                "UPDATE run_lessons SET credited = 1 WHERE run_id = ? AND credited = 0 RETURNING ref", (run_id,))]
            project = [r for r in refs if parse_ref(r)[0] == "project"]
            if project:
                self.project.credit(project, passed, by)
        global_refs = [r for r in refs if parse_ref(r)[0] == "global"]
        if global_refs and self.global_book is not None:
            # a separate database: credited after the claim above committed (a crash between loses only these)
            self.global_book.credit(global_refs, passed, by)
        return sorted(refs, key=lambda r: (r.startswith("g"), parse_ref(r)[1]))

    def credit_practice(self, outcomes: list[tuple[str, bool]], task: str, by: str | None = None) -> list[str]:
        """Credit the lessons shown to one practice task's attempts (`outcomes`: (run id, passed)), relative to the
        task's measured success p̂ = the share of them that passed, one mark per lesson and task: helpful when the
        attempts it was shown to passed at least once and at p̂ or better, harmful only when they failed so often
        that p̂ makes it unlikely (binomial tail <= PRACTICE_ALPHA), else none. Practice is aimed at p̂ = 0.5, so a
        failed attempt is expected, not a lesson's fault: counted per run, half the lessons shown to 8 attempts
        retired. A harmful mark names `task` as its evidence (retiring needs two tasks: LessonBook.credit). Claims
        the runs' rows as credit_run does; returns the refs credited."""
        if not outcomes:
            return []
        by = by or f"practice {task}"
        passed = dict(outcomes)
        p_hat = sum(passed.values()) / len(passed)
        shown: dict[str, list[bool]] = {}
        with self.store.transaction() as conn:
            for run_id, ok in passed.items():
                for (ref,) in conn.execute("UPDATE run_lessons SET credited = 1 WHERE run_id = ? AND credited = 0"
                                           " RETURNING ref", (run_id,)):
                    shown.setdefault(ref, []).append(ok)
        marks: dict[tuple[str, bool], list[int]] = {}
        for ref, oks in shown.items():
            n, x = len(oks), sum(oks)
            if x and x / n >= p_hat - 1e-9:
                marks.setdefault((parse_ref(ref)[0], True), []).append(parse_ref(ref)[1])
            elif binomial_cdf(x, n, p_hat) <= PRACTICE_ALPHA:
                marks.setdefault((parse_ref(ref)[0], False), []).append(parse_ref(ref)[1])
        for (scope, helpful), ids in marks.items():
            book = self.project if scope == "project" else self.global_book
            if book is not None:
                book.credit(ids, helpful, by, evidence=task)
        return sorted((f"g{i}" if scope == "global" else str(i) for (scope, _), ids in marks.items() for i in ids),
                      key=lambda r: (r.startswith("g"), parse_ref(r)[1]))

    def export(self, scope: str | None = None) -> dict:
        """Every lesson (retired ones too) of one scope or both, as JSON-ready data that `import_data` reads."""
        books = self.books() if scope is None else [self.book(scope)]
        lessons = []
        for book in books:
            for lesson in book.list(status=None):
                lessons.append({"ref": lesson.ref, **lesson.model_dump()})
        return {"format": EXPORT_FORMAT, "version": 1, "exported_at": time.time(), "lessons": lessons}

    def import_data(self, data: Any, scope: str = "project", by: str = "cli") -> int:
        """Import exported lessons into one scope, all or none; near-duplicates of active lessons merge.
        Returns how many lessons were added (the rest merged)."""
        try:
            parsed = LessonExport.model_validate(data)
        except ValidationError as e:
            raise LessonError(f"not a lessons export ({_describe(e)})") from None
        for i, item in enumerate(parsed.lessons):
            try:
                clean_text(item.text)
                clean_tags(item.tags)
            except LessonError as e:
                raise LessonError(f"lessons.{i}: {e}") from None
        book = self.book(scope)
        added = 0
        with book.transaction():
            new_ids: dict[int, int] = {}
            for item in parsed.lessons:
                lesson, merged = book.insert_imported(item, by)
                added += not merged
                if item.id is not None:
                    new_ids[item.id] = lesson.id
            for item in parsed.lessons:
                if item.status == "merged" and item.merged_into in new_ids and item.id in new_ids:
                    book.conn.execute("UPDATE lessons SET merged_into = ? WHERE id = ?",
                                      (new_ids[item.merged_into], new_ids[item.id]))
        return added

