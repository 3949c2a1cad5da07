"""Validity gates shared by the code domains: size caps, the banned-API scan, normalised-AST hashing, duplicates.

The sandboxed gates (the reference passes, determinism, trivial answers fail,
same behaviour as an archived task) need the domain's harness and live with
the domain (python_functions.py); what is here is static and cheap, so it
runs first.

Duplicates and padding, statically: two tasks whose references have the same
normalised AST are the same task; so are two whose shingle sets (statement
word pairs, canonical code token triples) have Jaccard similarity >= 0.8. A
new task that contains >= 0.9 of an archived task's shingles and is longer
(statement, code or total by >= 1.2x) is a padded variant of it.

Normalised: docstrings, annotations and `pass` removed, tuples written as
lists, and filler stripped — in each function, assignments to names that are
never read (dead stores, to a fixed point) and parameters that are never
read (`def rle(s, sep=None)` is `rle(s)` when `sep` is unused); then names
are canonicalised in order of first use in the body (parameters by where
they are used, not where they are declared), so an extra parameter does not
shift the other names. Statement shingles skip filler words (articles,
prepositions, "please", "carefully", ...), so words put between the content
words do not make a statement new. The lengths the padding checks compare
keep the filler: it is what makes a padded task longer.
"""

from __future__ import annotations

import ast
import builtins
import hashlib

from pydantic import BaseModel, ConfigDict, Field

from loopwright.runtime.learning.selfplay.domain import Archive, PracticeTask, Verdict, shingles, words

# Randomness, time, the network, processes, the file system and introspection escapes.
BANNED_MODULES = frozenset({
    "random", "secrets", "time", "datetime", "calendar", "zoneinfo", "socket", "ssl", "urllib", "http", "requests",
    "httpx", "aiohttp", "ftplib", "smtplib", "poplib", "imaplib", "telnetlib", "webbrowser", "xmlrpc",
    "subprocess", "os", "sys", "posix", "nt", "pty", "signal", "threading", "_thread", "multiprocessing",
    "concurrent", "asyncio", "selectors", "select", "uuid", "shutil", "pathlib", "tempfile", "glob", "fnmatch",
    "io", "pickle", "shelve", "marshal", "dbm", "sqlite3", "ctypes", "cffi", "importlib", "pkgutil", "runpy",
    "builtins", "inspect", "gc", "platform", "resource", "mmap", "faulthandler", "tracemalloc", "sched",
    "code", "codeop", "pdb", "atexit", "numpy.random",
})
BANNED_CALLS = frozenset({"open", "exec", "eval", "compile", "__import__", "input", "breakpoint", "globals",
                          "locals", "vars", "id", "exit", "quit", "help", "setattr", "delattr"})
BANNED_ATTRIBUTES = frozenset({"__subclasses__", "__globals__", "__builtins__", "__code__", "__closure__",
                               "__bases__", "__mro__", "__loader__", "__spec__", "__import__", "f_globals",
                               "f_locals", "gi_frame"})
BUILTIN_NAMES = frozenset(dir(builtins))
FILLER_WORDS = frozenset("""a an the of to in on at by for with from into as and or but that this these those is are be
    been it its which who whom whose when where while please note carefully careful consider every each any all
    exactly precisely simply just very really also then so such here there must should will would can may""".split())


class GateConfig(BaseModel):
    """Thresholds of the gates (every one configurable; the defaults are the issue's or measured, see the module)."""

    model_config = ConfigDict(extra="forbid")
    time_limit: float = Field(default=5.0, gt=0)  # seconds for the reference's hidden tests in the sandbox
    trivial_limit: float = Field(default=1.0, gt=0)  # seconds per trivial answer
    max_statement_chars: int = Field(default=2000, gt=0)
    max_tests_chars: int = Field(default=6000, gt=0)
    max_reference_chars: int = Field(default=4000, gt=0)
    duplicate_similarity: float = Field(default=0.8, gt=0, le=1)
    padded_containment: float = Field(default=0.9, gt=0, le=1)
    padded_ratio: float = Field(default=1.2, gt=1)
    min_behaviour_inputs: int = Field(default=3, ge=1)
    max_trivial_constants: int = Field(default=10, ge=0)
    behaviour_candidates: int = Field(default=50, ge=0)
    allowed_modules: list[str] = Field(default_factory=list)  # modules a domain allows despite the ban


