"""Finding installed skills: scopes, precedence, trust, `pack:skill` names, search, and the catalog an agent sees.

Scopes, highest precedence first: project (`.loopwright/skills/`, `.agents/skills/`,
`.claude/skills/` in the repository), user (`~/.loopwright/skills/`,
`~/.agents/skills/`), bundled (shipped in this package). Between project and
user sits the project's `learned` pack: skills drafted by reflection, kept under
the user's home (`~/.loopwright/learned/<project>/learned/`) so a cloned
repository cannot plant one, and disabled until `loopwright skills promote`.
A name found in two
places is taken from the higher scope, with a warning. Project skills load only
after `loopwright trust`: a cloned repository must not slip instructions into an
agent's prompt. A skill inside a folder of the scope root (an installed pack)
can be named `pack:skill`.

Parsing is cached by (path, mtime, size), so rebuilding the catalog after a
change re-reads only what changed.
"""

from __future__ import annotations

import hashlib
import heapq
import json
import math
import os
import re
from collections import Counter
from dataclasses import dataclass, field
from operator import attrgetter
from pathlib import Path

from loopwright.errors import LoopwrightError
from loopwright.memory.paths import loopwright_home
from loopwright.skills.format import (
    SKILL_FILE,
    SKILL_FILES,
    Diagnostic,
    Skill,
    load_skill,
    load_skill_stat,
    skill_file,
)

PROJECT_DIRS = (".loopwright/skills", ".agents/skills", ".claude/skills")
BUNDLED_DIR = Path(__file__).parent / "bundled"
SKIP_DIRS = {".git", "node_modules", "__pycache__", ".venv", "venv", ".tox", ".mypy_cache", ".pytest_cache"}
MAX_DEPTH = 6
MAX_SKILLS_PER_ROOT = 5000
SCOPES = ("project", "learned", "user", "bundled")
_by_name = attrgetter("name")


class SkillError(LoopwrightError):
    """A skill name or source the user gave cannot be used; said in one line with a hint."""


def user_dirs() -> list[Path]:
    return [loopwright_home() / "skills", Path.home() / ".agents" / "skills"]


def learned_root(project_root: Path) -> Path:
    """The scope root of a project's learned skills (they sit in its `learned` pack folder)."""
    resolved = project_root.resolve()
    key = hashlib.sha256(str(resolved).encode()).hexdigest()[:12]
    return loopwright_home() / "learned" / f"{resolved.name}-{key}"


def scope_roots(project_root: Path | None) -> list[tuple[str, Path]]:
    """Every folder skills are looked for in, highest precedence first."""
    roots: list[tuple[str, Path]] = []
    if project_root is not None:
        roots += [("project", project_root / d) for d in PROJECT_DIRS]
        roots.append(("learned", learned_root(project_root)))
    roots += [("user", d) for d in user_dirs()]
    roots.append(("bundled", BUNDLED_DIR))
    return roots


# -- trust -----------------------------------------------------------------------------------------


def _trust_file() -> Path:
    return loopwright_home() / "trusted.json"


def trusted_projects() -> set[str]:
    try:
        return set(json.loads(_trust_file().read_text()).get("projects", []))
    except (OSError, ValueError, AttributeError):
        return set()


def is_trusted(project_root: Path) -> bool:
    return str(project_root.resolve()) in trusted_projects()


def set_trust(project_root: Path, trusted: bool) -> None:
    """Record (or revoke) that this repository's own skills may enter agents' prompts."""
    projects = trusted_projects()
    (projects.add if trusted else projects.discard)(str(project_root.resolve()))
    path = _trust_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"projects": sorted(projects)}, indent=2))
    tmp.replace(path)


# -- discovery -------------------------------------------------------------------------------------


@dataclass
class Entry:
    skill: Skill
    scope: str
    pack: str | None  # the folder under the scope root that holds the skill, for installed packs

    @property
    def name(self) -> str:
        return self.skill.name

    @property
    def ref(self) -> str:
        return f"{self.pack}:{self.name}" if self.pack else self.name


_CACHE: dict[Path, tuple[int, int, Skill | None, list[Diagnostic]]] = {}


