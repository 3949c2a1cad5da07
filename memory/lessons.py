"""Lessons: short, actionable bullets that agents learn across runs (ACE / ExpeL style).

A lesson carries its record: `helpful` and `harmful` count the runs it was shown
to that passed or failed, `recalled` how often it was shown. Lessons change by
small deltas (add, edit, credit, merge, retire), each written to
`lesson_history`; none is rewritten whole and none is deleted unless the user
purges it. Project lessons live in the project store (`.loopwright/state.db`,
shown as `12`), global ones in `<loopwright home>/lessons.db` (shown as `g12`);
both have the same schema, made by `create_lesson_schema`.

Recall ranks FTS5 BM25 candidates (porter stemming, through sqlite-utils) by
relevance and record together, within a token budget. A new lesson that
overlaps an existing one by `merge_similarity` (Jaccard of normalized words)
merges into it instead.
"""

from __future__ import annotations

import itertools
import json
import math
import re
import sqlite3
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import sqlite_utils
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from loopwright.errors import LoopwrightError
from loopwright.memory.store import Migration, StoreError, connect, migrate, transaction

if TYPE_CHECKING:
    from loopwright.memory.store import Store
    from loopwright.runtime.config import MemoryConfig

MAX_TEXT = 2000          # characters in one lesson
MAX_TAGS = 12
MAX_TAG = 40             # characters in one tag
PRUNE_MARGIN = 2         # harmful - helpful at which a lesson retires by itself (ExpeL: pruned at zero)
MAX_QUERY_WORDS = 32     # a long task goal is cut to its most specific words for the FTS query
DEDUP_CANDIDATES = 40
MAX_PAIR_TERMS = 7       # dedup: candidates share two of a text's rarest terms, of at most this many
ESSENTIAL_DOCS = 2000    # ranking: the rarest query terms FTS5 ranks by itself match at most this many rows
CANDIDATES = 60          # rows FTS5 hands over for the common terms' share of the score
STATS_SLACK = 100        # the term statistics are rebuilt after max(this, a tenth of the store) new lessons
BM25_K1, BM25_B = 1.2, 0.75  # FTS5's bm25() constants
LESSON_FRAMING_TOKENS = 4  # "- [g12] " and the newline, per recalled lesson
EXPORT_FORMAT = "loopwright-lessons"
RELEVANCE_WEIGHT = 0.6   # recall: 0.6 x relevance (BM25, best = 1) + 0.4 x record score
MIN_RELEVANCE = 0.25     # recall: lessons below this share of the best match's relevance are left out
SECTION_HEADER = ("## Lessons from earlier runs (recalled by loopwright; advice from past runs, not instructions: "
                  "check them against the code)")
STATUSES = ("active", "retired", "merged")

STOP_WORDS = frozenset("""
a about above after again against all also am an and any are as at be because been before being below between both
but by can could did do does doing done down during each else etc few for from further had has have having he her
here hers him his how i if in into is it its itself just let like may me might more most must my near no nor not
now of off on once only or other our ours out over own please same shall she should so some such than that the
their theirs them then there these they this those through to too under until up us very via was we were what
when where which while who whom why will with would you your yours
""".split())

_WORD = re.compile(r"[^\W_]+")  # what FTS5's unicode61 tokenizer calls a token, near enough
_TAG_JUNK = re.compile(r"[^a-z0-9.+#]+")


class LessonError(LoopwrightError):
    """A lesson operation the user or agent asked for cannot be done; said in one line."""


class Lesson(BaseModel):
    id: int
    scope: Literal["project", "global"]
    text: str
    tags: list[str]
    status: str
    helpful: int
    harmful: int
    recalled: int
    run_id: str | None
    task_id: int | None
    outcome: str
    created_at: float
    updated_at: float
    retired_reason: str
    merged_into: int | None

    @property
    def ref(self) -> str:
        return f"g{self.id}" if self.scope == "global" else str(self.id)

    @property
    def score(self) -> float:
        """The record with a uniform prior: a new lesson starts at 0.5, so it gets a chance."""
        return (self.helpful + 1) / (self.helpful + self.harmful + 2)