def size_problem(cfg: GateConfig, statement: str, tests: str, reference: str) -> str:
    """Which size cap is exceeded ('' when none)."""
    for what, text, cap in (("statement", statement, cfg.max_statement_chars), ("tests", tests, cfg.max_tests_chars),
                            ("reference", reference, cfg.max_reference_chars)):
        if len(text) > cap:
            return f"the {what} has {len(text)} characters (cap {cap})"
    return ""


def _module_banned(name: str, allowed: frozenset[str]) -> bool:
    parts = name.split(".")
    prefixes = {".".join(parts[:i]) for i in range(1, len(parts) + 1)}
    return bool(prefixes & BANNED_MODULES) and not (prefixes & allowed)


def banned_apis(code: str, allowed: frozenset[str] | set[str] = frozenset()) -> list[str]:
    """Banned imports, calls and attributes in `code` (by AST; code that does not parse returns [])."""
    try:
        tree = ast.parse(code)
    except SyntaxError:
        return []
    allowed = frozenset(allowed)
    found: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [f"import {a.name}" for a in node.names if _module_banned(a.name, allowed)]
        elif isinstance(node, ast.ImportFrom):
            if node.module and _module_banned(node.module, allowed):
                found.append(f"from {node.module} import ...")
        elif isinstance(node, ast.Name) and node.id in BANNED_CALLS and node.id not in allowed:
            found.append(f"{node.id}()")
        elif isinstance(node, ast.Attribute) and node.attr in BANNED_ATTRIBUTES:
            found.append(f".{node.attr}")
    return sorted(set(found))


def _read_names(fn: ast.AST) -> set[str]:
    """Names read anywhere in `fn` (nested scopes included), and names declared global or nonlocal."""
    out = {n.id for n in ast.walk(fn) if isinstance(n, ast.Name) and not isinstance(n.ctx, ast.Store)}
    for n in ast.walk(fn):
        if isinstance(n, (ast.Global, ast.Nonlocal)):
            out.update(n.names)
    return out


def _dead_store(stmt: ast.stmt, read: set[str]) -> bool:
    if isinstance(stmt, ast.Assign):
        targets = stmt.targets
    elif isinstance(stmt, (ast.AnnAssign, ast.AugAssign)):
        targets = [stmt.target]
    else:
        return False
    return all(isinstance(t, ast.Name) and t.id not in read for t in targets)


