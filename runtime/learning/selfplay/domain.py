"""The domain interface of self-play (propose, validate, solve, verify) and the records every domain shares.

A `Domain` turns a proposer's text into proposals (`parse`), decides whether a
proposal may enter the pool (`validate`, which runs the validity gates and
returns a `Verdict` with a reason), says what the solver is asked
(`solver_goal`) and decides whether a solution is right (`verify`). Who
proposes and who solves is not the domain's business: a `Proposer` answers a
`ProposalRequest` with text, a `Solver` makes k attempts at a task.
"""

from __future__ import annotations

import hashlib
import json
import re
import shlex
import sys
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from pydantic import BaseModel, Field, ValidationError

from loopwright.errors import LoopwrightError

# Why a proposal (or a measured task) is turned away; every rejection is counted under one of these.
REASONS = ("unparseable", "too_long", "banned_api", "no_tests", "reference_fails", "timeout", "nondeterministic",
           "trivial", "duplicate", "padded", "ungrounded", "length_hard")


class SelfPlayError(LoopwrightError):
    """A self-play command that cannot run as asked (said in one line)."""


class ProposalError(ValueError):
    """The proposer's text is not a proposal (not JSON, a missing field, code that does not compile)."""


class PracticeTask(BaseModel):
    """A task that passed the gates: what the solver sees, what decides, and what the gates measured."""

    id: str
    domain: str
    kind: str = "general"  # the running length median and the clusters are per kind
    statement: str
    payload: dict[str, Any] = Field(default_factory=dict)  # the domain's own fields (reference, tests, ...)
    length: int = 0  # statement words + reference tokens: the padding penalty compares it to the kind's median
    statement_words: int = 0
    code_tokens: int = 0
    ast_hash: str = ""
    shingles: list[str] = Field(default_factory=list)
    created_round: int = 0
    heldout: bool = False
    meta: dict[str, Any] = Field(default_factory=dict)  # e.g. the simulation's latent difficulty


@dataclass
class Verdict:
    """The gates' answer: accepted (with the task) or rejected for `reason` (one of REASONS)."""

    ok: bool
    reason: str | None = None
    detail: str = ""
    task: PracticeTask | None = None
    seconds: float = 0.0

    @classmethod
    def reject(cls, reason: str, detail: str = "") -> Verdict:
        assert reason in REASONS, reason
        return cls(False, reason, detail)


@dataclass
class Attempt:
    """One solver attempt, whose `outcome` is one of OUTCOMES: passed (the verifier said so); failed (the check
    failed at its last try, or the solver gave up); truncated (the token or turn budget ended before the solver
    first called finish); error (infrastructure: the model unavailable, a budget pause, a crash), which is left out
    of every rate and attempted again."""

    passed: bool
    truncated: bool = False
    tokens: int = 0
    cost_usd: float = 0.0
    run_id: str = ""
    detail: str = ""
    error: bool = False

    @property
    def outcome(self) -> str:
        return "error" if self.error else "passed" if self.passed else "truncated" if self.truncated else "failed"


OUTCOMES = ("passed", "failed", "truncated", "error")


@dataclass
class ProposalRequest:
    """What the proposer is asked: a task of predicted success near `target`, with bracketing examples."""

    domain: str
    target: float
    count: int
    examples: list[dict] = field(default_factory=list)  # {"statement", "kind", "measured", "predicted", "meta"}
    difficulty: float | None = None  # the rating scale's requested task difficulty (for scripted proposers)
    round: int = 0
    grounding: str = ""  # for grounded domains (repo): the material the tasks must cite


class Proposer(Protocol):
    async def propose(self, request: ProposalRequest, prompt: str) -> list[str]:
        """Raw proposals (text) for `request`; `prompt` is the domain's prompt for a model proposer."""


class Solver(Protocol):
    async def attempts(self, domain: Domain, task: PracticeTask, k: int, *, learn: bool = True) -> list[Attempt]:
        """k independent attempts at `task` (learn=False for held-out measurement where the solver supports it)."""


def json_payload(text: str) -> Any:
    """The JSON in a proposer's reply: the whole text, a fenced block, or the outermost object or list."""
    text = text.strip()
    candidates = [text]
    candidates += re.findall(r"```(?:json)?\s*\n(.*?)```", text, flags=re.S)
    for open_, close in (("{", "}"), ("[", "]")):
        i, j = text.find(open_), text.rfind(close)
        if 0 <= i < j:
            candidates.append(text[i:j + 1])
    for c in candidates:
        try:
            return json.loads(c)
        except (json.JSONDecodeError, ValueError):
            continue
    raise ProposalError("the reply holds no JSON proposal")