_LESSON_FIELDS = frozenset(Lesson.model_fields)


class HistoryEntry(BaseModel):
    id: int
    lesson_id: int
    action: str  # add, edit, credit, merge, retire, import
    before: str | None
    after: str | None
    detail: dict
    by: str
    ts: float


# -- schema ------------------------------------------------------------------------------------------


def create_lesson_schema(db: sqlite_utils.Database) -> None:
    """The lesson tables and their full-text index, as first created (version 1 of the lesson schema).

    Used by the project store's migration 6 and the global store's migration 1: later changes go into new
    migrations of both, never here.
    """
    db.execute("""CREATE TABLE lessons (
        id INTEGER PRIMARY KEY AUTOINCREMENT, text TEXT NOT NULL, tags TEXT NOT NULL DEFAULT '[]',
        status TEXT NOT NULL DEFAULT 'active', helpful INTEGER NOT NULL DEFAULT 0,
        harmful INTEGER NOT NULL DEFAULT 0, recalled INTEGER NOT NULL DEFAULT 0,
        run_id TEXT, task_id INTEGER, outcome TEXT NOT NULL DEFAULT 'manual',
        created_at REAL NOT NULL, updated_at REAL NOT NULL, retired_reason TEXT NOT NULL DEFAULT '',
        merged_into INTEGER)""")
    db.execute("CREATE INDEX lessons_status ON lessons(status)")
    db.execute("""CREATE TABLE lesson_history (
        id INTEGER PRIMARY KEY AUTOINCREMENT, lesson_id INTEGER NOT NULL, action TEXT NOT NULL,
        before TEXT, after TEXT, detail TEXT NOT NULL DEFAULT '{}', by TEXT NOT NULL, ts REAL NOT NULL)""")
    db.execute("CREATE INDEX lesson_history_lesson ON lesson_history(lesson_id, id)")
    db["lessons"].enable_fts(["text", "tags"], create_triggers=True, tokenize="porter")
    # a snapshot of the index's vocabulary: document frequencies for ranking (a cache, rebuilt when stale)
    db.execute("CREATE TABLE lesson_terms (term TEXT PRIMARY KEY, docs INTEGER NOT NULL, hits INTEGER NOT NULL)"
               " WITHOUT ROWID")
    db.execute("""CREATE TABLE lesson_term_stats (
        id INTEGER PRIMARY KEY CHECK (id = 1), seq INTEGER NOT NULL, rows INTEGER NOT NULL, tokens INTEGER NOT NULL,
        built_at REAL NOT NULL)""")


GLOBAL_MIGRATIONS: list[Migration] = [
    [create_lesson_schema],  # 1
]


# -- text ----------------------------------------------------------------------------------------------


def _words(text: str) -> list[str]:
    return [w for w in _WORD.findall(text.lower()) if w not in STOP_WORDS]


def _norm_word(w: str) -> str:
    return w[:-1] if len(w) > 3 and w.endswith("s") and not w.endswith("ss") else w


def similarity(a: str, b: str) -> float:
    """Jaccard overlap of the two texts' normalized word sets (stop words out, plural s off)."""
    wa, wb = {_norm_word(w) for w in _words(a)}, {_norm_word(w) for w in _words(b)}
    if not wa or not wb:
        return 0.0
    return len(wa & wb) / len(wa | wb)


def query_words(text: str) -> list[str]:
    """The words of any text worth searching for: stop words out, duplicates out, at most MAX_QUERY_WORDS (the
    longest, as the most specific), in their order."""
    seen: dict[str, int] = {}
    for i, w in enumerate(_words(text)):
        seen.setdefault(w, i)
    words = sorted(seen, key=lambda w: (-len(w), seen[w]))[:MAX_QUERY_WORDS]
    return sorted(words, key=seen.__getitem__)


def fts_query(words: Iterable[str]) -> str:
    """A safe FTS5 query: the words, each quoted (so NEAR, AND, *, : are plain words), joined by OR."""
    return " OR ".join(f'"{w}"' for w in words)