def strip_filler(fn: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
    """Remove dead stores (to a fixed point) and parameters never read from `fn`, in place."""
    while True:
        read = _read_names(fn)
        dead = [(parent, field) for parent in ast.walk(fn) for field in ("body", "orelse", "finalbody")
                if any(_dead_store(s, read) for s in getattr(parent, field, None) or [] if isinstance(s, ast.stmt))]
        if not dead:
            break
        for parent, field in dead:
            setattr(parent, field, [s for s in getattr(parent, field) if not _dead_store(s, read)] or [ast.Pass()])
    read = _read_names(fn)
    a = fn.args
    positional = a.posonlyargs + a.args
    defaults = [None] * (len(positional) - len(a.defaults)) + list(a.defaults)
    kept = [(p, d) for p, d in zip(positional, defaults) if p.arg in read]
    a.posonlyargs = [p for p, _ in kept if p in a.posonlyargs]
    a.args = [p for p, _ in kept if p not in a.posonlyargs]
    a.defaults = [d for _, d in kept if d is not None]
    kw = [(p, d) for p, d in zip(a.kwonlyargs, a.kw_defaults) if p.arg in read]
    a.kwonlyargs, a.kw_defaults = [p for p, _ in kw], [d for _, d in kw]
    if a.vararg is not None and a.vararg.arg not in read:
        a.vararg = None
    if a.kwarg is not None and a.kwarg.arg not in read:
        a.kwarg = None


class _Normalise(ast.NodeTransformer):
    """Canonical names (v0, v1, ... in order of first use), no docstrings, annotations or `pass`, tuples as lists;
    with `strip`, filler removed first (see the module docstring)."""

    def __init__(self, strip: bool = True) -> None:
        self.names: dict[str, str] = {}
        self.strip = strip

    def name(self, name: str) -> str:
        if name in BUILTIN_NAMES:
            return name
        return self.names.setdefault(name, f"v{len(self.names)}")

    def _body(self, body: list[ast.stmt]) -> list[ast.stmt]:
        kept = [s for s in body if not (isinstance(s, ast.Expr) and isinstance(s.value, ast.Constant))
                and not isinstance(s, ast.Pass)]
        return kept or [ast.Pass()]

    def generic_visit(self, node: ast.AST) -> ast.AST:
        node = super().generic_visit(node)
        for attr in ("body", "orelse", "finalbody"):
            value = getattr(node, attr, None)
            if isinstance(value, list) and value and isinstance(value[0], ast.stmt):
                setattr(node, attr, self._body(value))
        return node

    def visit_FunctionDef(self, node: ast.FunctionDef) -> ast.AST:
        if self.strip:
            strip_filler(node)
        node.name = self.name(node.name)
        node.returns = None
        node.decorator_list = [self.visit(d) for d in node.decorator_list]
        node.body = self._body([x for s in node.body if (x := self.visit(s)) is not None])
        node.args = self.visit(node.args)  # after the body: parameters are named where they are used
        return node

    visit_AsyncFunctionDef = visit_FunctionDef  # type: ignore[assignment]

    def visit_ClassDef(self, node: ast.ClassDef) -> ast.AST:
        node.name = self.name(node.name)
        return self.generic_visit(node)

    def visit_arg(self, node: ast.arg) -> ast.AST:
        node.arg = self.name(node.arg)
        node.annotation = None
        return node

    def visit_Name(self, node: ast.Name) -> ast.AST:
        node.id = self.name(node.id)
        return node

    def visit_AnnAssign(self, node: ast.AnnAssign) -> ast.AST:
        self.generic_visit(node)
        if node.value is None:
            return ast.Pass()
        return ast.Assign(targets=[node.target], value=node.value, lineno=node.lineno)

    def visit_Tuple(self, node: ast.Tuple) -> ast.AST:
        return self.generic_visit(ast.List(elts=node.elts, ctx=node.ctx))

    def visit_keyword(self, node: ast.keyword) -> ast.AST:
        if node.arg in self.names:
            node.arg = self.names[node.arg]
        return self.generic_visit(node)


def normalised(code: str, *, strip: bool = True) -> tuple[str, str]:
    """(hash, canonical source) of `code`'s normalised AST (filler stripped unless `strip` is False); raises
    SyntaxError."""
    tree = _Normalise(strip).visit(ast.parse(code))
    ast.fix_missing_locations(tree)
    dump = ast.dump(tree, annotate_fields=False, include_attributes=False)
    return hashlib.sha256(dump.encode()).hexdigest()[:16], ast.unparse(tree)


def features(statement: str, code: str) -> dict:
    """What the duplicate gates and the length penalty use: AST hash, shingles, lengths."""
    ast_hash, canonical = normalised(code)
    statement_words, code_tokens = words(statement), words(normalised(code, strip=False)[1])
    found = (shingles([w for w in statement_words if w not in FILLER_WORDS], 2, "s:")
             | shingles(words(canonical), 3, "c:"))
    return {"ast_hash": ast_hash, "shingles": sorted(found), "statement_words": len(statement_words),
            "code_tokens": len(code_tokens), "length": len(statement_words) + len(code_tokens)}


def longer(new: PracticeTask, old: PracticeTask, ratio: float) -> bool:
    """Whether `new` is a longer telling of `old`: statement, code or total length at least `ratio` times."""
    return (new.statement_words >= ratio * max(old.statement_words, 1) or
            new.code_tokens >= ratio * max(old.code_tokens, 1) or new.length >= ratio * max(old.length, 1))


def static_duplicate(task: PracticeTask, archive: Archive, cfg: GateConfig) -> Verdict | None:
    """Reject a task the archive already has (same normalised AST, or too similar), padded when it is longer."""
    same = archive.same_hash(task.ast_hash)
    if same is not None:
        if longer(task, same, cfg.padded_ratio):
            return Verdict.reject("padded", f"same code as task {same.id} with a longer statement")
        return Verdict.reject("duplicate", f"same normalised code as task {same.id}")
    for sim, contained, other in archive.nearest(frozenset(task.shingles), 3):
        if contained >= cfg.padded_containment and longer(task, other, cfg.padded_ratio):
            return Verdict.reject("padded", f"contains {contained:.0%} of task {other.id} and is longer")
        if sim >= cfg.duplicate_similarity:
            return Verdict.reject("duplicate", f"similarity {sim:.2f} to task {other.id} "
                                               f"(threshold {cfg.duplicate_similarity})")
    return None


def length_hard(truncated: int, attempts: int, share: float = 0.25) -> bool:
    """More than `share` of the attempts hit the token budget: hard only because it is long."""
    return attempts > 0 and truncated > share * attempts
