"""Lessons at scale: recall from 100,000 lessons, store size, and add-with-dedup throughput, measured in one run.

A temporary project store gets generated lessons: one or two sentences (40-400
characters) from templates over a vocabulary of coding terms (the skills
benchmark's 20 domains, plus commands, files, errors and reasons), so BM25 has
real term statistics to work with; tags from the lesson's domain; records
(helpful/harmful) drawn so a third have some history. They are loaded in bulk
(one transaction, the FTS triggers maintaining the index as in normal use).
The same seed gives the same lessons.

Measured, wall and CPU ms, median and p90 (no assertions; the goals are printed
beside the figures):

- recall: `Lessons.recall` with the default budget (800 tokens, 10 lessons)
  over 200 varied queries (task titles with goals as a run sends them, short
  ones, long pasted goals, FTS-hostile text, nonsense), at 100,000 lessons;
  goal p50 <= 5 ms. Also `search`, recall at 10,000 lessons for the ratio, and
  the naive query recall avoids (FTS5 bm25() over an OR of every query word).
- ranking quality: how much of the exact BM25 top 10's score (bm25() over
  every query word) the top 10 of the fast ranking reaches.
- store size: bytes of the database file (WAL checkpointed) per 10,000 lessons,
  total and without the FTS index (the index's share, by difference with a copy
  that drops it), and per lesson against the bytes of its text.
- add with dedup: `LessonBook.add` (FTS candidates + word overlap, then insert
  or merge, each in its own transaction) for 1,000 new texts, 20% of them
  rewordings of stored lessons, into the 10,000 and the 100,000 store: adds per
  second, and how many merged.
- a run's bookkeeping: record_shown + credit_run for one run shown 10 lessons.
- reflection's own overhead apart from its model call: `reflection.reflect` on a
  finished run (40 messages, a failed check) in the 10,000 store, answered at
  once by a scripted reply with two adds and a credit; its wall time minus the
  time spent inside the model adapter.

    python -m loopwright.bench.memory [--quick] [--lessons 100000] [--keep]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sqlite3
import statistics
import tempfile
import time
from pathlib import Path

from loopwright.bench.skills import PACKS, VERBS, Times, row
from loopwright.memory.lesson_model import fts_query, query_words
from loopwright.memory.lessons import Lessons
from loopwright.memory.store import Store
from loopwright.runtime.config import MemoryConfig

FILES = ["config.py", "cli.py", "models.py", "views.py", "utils.py", "settings.toml", "Makefile", "Dockerfile",
         "package.json", "pyproject.toml", "conftest.py", "schema.sql", "main.go", "lib.rs", "index.ts", "app.tsx",
         "docker-compose.yml", "tox.ini", ".env.example", "README.md", "migrations/", "tests/fixtures/"]
COMMANDS = ["pytest -x", "pytest -k", "ruff check", "mypy --strict", "npm test", "npm run build", "cargo test",
            "go test ./...", "make lint", "git rebase -i", "git bisect", "docker compose up", "alembic upgrade",
            "pip install -e .", "uv sync", "tsc --noEmit", "jest --runInBand", "pre-commit run -a", "kubectl apply",
            "terraform plan"]
ERRORS = ["ImportError", "KeyError", "TimeoutError", "a deadlock", "a race condition", "an off-by-one",
          "a flaky failure", "a segfault", "OOM kills", "a stale cache", "a circular import", "a missing migration",
          "UnicodeDecodeError", "a 429 rate limit", "a lock timeout", "a version conflict", "an infinite loop",
          "permission denied", "a null pointer", "a schema mismatch"]
REASONS = ["the CI image pins an older version", "the fixture is shared across tests", "the cache outlives the run",
           "the default timeout is too short", "the client retries without backoff", "the ORM lazy-loads it",
           "the build step is not hermetic", "the config is read at import time", "the mock hides the real call",
           "the order of the queue is not guaranteed", "the locale differs on CI", "the file is generated",
           "it is only set in production", "the lock file was not regenerated", "two workers share the port"]
TEMPLATES = [
    "When {v}ing {a}, run `{cmd}` first: {reason}.",
    "{A} in {file} fails with {err} when {b} is empty; check {b} before {v}ing.",
    "Do not edit {file} by hand; {v} the {a} instead, because {reason}.",
    "Tests for {a} are flaky under parallel runs ({err}); use a fresh {b} per test.",
    "Before changing {a}, read {file}: {reason}.",
    "To {v} {a} safely, {v2} {b} first and keep {c} unchanged.",
    "{err} in {a} usually means {reason}; fix {b}, not the test.",
    "Prefer `{cmd}` over ad hoc scripts to {v} {a}.",
    "The {a} and {b} code paths diverge in {file}; {v} both or neither.",
    "Pin {a} when you {v} {b}: {reason}.",
    "If `{cmd}` hangs, look for {err} in {a}; {reason}.",
    "Keep {a} out of {file}; it belongs with {b}.",
]
TAILS = [" Verified in three runs.", " This cost a failed run once.", " Also applies to {c}.",
         " Check the logs of {c} when in doubt.", " The acceptance check catches it late, so do it early.",
         " See {file} for the details.", ""]


def _fill(rng: random.Random, tpl: str, vocab: list[str]) -> str:
    v, v2 = rng.sample(VERBS, 2)
    a, b, c = (rng.choice(vocab) for _ in range(3))
    return tpl.format(v=v, v2=v2, a=a, A=a.capitalize(), b=b, c=c, file=rng.choice(FILES), cmd=rng.choice(COMMANDS),
                      err=rng.choice(ERRORS), reason=rng.choice(REASONS))


def lesson_texts(rng: random.Random, n: int) -> list[tuple[str, list[str]]]:
    """n (text, tags) pairs: one or two sentences of a domain's vocabulary."""
    domains = list(PACKS)
    out = []
    for _ in range(n):
        domain = rng.choice(domains)
        vocab = PACKS[domain]
        text = _fill(rng, rng.choice(TEMPLATES), vocab)
        if rng.random() < 0.35:
            text += " " + _fill(rng, rng.choice(TEMPLATES), vocab)
        text += _fill(rng, rng.choice(TAILS), vocab)
        tags = [domain] + ([rng.choice(vocab)] if rng.random() < 0.5 else [])
        out.append((text, tags))
    return out