def _load_cached(folder: Path) -> tuple[Skill | None, list[Diagnostic]]:
    hit = _CACHE.get(folder)
    if hit is None:  # first sight: no stat before parsing, the cache is keyed by the parse's own fstat
        skill, diags, st = load_skill_stat(folder)
        if st is None:  # SKILL.md could not be opened
            try:
                st = os.stat(skill_file(folder))
            except OSError as e:
                return None, [Diagnostic("error", skill_file(folder), f"cannot read: {e.strerror}")]
        _CACHE[folder] = (st.st_mtime_ns, st.st_size, skill, diags)
        return skill, diags
    try:
        st = os.stat(skill_file(folder))
    except OSError as e:
        return None, [Diagnostic("error", skill_file(folder), f"cannot read: {e.strerror}")]
    if hit[0] == st.st_mtime_ns and hit[1] == st.st_size:
        return hit[2], hit[3]
    skill, diags = load_skill(folder)
    _CACHE[folder] = (st.st_mtime_ns, st.st_size, skill, diags)
    return skill, diags


def skill_folders(root: Path) -> tuple[list[Path], list[Diagnostic]]:
    """Folders under `root` holding a SKILL.md: .git, node_modules and the like skipped; depth and count capped."""
    found: list[Path] = []
    notes: list[Diagnostic] = []
    stack: list[tuple[str | Path, int]] = [(root, 0)]
    while stack:
        folder, depth = stack.pop()  # str paths below the root: a Path per folder walked costs more than the walk
        try:
            with os.scandir(folder) as it:
                entries = sorted(it, key=_by_name)
        except OSError:
            continue
        dirs = []
        for e in entries:
            name = e.name
            if name in SKILL_FILES and e.is_file() and not (found and found[-1] == Path(folder)):
                found.append(Path(folder))
                if len(found) >= MAX_SKILLS_PER_ROOT:
                    notes.append(Diagnostic("warning", str(root), f"stopped after {MAX_SKILLS_PER_ROOT} skills"))
                    return found, notes
            elif name[0] != "." and name not in SKIP_DIRS and e.is_dir(follow_symlinks=False):
                dirs.append(e.path)
        if depth < MAX_DEPTH:
            stack += [(d, depth + 1) for d in reversed(dirs)]
        elif dirs:
            notes.append(Diagnostic("warning", str(folder), f"not searched deeper than {MAX_DEPTH} levels"))
    return found, notes


@dataclass
class Catalog:
    entries: list[Entry] = field(default_factory=list)  # what agents can use, by name
    shadowed: list[Entry] = field(default_factory=list)  # lost to a skill of the same name in a higher scope
    disabled: list[Entry] = field(default_factory=list)
    diagnostics: list[Diagnostic] = field(default_factory=list)
    _index: SearchIndex | None = None

    def get(self, ref: str) -> Entry:
        """A skill by `name` or `pack:name`; SkillError with the closest names otherwise."""
        pack, _, name = ref.rpartition(":")
        # a bare name means the winner; `pack:name` (or `scope:name`) may reach a shadowed one
        pool = self.entries + self.disabled + (self.shadowed if pack else [])
        for e in pool:
            if e.name == name and (not pack or pack in (e.pack, e.scope)):
                return e
        near = [e.ref for _, e in self.search(name, limit=3)]
        hint = f"; did you mean {', '.join(near)}?" if near else "; see `loopwright skills list`"
        raise SkillError(f"no skill named '{ref}'{hint}")

    def search(self, query: str, limit: int = 10) -> list[tuple[float, Entry]]:
        """Skills ranked by relevance of their name and description to `query` (BM25)."""
        if self._index is None:
            self._index = SearchIndex(self.entries)
        return self._index.search(query, limit)