def parse_payload(text: str, model: type[BaseModel], adapt=lambda item: item) -> list:
    """Proposals in a reply (one object, a list, or {"tasks": [...]}), each validated as `model` (after `adapt`);
    ProposalError naming the first problem."""
    data = json_payload(text)
    if isinstance(data, dict) and isinstance(data.get("tasks"), list):
        data = data["tasks"]
    out = []
    for item in data if isinstance(data, list) else [data]:
        try:
            out.append(model.model_validate(adapt(item)))
        except ValidationError as e:
            first = e.errors()[0]
            where = ".".join(str(x) for x in first["loc"]) or "the proposal"
            raise ProposalError(f"{where}: {first['msg']}") from None
    if not out:
        raise ProposalError("the reply holds an empty list of proposals")
    return out


class Domain(ABC):
    """A kind of verifiable task. Subclasses implement parse, _validate, solver_goal and verify."""

    name: str = ""
    allowed_modules: frozenset[str] = frozenset()
    sandbox: Any = None  # harness.sandbox.Sandbox the references, hidden tests and suites run in (None: unjailed)

    @abstractmethod
    def prompt(self, request: ProposalRequest) -> str:
        """The proposer's instructions for `request` (format, the examples and the target)."""

    @abstractmethod
    def parse(self, text: str) -> list[Any]:
        """The proposals in the proposer's reply (raise ProposalError when there are none)."""

    def validate(self, proposal: Any, archive: Archive, *, round: int = 0) -> Verdict:
        """Run the validity gates (timed); an accepted proposal comes back as a PracticeTask."""
        started = time.monotonic()
        verdict = self._validate(proposal, archive, round)
        verdict.seconds = time.monotonic() - started
        return verdict

    @abstractmethod
    def _validate(self, proposal: Any, archive: Archive, round: int) -> Verdict:
        """The gates themselves."""

    @abstractmethod
    def solver_goal(self, task: PracticeTask) -> str:
        """What the solver is asked to do (never the hidden tests)."""

    @abstractmethod
    def verify(self, task: PracticeTask, workdir: Path) -> tuple[bool, str]:
        """Whether the solution in `workdir` is right (the hidden tests decide), with a short detail."""

    def check_command(self, task: PracticeTask) -> str:
        """The solver's acceptance check (run in its worktree, outside its jail): opaque, it names the task by id
        only; `loopwright selfplay verify` finds the hidden material outside every worktree (real.py). -P: the
        worktree's files are not importable by loopwright's own verifier."""
        return f"{shlex.quote(sys.executable)} -P -m loopwright selfplay verify {task.id}"

    async def propose(self, request: ProposalRequest, proposer: Proposer) -> list[Any | ProposalError]:
        """Ask the proposer; each reply becomes its proposals or the ProposalError that says why not."""
        out: list[Any | ProposalError] = []
        for text in await proposer.propose(request, self.prompt(request)):
            try:
                out.extend(self.parse(text))
            except ProposalError as e:
                out.append(e)
        return out

    async def solve(self, task: PracticeTask, k: int, solver: Solver, *, learn: bool = True) -> list[Attempt]:
        return await solver.attempts(self, task, k, learn=learn)


class Archive:
    """Every accepted task of a domain (practice and held-out): the duplicate and padding gates look here."""

    def __init__(self, tasks: list[PracticeTask] | None = None):
        self.tasks: list[PracticeTask] = []
        self._by_hash: dict[str, PracticeTask] = {}
        self._sets: dict[str, frozenset[str]] = {}
        for t in tasks or []:
            self.add(t)

    def __len__(self) -> int:
        return len(self.tasks)

    def add(self, task: PracticeTask) -> None:
        self.tasks.append(task)
        if task.ast_hash:
            self._by_hash.setdefault(task.ast_hash, task)
        self._sets[task.id] = frozenset(task.shingles)

    def get(self, task_id: str) -> PracticeTask | None:
        return next((t for t in self.tasks if t.id == task_id), None)

    def same_hash(self, ast_hash: str) -> PracticeTask | None:
        return self._by_hash.get(ast_hash) if ast_hash else None

    def nearest(self, shingles: frozenset[str], n: int = 1) -> list[tuple[float, float, PracticeTask]]:
        """The n most similar tasks: (Jaccard similarity, containment of the archived task in the new one, task)."""
        scored = []
        for t in self.tasks:
            other = self._sets[t.id]
            if not other or not shingles:
                continue
            inter = len(shingles & other)
            if not inter:
                continue
            scored.append((inter / len(shingles | other), inter / len(other), t))
        scored.sort(key=lambda x: (-x[0], -x[1]))
        return scored[:n]

    def max_similarity(self, shingles: frozenset[str]) -> float:
        best = self.nearest(shingles, 1)
        return best[0][0] if best else 0.0


WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*|\d+|\S")


def words(text: str) -> list[str]:
    return WORD.findall(text.lower())


def shingles(tokens: list[str], n: int, prefix: str) -> set[str]:
    if len(tokens) < n:
        return {prefix + " ".join(tokens)} if tokens else set()
    return {prefix + " ".join(tokens[i:i + n]) for i in range(len(tokens) - n + 1)}


def task_id(*parts: str) -> str:
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:12]