def reword(rng: random.Random, text: str) -> str:
    """A near-duplicate: the same lesson with a word or a tail changed, as a second run would write it."""
    words = text.split()
    roll = rng.random()
    if roll < 0.4:
        return text + " " + rng.choice(["Always.", "Worth doing.", "Noted again."])
    if roll < 0.7 and len(words) > 8:
        del words[rng.randrange(len(words))]
        return " ".join(words)
    return text.replace(",", ";", 1)


def queries(rng: random.Random, n: int = 200) -> list[str]:
    """Task-like queries: titles with goals, short phrases, long pasted goals, FTS-hostile text, nonsense."""
    everything = [w for ws in PACKS.values() for w in ws]
    out = []
    for i in range(n):
        kind = i % 6
        vocab = rng.choice(list(PACKS.values()))
        if kind in (0, 1):
            out.append(f"{rng.choice(VERBS).capitalize()} the {rng.choice(vocab)} in {rng.choice(FILES)}\n\n"
                       f"The {rng.choice(vocab)} {rng.choice(everything)} fails with {rng.choice(ERRORS)} when we "
                       f"{rng.choice(VERBS)} {rng.choice(vocab)}; make `{rng.choice(COMMANDS)}` pass.")
        elif kind == 2:
            out.append(f"{rng.choice(VERBS)} {rng.choice(vocab)}")
        elif kind == 3:  # a long pasted goal
            out.append(" ".join(_fill(rng, rng.choice(TEMPLATES), vocab) for _ in range(25)))
        elif kind == 4:
            out.append(rng.choice(['fix "quoted" NEAR(a b) col:x (paren) * -minus ^caret', 'AND OR NOT',
                                   'naïve ünïcode — “curly” ℃ 日本語のテスト', "a.b.c/d::e->f", '"""', "*", "NEAR",
                                   "tests/test_x.py::test_y[param-1] fails"]))
        else:
            out.append(rng.choice(["zyzzyva quux", "lorem ipsum dolor", "banana", "how are you", "the", "a an of"]))
    return out