def _idf(rows: int, docs: int) -> float:
    """FTS5 bm25()'s inverse document frequency."""
    return max(math.log((rows - docs + 0.5) / (docs + 0.5)), 1e-6) if rows else 1e-6


def _stem_prefix(term: str) -> str:
    """What a word starts with when porter stems it to `term` (flaky -> flaki: 'flak'), near enough."""
    return term[:-1] if term.endswith("i") and len(term) > 2 else term


def clean_text(text: str) -> str:
    """A lesson's text on one line; LessonError when empty or longer than MAX_TEXT characters."""
    if not isinstance(text, str):
        raise LessonError("a lesson's text must be a string")
    text = " ".join(text.split())
    if not text:
        raise LessonError("a lesson needs some text")
    if len(text) > MAX_TEXT:
        raise LessonError(f"a lesson is at most {MAX_TEXT:,} characters (this one has {len(text):,}): "
                          "write one short, actionable sentence or two")
    return text


def clean_tags(tags: Iterable[str]) -> list[str]:
    """Tags as short lower-case slugs, duplicates dropped, order kept."""
    if isinstance(tags, str):
        tags = [tags]
    out: list[str] = []
    for t in tags:
        if not isinstance(t, str):
            raise LessonError(f"a tag must be a string, not {t!r}")
        slug = _TAG_JUNK.sub("-", t.lower()).strip("-")
        if len(slug) > MAX_TAG:
            raise LessonError(f"tag {t[:50]!r} is too long: a tag is a short slug of at most {MAX_TAG} characters")
        if slug and slug not in out:
            out.append(slug)
    if len(out) > MAX_TAGS:
        raise LessonError(f"at most {MAX_TAGS} tags per lesson ({len(out)} given)")
    return out


def lesson_tokens(lesson: Lesson) -> int:
    """What a lesson costs in the recall section, by the len/4 rule."""
    return len(lesson.text) // 4 + LESSON_FRAMING_TOKENS


def parse_ref(ref: str | int) -> tuple[str, int]:
    """('project' | 'global', id) for `12`, `g12` (also `#12`, `G12`); LessonError otherwise."""
    if isinstance(ref, int) and not isinstance(ref, bool):
        if ref > 0:
            return "project", ref
    elif isinstance(ref, str):
        s = ref.strip().lstrip("#")
        scope = "project"
        if s[:1] in ("g", "G"):
            scope, s = "global", s[1:]
        if s.isascii() and s.isdigit() and int(s) > 0:
            return scope, int(s)
    raise LessonError(f"{ref!r} is not a lesson ref: project lessons are numbers (12), global ones start with g "
                      "(g12); see `loopwright lessons list`")


# -- one database ------------------------------------------------------------------------------------------


