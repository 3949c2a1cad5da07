"""What a lesson is: its record (`Lesson`, `HistoryEntry`), the rules for its text, tags and refs, the words
that search and dedup compare, and the export format (`LessonExport`). No SQL: the tables are in lesson_book.py.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from loopwright.errors import LoopwrightError

MAX_TEXT = 2000          # characters in one lesson
MAX_TAGS = 12
MAX_TAG = 40             # characters in one tag
MAX_QUERY_WORDS = 32     # a long task goal is cut to its most specific words for the FTS query
LESSON_FRAMING_TOKENS = 4  # "- [g12] " and the newline, per recalled lesson
EXPORT_FORMAT = "loopwright-lessons"
STATUSES = ("active", "retired", "merged")

STOP_WORDS = frozenset("""
a about above after again against all also am an and any are as at be because been before being below between both
but by can could did do does doing done down during each else etc few for from further had has have having he her
here hers him his how i if in into is it its itself just let like may me might more most must my near no nor not
now of off on once only or other our ours out over own please same shall she should so some such than that the
their theirs them then there these they this those through to too under until up us very via was we were what
when where which while who whom why will with would you your yours
""".split())

TOKEN = re.compile(r"[^\W_]+")  # what FTS5's unicode61 tokenizer calls a token, near enough
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


class HistoryEntry(BaseModel):
    id: int
    lesson_id: int
    action: str  # add, edit, credit, merge, retire, import
    before: str | None
    after: str | None
    detail: dict
    by: str
    ts: float


# -- text ----------------------------------------------------------------------------------------------


def content_words(text: str) -> list[str]:
    """The text's words, lower-cased, stop words out."""
    return [w for w in TOKEN.findall(text.lower()) if w not in STOP_WORDS]


def _norm_word(w: str) -> str:
    return w[:-1] if len(w) > 3 and w.endswith("s") and not w.endswith("ss") else w


def similarity(a: str, b: str) -> float:
    """Jaccard overlap of the two texts' normalized word sets (stop words out, plural s off)."""
    wa, wb = {_norm_word(w) for w in content_words(a)}, {_norm_word(w) for w in content_words(b)}
    if not wa or not wb:
        return 0.0
    return len(wa & wb) / len(wa | wb)


def query_words(text: str) -> list[str]:
    """The words of any text worth searching for: stop words out, duplicates out, at most MAX_QUERY_WORDS (the
    longest, as the most specific), in their order."""
    seen: dict[str, int] = {}
    for i, w in enumerate(content_words(text)):
        seen.setdefault(w, i)
    words = sorted(seen, key=lambda w: (-len(w), seen[w]))[:MAX_QUERY_WORDS]
    return sorted(words, key=seen.__getitem__)


def fts_query(words: Iterable[str]) -> str:
    """A safe FTS5 query: the words, each quoted (so NEAR, AND, *, : are plain words), joined by OR."""
    return " OR ".join(f'"{w}"' for w in words)


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


# -- export format -------------------------------------------------------------------------------------


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