def load(store: Store, items: list[tuple[str, list[str]]], rng: random.Random) -> None:
    """Bulk insert with records: a third of the lessons have some history."""
    now = time.time()
    rows = []
    for text, tags in items:
        helpful = harmful = 0
        if rng.random() < 0.33:
            helpful, harmful = rng.randint(0, 6), rng.randint(0, 3)
        rows.append((text, json.dumps(tags), helpful, harmful, helpful + harmful, "bench", now, now))
    with store.transaction() as conn:
        conn.executemany("INSERT INTO lessons (text, tags, helpful, harmful, recalled, outcome, created_at,"
                         " updated_at) VALUES (?,?,?,?,?,?,?,?)", rows)


def db_bytes(store: Store) -> int:
    store.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return store.path.stat().st_size


def vacuumed_sizes(store: Store, work: Path) -> tuple[int, int]:
    """File sizes of a vacuumed copy, with the FTS index and with it dropped."""
    copy = work / "copy.db"
    store.conn.execute(f"VACUUM INTO '{copy}'")
    with_fts = copy.stat().st_size
    conn = sqlite3.connect(copy)
    conn.execute("DROP TABLE lessons_fts")
    conn.execute("VACUUM")
    conn.close()
    without = copy.stat().st_size
    copy.unlink()
    return with_fts, without


def make_store(path: Path, n: int, seed: int) -> tuple[Store, Lessons, float, list[tuple[str, list[str]]]]:
    store = Store(path)
    lessons = Lessons(store, MemoryConfig(global_lessons=False))
    rng = random.Random(seed)
    items = lesson_texts(rng, n)
    t0 = time.perf_counter()
    load(store, items, rng)
    return store, lessons, time.perf_counter() - t0, items


def time_adds(lessons: Lessons, items: list[tuple[str, list[str]]], rng: random.Random, n: int) -> tuple[float, int]:
    """Seconds for n adds (20% rewordings of stored lessons) and how many merged."""
    fresh = lesson_texts(random.Random(rng.random()), n)
    batch = [(reword(rng, rng.choice(items)[0]), []) if rng.random() < 0.2 else fresh[i] for i in range(n)]
    merged = 0
    t0 = time.perf_counter()
    for text, tags in batch:
        merged += lessons.project.add(text, tags, by="bench")[1]
    return time.perf_counter() - t0, merged