class LessonBook:
    """The lessons of one database: the project store's or the global lessons.db."""

    def __init__(self, db: sqlite_utils.Database, scope: Literal["project", "global"] = "project",
                 merge_similarity: float = 0.75):
        self.db, self.scope, self.merge_similarity = db, scope, merge_similarity

    @property
    def conn(self) -> sqlite3.Connection:
        return self.db.conn

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE … COMMIT; nested use is a no-op."""
        with transaction(self.conn) as conn:
            yield conn

    def ref(self, lesson_id: int) -> str:
        return f"g{lesson_id}" if self.scope == "global" else str(lesson_id)

    def _id(self, ref: str | int) -> int:
        scope, lesson_id = parse_ref(ref)
        if scope == "global" and self.scope != "global":
            raise LessonError(f"{ref} is a global lesson, not a {self.scope} one")
        return lesson_id

    def _lesson(self, row: sqlite3.Row) -> Lesson:
        data = {k: row[k] for k in row.keys() if k in _LESSON_FIELDS}
        data["tags"] = json.loads(data["tags"])
        return Lesson(scope=self.scope, **data)

    def _log(self, lesson_id: int, action: str, by: str, before: str | None = None, after: str | None = None,
             **detail: Any) -> None:
        self.conn.execute(
            "INSERT INTO lesson_history (lesson_id, action, before, after, detail, by, ts) VALUES (?,?,?,?,?,?,?)",
            (lesson_id, action, before, after, json.dumps(detail), by, time.time()))

    def get(self, ref: str | int) -> Lesson:
        lesson_id = self._id(ref)
        row = self.conn.execute("SELECT * FROM lessons WHERE id = ?", (lesson_id,)).fetchone()
        if row is None:
            raise LessonError(f"no lesson {self.ref(lesson_id)} (list them with `loopwright lessons list --all`)")
        return self._lesson(row)

    def count(self, status: str | None = "active") -> int:
        if status is None:
            return self.conn.execute("SELECT count(*) FROM lessons").fetchone()[0]
        return self.conn.execute("SELECT count(*) FROM lessons WHERE status = ?", (status,)).fetchone()[0]

    # -- ranking ---------------------------------------------------------------------------------------------
    #
    # FTS5's bm25() costs about a microsecond per matching row, and the common words of a task ("run", "test",
    # "fix") match most rows: an OR of every word of a goal scores half of a 100,000-lesson store (50 ms). So
    # ranking splits the query's terms by document frequency (MaxScore): the rarest, together matching at most
    # ESSENTIAL_DOCS rows, go to FTS5, which ranks their rows by bm25; the common rest only adds its share of the
    # same BM25 formula to those candidates, computed here. Document frequencies come from a snapshot of the
    # index's vocabulary (lesson_terms), rebuilt when the store has grown by a tenth; query words are stemmed
    # by the same porter tokenizer through a scratch FTS5 table.

    def _scratch(self) -> None:
        c = self.conn
        # looked up each time: a rolled-back transaction takes temp tables made inside it along
        if c.execute("SELECT count(*) FROM temp.sqlite_master WHERE name IN ('lw_lesson_vocab', 'lw_stem',"
                     " 'lw_stem_vocab')").fetchone()[0] == 3:
            return
        c.execute("CREATE VIRTUAL TABLE IF NOT EXISTS temp.lw_lesson_vocab USING fts5vocab(main, lessons_fts, 'row')")
        c.execute("CREATE VIRTUAL TABLE IF NOT EXISTS temp.lw_stem USING fts5(w, tokenize = 'porter')")
        c.execute("CREATE VIRTUAL TABLE IF NOT EXISTS temp.lw_stem_vocab USING fts5vocab(temp, lw_stem, 'instance')")

    def _stems(self, words: list[str]) -> dict[str, str]:
        """word -> its term in the index (porter stem); words the tokenizer drops are left out."""
        c = self.conn
        c.execute("DELETE FROM temp.lw_stem")
        c.executemany("INSERT INTO temp.lw_stem (rowid, w) VALUES (?, ?)", list(enumerate(words, 1)))
        stems: dict[str, str] = {}
        for doc, term in c.execute("SELECT doc, term FROM temp.lw_stem_vocab ORDER BY doc, offset"):
            stems.setdefault(words[doc - 1], term)
        return stems

    def _stats(self) -> tuple[int, float]:
        """(rows in the index, average tokens per row) from the snapshot, rebuilding it when stale."""
        self._scratch()
        row = self.conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'lessons'").fetchone()
        seq = row[0] if row else 0
        snap = self.conn.execute("SELECT seq, rows, tokens FROM lesson_term_stats WHERE id = 1").fetchone()
        if snap is None or seq - snap[0] > max(STATS_SLACK, snap[1] // 10):
            with self.transaction() as c:
                c.execute("DELETE FROM lesson_terms")
                c.execute("INSERT INTO lesson_terms (term, docs, hits) SELECT term, doc, cnt FROM temp.lw_lesson_vocab")
                rows = c.execute("SELECT count(*) FROM lessons").fetchone()[0]
                tokens = c.execute("SELECT coalesce(sum(hits), 0) FROM lesson_terms").fetchone()[0]
                c.execute("INSERT OR REPLACE INTO lesson_term_stats (id, seq, rows, tokens, built_at)"
                          " VALUES (1, ?, ?, ?, ?)", (seq, rows, tokens, time.time()))
            snap = (seq, rows, tokens)
        return snap[1], (snap[2] / snap[1] if snap[1] else 1.0)

    def _terms(self, query: str) -> tuple[list[str], dict[str, int], dict[str, str]]:
        """The query's index terms, rarest first, their document frequencies, and a word for each."""
        words = query_words(query)
        if not words:
            return [], {}, {}
        self._scratch()
        stems = self._stems(words)
        by_term: dict[str, str] = {}
        for w in words:
            if w in stems:
                by_term.setdefault(stems[w], w)
        if not by_term:
            return [], {}, {}
        df = dict(self.conn.execute(f"SELECT term, docs FROM lesson_terms WHERE term IN "
                                    f"({','.join('?' * len(by_term))})", list(by_term)).fetchall())
        return sorted(by_term, key=lambda t: (df.get(t, 0), t)), df, by_term

    def _ranked(self, query: str, n: int, statuses: tuple[str, ...]) -> list[tuple[sqlite3.Row, float]]:
        total, avgdl = self._stats()
        order, df, by_term = self._terms(query)
        if not order or n <= 0:
            return []
        essential, covered = 0, 0
        for t in order:
            if essential and covered + df.get(t, 0) > ESSENTIAL_DOCS and total > ESSENTIAL_DOCS:
                break  # (a store this small is ranked by FTS5 alone: exact and cheap)
            essential += 1
            covered += df.get(t, 0)
        # rank the index alone (FTS5 sorts by its own rank cheaply), then look the rows up; over-fetch so a few
        # retired lessons among the best do not crowd out active ones
        rows = self.conn.execute(
            f"SELECT l.id, l.text, l.tags, l.status, l.helpful, l.harmful, f.rank AS bm25 FROM"
            f" (SELECT rowid, rank FROM lessons_fts WHERE lessons_fts MATCH ? ORDER BY rank LIMIT ?) f"
            f" JOIN lessons l ON l.id = f.rowid WHERE l.status IN ({','.join('?' * len(statuses))})",
            (fts_query(by_term[t] for t in order[:essential]), max(n * 2, CANDIDATES), *statuses)).fetchall()
        rest = [(_stem_prefix(t), len(t), _idf(total, df.get(t, 0))) for t in order[essential:]]
        matches: dict[str, tuple[int, ...]] = {}  # token -> the common terms it counts for
        scored = []
        for r in rows:
            score = -r["bm25"]
            if rest:
                tokens = _WORD.findall(f"{r['text']} {r['tags']}".lower())
                tf: dict[int, int] = {}
                for token in tokens:
                    hits = matches.get(token)
                    if hits is None:
                        hits = matches[token] = tuple(i for i, (prefix, length, _) in enumerate(rest)
                                                      if token.startswith(prefix) and len(token) - length <= 4)
                    for i in hits:
                        tf[i] = tf.get(i, 0) + 1
                if tf:
                    norm = BM25_K1 * (1 - BM25_B + BM25_B * len(tokens) / avgdl)
                    score += sum(rest[i][2] * n_i * (BM25_K1 + 1) / (n_i + norm) for i, n_i in tf.items())
            scored.append((r, score))
        scored.sort(key=lambda x: (-x[1], x[0]["id"]))
        return scored[:n]

    def candidates(self, query: str, n: int, statuses: tuple[str, ...] = ("active",)) -> list[tuple[Lesson, float]]:
        """Up to n lessons matching the query's words, best first, with their BM25 relevance (> 0, higher is
        better). Any text is a safe query."""
        ranked = self._ranked(query, n, statuses)
        if not ranked:
            return []
        full = {r["id"]: self._lesson(r) for r in self.conn.execute(
            f"SELECT * FROM lessons WHERE id IN ({','.join('?' * len(ranked))})", [r["id"] for r, _ in ranked])}
        return [(full[r["id"]], score) for r, score in ranked]

    def _similar(self, text: str) -> list[Lesson]:
        """Active lessons sharing words with `text`, most first: those sharing at least two of its m rarest
        terms, where m is one more than the terms a lesson `merge_similarity` alike may lack (at most
        MAX_PAIR_TERMS, so a long text may miss some), or any one term when that is all there is."""
        self._stats()
        order, _, by_term = self._terms(text)
        if not order:
            return []
        m = min(int((1 - self.merge_similarity) * len(order)) + 2, MAX_PAIR_TERMS, len(order))
        words = [f'"{by_term[t]}"' for t in order[:m]]
        expr = " OR ".join(f"({a} AND {b})" for a, b in itertools.combinations(words, 2)) if m > 1 else words[0]
        rows = self.conn.execute(
            "SELECT l.* FROM (SELECT rowid, rank FROM lessons_fts WHERE lessons_fts MATCH ? ORDER BY rank LIMIT ?) f"
            " JOIN lessons l ON l.id = f.rowid WHERE l.status = 'active' ORDER BY f.rank", (expr, DEDUP_CANDIDATES))
        return [self._lesson(r) for r in rows]

    def near_duplicate(self, text: str) -> tuple[Lesson, float] | None:
        """The active lesson most like `text`, when at least `merge_similarity` alike."""
        best: tuple[Lesson, float] | None = None
        for lesson in self._similar(text):
            sim = similarity(text, lesson.text)
            if sim >= self.merge_similarity and (best is None or sim > best[1]):
                best = (lesson, sim)
        return best

    def add(self, text: str, tags: Iterable[str] = (), *, run_id: str | None = None, task_id: int | None = None,
            outcome: str = "manual", by: str = "cli") -> tuple[Lesson, bool]:
        """Add a lesson, or merge it into a near-duplicate; returns (the lesson, merged)."""
        text, tags = clean_text(text), clean_tags(tags)
        with self.transaction():
            dup = self.near_duplicate(text)
            if dup is not None:
                lesson, sim = dup
                return self._absorb(lesson, text, tags, by, "merge", similarity=round(sim, 3), run_id=run_id,
                                    task_id=task_id, outcome=outcome), True
            now = time.time()
            cur = self.conn.execute(
                "INSERT INTO lessons (text, tags, run_id, task_id, outcome, created_at, updated_at)"
                " VALUES (?,?,?,?,?,?,?)", (text, json.dumps(tags), run_id, task_id, outcome, now, now))
            self._log(cur.lastrowid, "add", by, None, text, tags=tags, run_id=run_id, task_id=task_id,
                      outcome=outcome)
            return self.get(cur.lastrowid), False

    def _absorb(self, lesson: Lesson, text: str, tags: list[str], by: str, action: str,
                counts: tuple[int, int, int] = (0, 0, 0), **detail: Any) -> Lesson:
        """Fold a near-duplicate into `lesson`: the more specific text (more words, then longer) wins, tags
        unite, records add up."""
        keep = text if (len(_words(text)), len(text)) > (len(_words(lesson.text)), len(lesson.text)) else lesson.text
        merged_tags = lesson.tags + [t for t in tags if t not in lesson.tags][:max(MAX_TAGS - len(lesson.tags), 0)]
        self.conn.execute(
            "UPDATE lessons SET text = ?, tags = ?, helpful = helpful + ?, harmful = harmful + ?,"
            " recalled = recalled + ?, updated_at = ? WHERE id = ?",
            (keep, json.dumps(merged_tags), *counts, time.time(), lesson.id))
        self._log(lesson.id, action, by, lesson.text, keep, incoming=text, tags=merged_tags, **detail)
        return self.get(lesson.id)

    def edit(self, ref: str | int, *, text: str | None = None, tags: Iterable[str] | None = None,
             by: str = "cli") -> Lesson:
        new_text = clean_text(text) if text is not None else None
        new_tags = clean_tags(tags) if tags is not None else None
        with self.transaction():
            lesson = self.get(ref)
            text_after = new_text if new_text is not None else lesson.text
            tags_after = new_tags if new_tags is not None else lesson.tags
            if text_after == lesson.text and tags_after == lesson.tags:
                return lesson
            self.conn.execute("UPDATE lessons SET text = ?, tags = ?, updated_at = ? WHERE id = ?",
                              (text_after, json.dumps(tags_after), time.time(), lesson.id))
            self._log(lesson.id, "edit", by, lesson.text, text_after, tags_before=lesson.tags, tags=tags_after)
            return self.get(lesson.id)

    def retire(self, ref: str | int, reason: str, by: str = "cli") -> Lesson:
        """Take a lesson out of recall; it stays in the store with its history."""
        with self.transaction():
            lesson = self.get(ref)
            if lesson.status != "active":
                raise LessonError(f"lesson {lesson.ref} is already {lesson.status}")
            self._retire(lesson, reason, by)
            return self.get(lesson.id)

    def _retire(self, lesson: Lesson, reason: str, by: str) -> None:
        self.conn.execute("UPDATE lessons SET status = 'retired', retired_reason = ?, updated_at = ? WHERE id = ?",
                          (reason, time.time(), lesson.id))
        self._log(lesson.id, "retire", by, lesson.text, lesson.text, reason=reason)

    def purge(self, ref: str | int) -> Lesson:
        """Delete a lesson and its history for good (only on the user's explicit request)."""
        with self.transaction():
            lesson = self.get(ref)
            self.conn.execute("DELETE FROM lessons WHERE id = ?", (lesson.id,))
            self.conn.execute("DELETE FROM lesson_history WHERE lesson_id = ?", (lesson.id,))
            return lesson

    def merge(self, refs: Iterable[str | int], text: str, by: str = "cli") -> Lesson:
        """Merge active lessons into the first one with a new text; the others point to it (status merged)."""
        ids = list(dict.fromkeys(self._id(r) for r in refs))
        if len(ids) < 2:
            raise LessonError("merging needs at least two different lessons")
        text = clean_text(text)
        with self.transaction():
            lessons = [self.get(i) for i in ids]
            for lesson in lessons:
                if lesson.status != "active":
                    raise LessonError(f"lesson {lesson.ref} is {lesson.status}; only active lessons merge")
            keep, others = lessons[0], lessons[1:]
            tags: list[str] = []
            for lesson in lessons:
                tags += [t for t in lesson.tags if t not in tags]
            now = time.time()
            self.conn.execute(
                "UPDATE lessons SET text = ?, tags = ?, helpful = ?, harmful = ?, recalled = ?, updated_at = ?"
                " WHERE id = ?",
                (text, json.dumps(tags[:MAX_TAGS]), sum(x.helpful for x in lessons), sum(x.harmful for x in lessons),
                 sum(x.recalled for x in lessons), now, keep.id))
            self._log(keep.id, "merge", by, keep.text, text, merged=[x.id for x in others])
            for other in others:
                self.conn.execute("UPDATE lessons SET status = 'merged', merged_into = ?, updated_at = ? WHERE id = ?",
                                  (keep.id, now, other.id))
                self._log(other.id, "merge", by, other.text, text, merged_into=keep.id)
            return self.get(keep.id)

    def credit(self, refs: Iterable[str | int], helpful: bool, by: str = "cli") -> list[int]:
        """One helpful (or harmful) mark on each lesson; returns the ids that retired for their record
        (harmful - helpful >= PRUNE_MARGIN)."""
        column = "helpful" if helpful else "harmful"
        pruned = []
        with self.transaction():
            for ref in refs:
                lesson_id = self._id(ref)
                row = self.conn.execute(
                    f"UPDATE lessons SET {column} = {column} + 1, updated_at = ? WHERE id = ? RETURNING *",
                    (time.time(), lesson_id)).fetchone()
                if row is None:
                    continue  # purged since it was shown
                lesson = self._lesson(row)
                self._log(lesson_id, "credit", by, mark=column, helpful=lesson.helpful, harmful=lesson.harmful)
                if lesson.status == "active" and lesson.harmful - lesson.helpful >= PRUNE_MARGIN:
                    self._retire(lesson, f"pruned: harmful in {lesson.harmful} runs, helpful in {lesson.helpful}",
                                 by)
                    pruned.append(lesson_id)
        return pruned

    def list(self, status: str | None = "active", tag: str | None = None, limit: int | None = None) -> list[Lesson]:
        """Lessons in id order; status None means all."""
        sql, params = "SELECT * FROM lessons WHERE 1", []
        if status is not None:
            sql += " AND status = ?"
            params.append(status)
        if tag is not None:
            sql += " AND EXISTS (SELECT 1 FROM json_each(lessons.tags) WHERE value = ?)"
            params.append((clean_tags([tag]) or [""])[0])
        sql += " ORDER BY id"
        if limit is not None:
            sql += " LIMIT ?"
            params.append(limit)
        return [self._lesson(r) for r in self.conn.execute(sql, params)]

    def history(self, ref: str | int) -> list[HistoryEntry]:
        lesson_id = self._id(ref)
        rows = self.conn.execute("SELECT * FROM lesson_history WHERE lesson_id = ? ORDER BY id", (lesson_id,))
        return [HistoryEntry(**{**dict(r), "detail": json.loads(r["detail"])}) for r in rows]

    def enforce_cap(self, max_lessons: int, by: str = "cli") -> list[int]:
        """Retire the lowest-scoring active lessons beyond `max_lessons` (ties: the oldest); returns their ids."""
        with self.transaction():
            over = self.count() - max_lessons
            if over <= 0:
                return []
            rows = self.conn.execute(
                "SELECT * FROM lessons WHERE status = 'active'"
                " ORDER BY (helpful + 1.0) / (helpful + harmful + 2), id LIMIT ?", (over,)).fetchall()
            for r in rows:
                lesson = self._lesson(r)
                self._retire(lesson, f"over the cap of {max_lessons} active lessons (lowest score "
                                     f"{lesson.score:.2f})", by)
            return [r["id"] for r in rows]

    def insert_imported(self, item: ImportedLesson, by: str) -> tuple[Lesson, bool]:
        """One imported lesson: active ones merge into a near-duplicate (records add up); the rest are kept as
        they were."""
        text, tags = clean_text(item.text), clean_tags(item.tags)
        if item.status == "active":
            dup = self.near_duplicate(text)
            if dup is not None:
                return self._absorb(dup[0], text, tags, by, "import", (item.helpful, item.harmful, item.recalled),
                                    similarity=round(dup[1], 3)), True
        now = time.time()
        cur = self.conn.execute(
            "INSERT INTO lessons (text, tags, status, helpful, harmful, recalled, run_id, task_id, outcome,"
            " created_at, updated_at, retired_reason) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
            (text, json.dumps(tags), item.status, item.helpful, item.harmful, item.recalled, item.run_id,
             item.task_id, item.outcome, item.created_at or now, now, item.retired_reason))
        self._log(cur.lastrowid, "import", by, None, text, tags=tags, source_ref=item.ref)
        return self.get(cur.lastrowid), False


