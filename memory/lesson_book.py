"""The lessons of one database (`LessonBook`): the project store's or the global lessons.db.

Lessons change by small deltas (add, edit, credit, merge, retire), each written
to `lesson_history`; none is rewritten whole and none is deleted unless the
user purges it. Both databases have the same schema, made by
`create_lesson_schema`. Search ranks FTS5 BM25 candidates (porter stemming,
through sqlite-utils); a new lesson that overlaps an active one by
`merge_similarity` (Jaccard of normalized words) merges into it instead.
"""

from __future__ import annotations

import builtins
import itertools
import json
import math
import sqlite3
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any, Literal

import sqlite_utils

from loopwright.memory.database import transaction
from loopwright.memory.lesson_model import (
    MAX_TAGS,
    TOKEN,
    HistoryEntry,
    ImportedLesson,
    Lesson,
    LessonError,
    clean_tags,
    clean_text,
    content_words,
    fts_query,
    parse_ref,
    query_words,
    similarity,
)
from loopwright.memory.schema import Migration

PRUNE_MARGIN = 2         # harmful - helpful at which a lesson retires by itself (ExpeL: pruned at zero)
EVIDENCE_TASKS = 2       # practice credit retires a lesson only with harmful marks from at least this many tasks
DEDUP_CANDIDATES = 40
MAX_PAIR_TERMS = 7       # dedup: candidates share two of a text's rarest terms, of at most this many
ESSENTIAL_DOCS = 2000    # ranking: the rarest query terms FTS5 ranks by itself match at most this many rows
CANDIDATES = 60          # rows FTS5 hands over for the common terms' share of the score
STATS_SLACK = 100        # the term statistics are rebuilt after max(this, a tenth of the store) new lessons
BM25_K1, BM25_B = 1.2, 0.75  # FTS5's bm25() constants

_LESSON_FIELDS = frozenset(Lesson.model_fields)


def _inserted(cur: sqlite3.Cursor) -> int:
    """The id of the row an INSERT just made."""
    assert cur.lastrowid is not None, "an INSERT sets lastrowid"
    return cur.lastrowid


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
    db.table("lessons").enable_fts(["text", "tags"], create_triggers=True, tokenize="porter")
    # a snapshot of the index's vocabulary: document frequencies for ranking (a cache, rebuilt when stale)
    db.execute("CREATE TABLE lesson_terms (term TEXT PRIMARY KEY, docs INTEGER NOT NULL, hits INTEGER NOT NULL)"
               " WITHOUT ROWID")
    db.execute("""CREATE TABLE lesson_term_stats (
        id INTEGER PRIMARY KEY CHECK (id = 1), seq INTEGER NOT NULL, rows INTEGER NOT NULL, tokens INTEGER NOT NULL,
        built_at REAL NOT NULL)""")


GLOBAL_MIGRATIONS: list[Migration] = [
    [create_lesson_schema],  # 1
]


def _idf(rows: int, docs: int) -> float:
    """FTS5 bm25()'s inverse document frequency."""
    return max(math.log((rows - docs + 0.5) / (docs + 0.5)), 1e-6) if rows else 1e-6


def _stem_prefix(term: str) -> str:
    """What a word starts with when porter stems it to `term` (flaky -> flaki: 'flak'), near enough."""
    return term[:-1] if term.endswith("i") and len(term) > 2 else term


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
                tokens = TOKEN.findall(f"{r['text']} {r['tags']}".lower())
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
            lesson_id = _inserted(cur)
            self._log(lesson_id, "add", by, None, text, tags=tags, run_id=run_id, task_id=task_id, outcome=outcome)
            return self.get(lesson_id), False

    def _absorb(self, lesson: Lesson, text: str, tags: list[str], by: str, action: str,
                counts: tuple[int, int, int] = (0, 0, 0), **detail: Any) -> Lesson:
        """Fold a near-duplicate into `lesson`: the more specific text (more words, then longer) wins, tags
        unite, records add up."""
        longer = (len(content_words(text)), len(text)) > (len(content_words(lesson.text)), len(lesson.text))
        keep = text if longer else lesson.text
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

    def credit(self, refs: Iterable[str | int], helpful: bool, by: str = "cli", *,
               evidence: str | None = None) -> list[int]:
        """One helpful (or harmful) mark on each lesson; returns the ids that retired for their record
        (harmful - helpful >= PRUNE_MARGIN). `evidence` names the practice task a mark comes from: such a mark
        retires a lesson only when its harmful marks come from at least EVIDENCE_TASKS tasks (a mark without
        evidence counts as its own)."""
        column = "helpful" if helpful else "harmful"
        detail = {"evidence": evidence} if evidence is not None else {}
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
                self._log(lesson_id, "credit", by, mark=column, helpful=lesson.helpful, harmful=lesson.harmful,
                          **detail)
                if lesson.status == "active" and lesson.harmful - lesson.helpful >= PRUNE_MARGIN and (
                        evidence is None or self._harmful_sources(lesson_id) >= EVIDENCE_TASKS):
                    self._retire(lesson, f"pruned: harmful in {lesson.harmful} runs, helpful in {lesson.helpful}",
                                 by)
                    pruned.append(lesson_id)
        return pruned

    def _harmful_sources(self, lesson_id: int) -> int:
        """How many tasks a lesson's harmful marks come from (each mark without evidence counts as one)."""
        return self.conn.execute(
            "SELECT count(DISTINCT coalesce(json_extract(detail, '$.evidence'), 'mark ' || id)) FROM lesson_history"
            " WHERE lesson_id = ? AND action = 'credit' AND json_extract(detail, '$.mark') = 'harmful'",
            (lesson_id,)).fetchone()[0]

    def list(self, status: str | None = "active", tag: str | None = None, limit: int | None = None) -> list[Lesson]:
        """Lessons in id order; status None means all."""
        sql, params = "SELECT * FROM lessons WHERE 1", builtins.list[Any]()
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

    def history(self, ref: str | int) -> builtins.list[HistoryEntry]:
        lesson_id = self._id(ref)
        rows = self.conn.execute("SELECT * FROM lesson_history WHERE lesson_id = ? ORDER BY id", (lesson_id,))
        return [HistoryEntry(**{**dict(r), "detail": json.loads(r["detail"])}) for r in rows]

    def enforce_cap(self, max_lessons: int, by: str = "cli") -> builtins.list[int]:
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
        lesson_id = _inserted(cur)
        self._log(lesson_id, "import", by, None, text, tags=tags, source_ref=item.ref)
        return self.get(lesson_id), False