def reflection_overhead(store: Store, lessons: Lessons, reps: int) -> tuple[Times, Times]:
    """Time `reflect` on finished runs with an instant scripted reply: (all of it, the part outside the model call)."""
    import asyncio

    from loopwright.harness.events import CheckRan, ConversationReset, MessageAdded
    from loopwright.harness.messages import Message
    from loopwright.harness.models import ModelAdapter
    from loopwright.harness.script import Script, ScriptTurn
    from loopwright.harness.scripted import ScriptedModel
    from loopwright.runtime.config import Config
    from loopwright.runtime.learning.reflection import reflect

    config = Config(provider="scripted", model="scripted")
    total, own = Times(), Times()
    task = store.create_task("Fix the flaky retry test in the HTTP client and make the timeout configurable",
                             check="pytest -q")
    for i in range(reps):
        run = store.create_run(task.id, provider="scripted", model="scripted", worktree="w", branch=f"b{i}",
                               base_commit="c", target_branch="main")
        store.append(run.id, ConversationReset(reason="start", messages=[Message.user(task.goal)]))
        for j in range(20):
            store.append(run.id, MessageAdded(message=Message(role="assistant", content=[
                {"type": "tool_call", "id": f"c{j}", "name": "shell", "arguments": {"command": f"pytest -k t{j}"}}])))
            store.append(run.id, MessageAdded(message=Message(role="user", content=[
                {"type": "tool_result", "tool_call_id": f"c{j}", "content": "FAILED test_retry " * 20}])))
        store.append(run.id, CheckRan(command="pytest -q", passed=False, exit_code=1,
                                      output_tail="E  assert 1 == 2\n" * 50,
                                      duration_ms=900.0))
        store.transition_run(run.id, "failed", only_from=("running",), reason="check failed")
        shown = lessons.recall(task.goal, token_budget=800, limit=10)
        lessons.record_shown(run.id, shown)
        reply = json.dumps({"operations": [
            {"op": "add", "text": f"Retry tests: stub the clock (case {i}) instead of sleeping", "tags": ["tests"]},
            {"op": "add", "text": f"HTTP client timeouts come from config key http.timeout_{i}", "tags": ["http"]},
            *([{"op": "helpful", "id": shown[0].ref}] if shown else [])]})
        inner: list[float] = []

        class Timed(ScriptedModel):
            async def complete(self, **kw):  # type: ignore[override]
                t0 = time.perf_counter()
                try:
                    return await super().complete(**kw)
                finally:
                    inner.append(time.perf_counter() - t0)

        adapter: ModelAdapter = Timed(Script(turns=[ScriptTurn(text=reply)]))
        c0, t0 = time.process_time(), time.perf_counter()
        asyncio.run(reflect(store=store, lessons=lessons, run=store.run(run.id), task=task, config=config,
                            adapter=adapter, project_root=Path("."), policy=config.retry.policy(), budget_day=None))
        spent, cpu = time.perf_counter() - t0, time.process_time() - c0
        total.wall.append(spent * 1000)
        total.cpu.append(cpu * 1000)
        own.wall.append((spent - sum(inner)) * 1000)
        own.cpu.append((cpu - sum(inner)) * 1000)  # the adapter's time is CPU-bound here (no network)
    return total, own


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer repetitions and adds")
    ap.add_argument("--lessons", type=int, default=100_000)
    ap.add_argument("--keep", action="store_true", help="keep the generated stores and print where")
    args = ap.parse_args()
    reps = 2 if args.quick else 5
    n_adds = 300 if args.quick else 1000
    work = Path(tempfile.mkdtemp(prefix="lw-bench-memory-"))
    saved = os.environ.get("LOOPWRIGHT_HOME")
    os.environ["LOOPWRIGHT_HOME"] = str(work / "home")
    try:
        small, small_l, small_load, small_items = make_store(work / "small.db", 10_000, seed=5)
        big, big_l, big_load, big_items = make_store(work / "big.db", args.lessons, seed=6)
        chars = statistics.mean(len(t) for t, _ in big_items)
        print(f"{args.lessons:,} lessons ({chars:.0f} characters on average) loaded in {big_load:.1f} s; "
              f"10,000 in {small_load:.1f} s   (bulk, one transaction, FTS kept by the triggers)")

        size10k = db_bytes(small)
        vac10k, nofts10k = vacuumed_sizes(small, work)
        size_big = db_bytes(big)
        text10k = sum(len(t.encode()) for t, _ in small_items)

        qs = queries(random.Random(7))
        budget, count = MemoryConfig().recall_tokens, MemoryConfig().recall_count
        recall_big, recall_small, search_big, naive, task_like = Times(), Times(), Times(), Times(), Times()
        for lessons in (big_l, small_l):  # warm the page cache and the statement cache
            for q in qs[:20]:
                lessons.recall(q, token_budget=budget, limit=count)
        hits = []
        for _ in range(reps):
            for i, q in enumerate(qs):
                recall_big(lambda q=q: hits.append(len(big_l.recall(q, token_budget=budget, limit=count))))
                if i % 6 in (0, 1):
                    task_like.wall.append(recall_big.wall[-1])
                    task_like.cpu.append(recall_big.cpu[-1])
                recall_small(lambda q=q: small_l.recall(q, token_budget=budget, limit=count))
                search_big(lambda q=q: big_l.search(q, limit=10))
                fq = fts_query(query_words(q))
                if fq:
                    naive(lambda fq=fq: big.conn.execute(
                        "SELECT rowid, rank FROM lessons_fts WHERE lessons_fts MATCH ? ORDER BY rank LIMIT 120",
                        (fq,)).fetchall())

        agreement = []  # the text ranking against exact BM25 over every query word (slow: 50 ms a query)
        for q in [q for q in qs if query_words(q)][:12 if args.quick else 40]:
            exact = dict(big.conn.execute("SELECT rowid, rank FROM lessons_fts WHERE lessons_fts MATCH ?",
                                          (fts_query(query_words(q)),)).fetchall())
            best = sum(sorted(exact.values())[:10])
            ours = sum(exact.get(lesson.id, 0.0) for lesson, _ in big_l.project.candidates(q, 10))
            agreement.append(ours / best if best else 1.0)

        add_small_s, merged_small = time_adds(small_l, small_items, random.Random(8), n_adds)
        add_big_s, merged_big = time_adds(big_l, big_items, random.Random(9), n_adds)

        run_ops = Times()
        for i in range(50 if args.quick else 200):
            shown = big_l.recall(qs[i % len(qs)], token_budget=budget, limit=count)

            def bookkeeping(i=i, shown=shown) -> None:
                big_l.record_shown(f"run{i}", shown)
                big_l.credit_run(f"run{i}", passed=i % 3 != 0)
            run_ops(bookkeeping)

        reflect_total, reflect_own = reflection_overhead(small, small_l, 10 if args.quick else 40)

        print(f"\nms, {len(qs)} queries x {reps}                               {'median':>8} {'p90':>8} "
              f"{'CPU med':>8}   goal")
        print(f"recall (budget {budget} tokens, {count} lessons):")
        print(row(f"{args.lessons:,} lessons, all queries", recall_big, "p50 <= 5 ms"))
        print(row("  task-like ones (title + goal)", task_like))
        print(row("10,000 lessons, all queries", recall_small))
        print(row(f"search, {args.lessons:,} lessons (limit 10)", search_big))
        print(row("naive: bm25() over every query word", naive, "what recall avoids"))
        print(f"  ratio recall at {args.lessons:,} / 10,000 (median): "
              f"{statistics.median(recall_big.wall) / statistics.median(recall_small.wall):.1f}x; "
              f"{sum(1 for h in hits if h) / len(hits):.0%} of queries recall something, "
              f"{sum(hits) / len(hits):.1f} lessons on average")
        print(f"  text ranking vs exact BM25 over all query words: the top 10 found score "
              f"{statistics.mean(agreement):.0%}"
              f" of the exact top 10's BM25 on average (min {min(agreement):.0%}, {len(agreement)} queries)")
        print(row("a run's record_shown + credit_run (10 shown)", run_ops))
        print(row("reflection, all of it (instant scripted reply)", reflect_total))
        print(row("  its own overhead, apart from the model call", reflect_own))
        print("store size (database file, WAL checkpointed):")
        print(f"  per 10,000 lessons: {size10k:,} bytes ({size10k / 10_000:,.0f} per lesson; "
              f"{size10k / text10k:.1f}x the {text10k:,} bytes of text); vacuumed {vac10k:,}, of which the FTS "
              f"index is {1 - nofts10k / vac10k:.0%}")
        print(f"  {args.lessons:,} lessons: {size_big:,} bytes ({size_big / args.lessons * 10_000:,.0f} per 10,000)")
        print(f"add with dedup (LessonBook.add, {n_adds:,} texts, 20% rewordings of stored lessons):")
        for label, secs, merged in (("10,000", add_small_s, merged_small), (f"{args.lessons:,}", add_big_s,
                                                                            merged_big)):
            print(f"  into {label:>8} lessons: {n_adds / secs:8.0f} adds/s ({secs / n_adds * 1000:.2f} ms each); "
                  f"{merged} merged into a near-duplicate")
        if args.keep:
            print(f"\nkept: {work}")
        for s in (small, big):
            s.close()
    finally:
        if saved is None:
            os.environ.pop("LOOPWRIGHT_HOME", None)
        else:
            os.environ["LOOPWRIGHT_HOME"] = saved
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