def discover(project_root: Path | None, *, trusted: bool | None = None, disabled: set[str] = frozenset()) -> Catalog:
    """The catalog of every scope (see the module docstring)."""
    cat = Catalog()
    seen: dict[str, Entry] = {}
    if project_root is not None and trusted is None:
        trusted = is_trusted(project_root)
    for scope, root in scope_roots(project_root):
        if not root.is_dir():
            continue
        if scope == "project" and not trusted:
            cat.diagnostics.append(Diagnostic("warning", str(root), "project skills are not loaded until you trust "
                                                                    "this repository: `loopwright trust`"))
            continue
        folders, notes = skill_folders(root)
        cat.diagnostics += notes
        depth = len(root.parts)
        for folder in folders:
            skill, diags = _load_cached(folder)
            cat.diagnostics += diags
            if skill is None:
                continue
            rel = folder.parts[depth:]  # the path below the root (skill_folders' paths start with it)
            entry = Entry(skill, scope, "loopwright" if scope == "bundled" else (rel[0] if len(rel) > 1 else None))
            if skill.name in seen:
                winner = seen[skill.name]
                cat.shadowed.append(entry)
                cat.diagnostics.append(Diagnostic(
                    "warning", str(folder / SKILL_FILE),
                    f"skill '{skill.name}' is also in {winner.skill.path} ({winner.scope}), which wins; "
                    f"address this one as '{entry.ref}' if it has a pack" if entry.pack else
                    f"skill '{skill.name}' is also in {winner.skill.path} ({winner.scope}), which wins"))
                continue
            seen[skill.name] = entry
            (cat.disabled if skill.name in disabled else cat.entries).append(entry)
    return cat


# -- search ----------------------------------------------------------------------------------------

_WORD = re.compile(r"[a-z0-9]+")


def _terms(text: str) -> list[str]:
    return _WORD.findall(text.lower())


class SearchIndex:
    """BM25 over each skill's name (counted three times) and description; built once per catalog."""

    def __init__(self, entries: list[Entry], k1: float = 1.2, b: float = 0.75):
        self.entries, self.k1, self.b = entries, k1, b
        self.lengths: list[int] = []
        postings: dict[str, list[tuple[int, int]]] = {}  # term -> (document, term frequency)
        for i, e in enumerate(entries):
            terms = _terms(e.name.replace("-", " ")) * 3 + _terms(e.skill.description)
            self.lengths.append(len(terms))
            for t, tf in Counter(terms).items():
                postings.setdefault(t, []).append((i, tf))
        self.postings = postings
        n = len(entries) or 1
        self.avg = sum(self.lengths) / n if self.lengths else 1.0
        self.idf = {t: math.log(1 + (n - len(p) + 0.5) / (len(p) + 0.5)) for t, p in postings.items()}
        # BM25's length normalisation per document (a document without terms has no postings: never used)
        self.length_norm = [k1 * (1 - b + b * length / self.avg) if length else 0.0 for length in self.lengths]

    def search(self, query: str, limit: int = 10) -> list[tuple[float, Entry]]:
        scores: dict[int, float] = {}
        get, length_norm, k1_1 = scores.get, self.length_norm, self.k1 + 1
        for t in set(_terms(query)):
            idf = self.idf.get(t)
            if idf is None:
                continue
            for i, tf in self.postings[t]:
                scores[i] = get(i, 0.0) + idf * (tf * k1_1 / (tf + length_norm[i]))
        items = scores.items()
        if 0 < limit < len(scores):  # rank only what can reach the top `limit` (ties at the cut included)
            cut = heapq.nlargest(limit, scores.values())[-1]
            items = [(i, s) for i, s in items if s >= cut]
        best = sorted(items, key=lambda kv: (-kv[1], self.entries[kv[0]].name))[:limit]
        return [(round(s, 4), self.entries[i]) for i, s in best]


# -- what the agent sees -----------------------------------------------------------------------------


def catalog_text(entries: list[Entry], budget_tokens: int) -> tuple[str, list[str]]:
    """The system prompt's skills section (names and descriptions only) within `budget_tokens`; and what it left out."""
    if not entries:
        return "", []
    head = ("\n\n## Skills\nSkills are instructions and scripts for particular kinds of work. When one fits what "
            "you are doing, call `use_skill` with its name to read it (you get its instructions, its folder and "
            "its files; read them with read_file and run its scripts with the shell).\n")
    lines, left_out = [], []
    used = len(head) // 4
    for e in entries:
        line = f"- {e.name}: {' '.join(e.skill.description.split())}"
        cost = len(line) // 4 + 1
        if used + cost > budget_tokens:
            left_out.append(e.ref)
            continue
        lines.append(line)
        used += cost
    if not lines:
        return "", left_out
    return head + "\n".join(lines), left_out