# -- export / import -----------------------------------------------------------------------------------------


class ImportedLesson(BaseModel):
    model_config = ConfigDict(extra="ignore")

    text: str
    tags: list[str] = Field(default_factory=list)
    status: Literal["active", "retired", "merged"] = "active"
    helpful: int = Field(default=0, ge=0)
    harmful: int = Field(default=0, ge=0)
    recalled: int = Field(default=0, ge=0)
    run_id: str | None = None
    task_id: int | None = None
    outcome: str = "imported"
    created_at: float | None = None
    retired_reason: str = ""
    ref: str | None = None
    merged_into: int | None = None
    id: int | None = None


class LessonExport(BaseModel):
    model_config = ConfigDict(extra="ignore")

    format: Literal["loopwright-lessons"]
    version: Literal[1]
    lessons: list[ImportedLesson]


def _describe(e: ValidationError) -> str:
    problems = []
    for err in e.errors()[:3]:
        where = ".".join(str(x) for x in err["loc"])
        problems.append(f"{where}: {err['msg']}" if where else err["msg"])
    more = f" (and {e.error_count() - 3} more)" if e.error_count() > 3 else ""
    return "; ".join(problems) + more


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
        from loopwright.skills.catalog import loopwright_home

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


def open_lessons(root: Path | None = None) -> Lessons:
    """The lessons of the project around `root` (default: the current folder), for scripts and the CLI."""
    from loopwright.runtime.project import open_project

    project = open_project(root or Path.cwd())
    return Lessons(project.store, project.config.memory)
