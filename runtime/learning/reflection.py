"""Reflection after every run: one model call returns lesson deltas; they are checked, then applied deterministically.

Memory is never rewritten whole (ACE's lesson: a rewritten memory collapses).
The reply is JSON — `{"operations": [...]}` with `add`, `helpful`, `harmful`,
`edit`, `merge`, `retire` and, after repeated success on similar tasks,
`draft_skill` — validated with pydantic. A reply that is not JSON, names an
unknown operation or lesson, retires more than `memory.max_retire_per_reflection`
lessons or drafts a skill it may not, is recorded (`reflected`, status
`rejected`, with the problems) and nothing changes. A valid reply is applied in
one transaction per lesson store, so two runs reflecting at once serialise.

Credit does not wait for the model: lessons shown to a run whose acceptance
check passed gain helpful credit, those shown to a run that failed gain harmful
credit (`Lessons.credit_run`, once per run). Runs without a verdict of the
check (kept for review, killed) give no credit, and neither does a self-play
practice attempt here: its task's k attempts are credited together, relative
to the task's measured success, when they are all measured
(`Lessons.credit_practice`, from selfplay/real.py).
"""

from __future__ import annotations

import datetime as dt
import json
import re
import shutil
import time
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from loopwright.harness.events import ModelCalled, Reflected
from loopwright.harness.messages import Message, ModelResponse, TextBlock, ToolResult
from loopwright.harness.models import ModelAdapter, ModelError
from loopwright.harness.retry import RetryPolicy, call_model
from loopwright.harness.script import REFLECTION_MARKER
from loopwright.harness.statuses import RunStatus, TaskStatus
from loopwright.memory.store import Run, Store, Task
from loopwright.runtime.config import Config

REFLECTION_SYSTEM = f"""{REFLECTION_MARKER} You maintain the lessons a team of coding agents learns from. You \
are shown one finished run: its task, its outcome (decided by the acceptance check, not by the agent), the check's \
output and a compact trajectory, plus the lessons it was shown and related lessons. Reply with JSON only:
{{"operations": [ ... ]}}
Operations (use few; an empty list is a fine answer):
  {{"op": "add", "text": "<one short actionable lesson>", "tags": ["<slug>"], "scope": "project"|"global"}}
  {{"op": "helpful", "id": "<ref>"}}   {{"op": "harmful", "id": "<ref>"}}
  {{"op": "edit", "id": "<ref>", "text": "<better wording>"}}
  {{"op": "merge", "ids": ["<ref>", "<ref>"], "text": "<the merged lesson>"}}
  {{"op": "retire", "id": "<ref>", "reason": "<why it is wrong or useless>"}}
A lesson is a reusable, specific instruction for future tasks in this project (what to do or avoid, and when), not \
a summary of this run. Never restate the task. Use "global" only for lessons true in any project."""

SKILL_INVITATION = """
This kind of task has now succeeded {count} times. If the runs followed a reusable procedure, you may also draft a \
skill (an Agent Skills SKILL.md) for it:
  {{"op": "draft_skill", "name": "<lower-case-hyphenated>", "description": "<what it does and when to use it, \
<= 300 chars>", "body": "<markdown instructions: the steps, commands and checks>"}}"""


class _Op(BaseModel):
    model_config = ConfigDict(extra="forbid")


class AddOp(_Op):
    op: Literal["add"]
    text: str = Field(min_length=1, max_length=2000)
    tags: list[str] = Field(default_factory=list, max_length=10)
    scope: Literal["project", "global"] = "project"


class CreditOp(_Op):
    op: Literal["helpful", "harmful"]
    id: str


class EditOp(_Op):
    op: Literal["edit"]
    id: str
    text: str = Field(min_length=1, max_length=2000)


class MergeOp(_Op):
    op: Literal["merge"]
    ids: list[str] = Field(min_length=2, max_length=10)
    text: str = Field(min_length=1, max_length=2000)


class RetireOp(_Op):
    op: Literal["retire"]
    id: str
    reason: str = Field(default="retired by reflection", max_length=500)


class DraftSkillOp(_Op):
    op: Literal["draft_skill"]
    name: str = Field(min_length=1, max_length=64)
    description: str = Field(min_length=1, max_length=1024)
    body: str = Field(min_length=1, max_length=40_000)


Operation = Annotated[AddOp | CreditOp | EditOp | MergeOp | RetireOp | DraftSkillOp, Field(discriminator="op")]


class Deltas(BaseModel):
    model_config = ConfigDict(extra="forbid")
    operations: list[Operation] = Field(max_length=30)


class Rejected(Exception):
    """The reply cannot be applied; `problems` say why (recorded, nothing changes)."""

    def __init__(self, problems: list[str]):
        super().__init__("; ".join(problems))
        self.problems = problems


def parse_reply(text: str) -> Deltas:
    """The deltas in a reply (a ```json fence around it is tolerated); Rejected when it is not valid."""
    body = text.strip()
    fenced = re.fullmatch(r"```(?:json)?\s*(.*?)\s*```", body, re.DOTALL)
    if fenced:
        body = fenced.group(1)
    try:
        data = json.loads(body)
    except json.JSONDecodeError as e:
        raise Rejected([f"the reply is not JSON ({e.msg} at line {e.lineno} column {e.colno})"]) from None
    try:
        return Deltas.model_validate(data)
    except ValidationError as e:
        problems = []
        for err in e.errors()[:5]:
            where = ".".join(str(x) for x in err["loc"])
            problems.append(f"{where}: {err['msg']}" if where else err["msg"])
        raise Rejected(problems) from None


# -- what reflection is shown -------------------------------------------------------------------------

_WORD = re.compile(r"[a-z0-9]{3,}")
_STOP = frozenset("the and for with that this from into when then than are was were has have not but you your "
                  "its can all any add use make fix run test tests file files code".split())


def _words(text: str) -> set[str]:
    return {w for w in _WORD.findall(text.lower()) if w not in _STOP}


def similar_successes(store: Store, task: Task, threshold: float = 0.4) -> list[Task]:
    """Earlier tasks that succeeded and whose goal shares most of its words with this one's (Jaccard)."""
    mine = _words(f"{task.title} {task.goal}")
    if not mine:
        return []
    found = []
    for other in store.tasks(statuses=(TaskStatus.SUCCEEDED,)):
        if other.id == task.id:
            continue
        theirs = _words(f"{other.title} {other.goal}")
        if theirs and len(mine & theirs) / len(mine | theirs) >= threshold:
            found.append(other)
    return found


def trajectory(messages: list[Message], limit_chars: int = 6000) -> str:
    """A compact trajectory: the agent's words and tool calls, tool results clipped; head and tail kept."""
    lines = []
    for m in messages[1:]:  # the first message is the task itself
        for b in m.content:
            if isinstance(b, TextBlock):
                lines.append(f"[{m.role}] {b.text[:500]}")
            elif isinstance(b, ToolResult):
                lines.append(f"  -> {'error: ' if b.is_error else ''}{b.content[:200]}")
            else:
                args = json.dumps(b.arguments)[:200]
                lines.append(f"[call] {b.name} {args}")
    text = "\n".join(lines)
    if len(text) > limit_chars:
        half = limit_chars // 2
        text = text[:half] + f"\n[… {len(text) - limit_chars} characters left out …]\n" + text[-half:]
    return text or "(no steps)"


def verdict(store: Store, run: Run) -> bool | None:
    """True when the run's acceptance check passed and the run succeeded, False when it failed; else None."""
    if run.status == RunStatus.SUCCEEDED:
        checks = store.events(run.id, types=("check_ran",))
        return True if checks and checks[-1][2].passed else None
    if run.status in (RunStatus.FAILED, RunStatus.BUDGET_EXCEEDED):
        return False
    return None


def prompt(store: Store, run: Run, task: Task, shown: list, related: list, successes: list[Task]) -> str:
    checks = store.events(run.id, types=("check_ran",))
    check = checks[-1][2] if checks else None
    passed = verdict(store, run)
    outcome = {True: "the acceptance check PASSED", False: "the run FAILED", None: "no verdict of a check"}[passed]
    parts = [f"## Task {task.id}: {task.title}", task.goal, "",
             f"## Outcome: {run.status} — {outcome}" + (f" ({run.reason})" if run.reason else "")]
    if check is not None:
        parts += [f"Check `{check.command}` exit {check.exit_code}. Its output (tail):", check.output_tail[-2000:]]
    parts += ["", "## Trajectory", trajectory(store.conversation(run.id))]
    for title, lessons in (("Lessons this run was shown", shown), ("Related lessons", related)):
        parts += ["", f"## {title}"]
        parts += [f"- [{le.ref}] (helpful {le.helpful}, harmful {le.harmful}) {le.text}"
                  for le in lessons] or ["(none)"]
    if successes:
        parts += ["", "## Similar tasks that succeeded before"] + [f"- task {t.id}: {t.title}" for t in successes]
    return "\n".join(parts)


# -- applying ------------------------------------------------------------------------------------------


def check_deltas(deltas: Deltas, lessons, *, max_retire: int, may_draft: bool) -> list[str]:
    """Everything wrong with the deltas as a whole; empty when they may be applied."""
    from loopwright.memory.lesson_model import LessonError
    from loopwright.skills.format import name_problems

    problems = []
    refs = []
    for op in deltas.operations:
        refs += op.ids if isinstance(op, MergeOp) else [op.id] if isinstance(op, (CreditOp, EditOp, RetireOp)) else []
    for ref in dict.fromkeys(refs):
        try:
            lesson = lessons.get(ref)
        except LessonError:
            problems.append(f"lesson {ref!r} does not exist")
            continue
        if lesson.status != "active":
            problems.append(f"lesson {ref!r} is {lesson.status}, not active")
    retiring = {op.id for op in deltas.operations if isinstance(op, RetireOp)}
    retiring |= {r for op in deltas.operations if isinstance(op, MergeOp) for r in op.ids[1:]}
    if len(retiring) > max_retire:
        problems.append(f"it retires or merges away {len(retiring)} lessons; at most {max_retire} per reflection")
    for op in deltas.operations:
        if isinstance(op, AddOp) and op.scope == "global" and lessons.global_book is None:
            problems.append("a global lesson, but the global store is not available"
                            + (f" ({lessons.global_problem})" if getattr(lessons, "global_problem", "") else ""))
        if isinstance(op, DraftSkillOp):
            if not may_draft:
                problems.append("draft_skill is offered only after similar tasks succeeded at least twice")
            problems += [f"draft_skill: {p}" for p in name_problems(op.name)]
            if re.search(r"[<>]", op.name + op.description):
                problems.append("draft_skill: angle brackets in the name or description")
    return problems


def apply_deltas(deltas: Deltas, lessons, *, run: Run, task: Task, outcome: str, by: str) -> list[str]:
    """Apply checked deltas, one transaction per lesson store; returns one line per change."""
    done: list[str] = []
    with lessons.project.transaction():
        for op in deltas.operations:
            if isinstance(op, AddOp):
                book = lessons.project if op.scope == "project" else lessons.global_book
                if op.scope == "global":
                    with book.transaction():
                        lesson, merged = book.add(op.text, op.tags, run_id=run.id, task_id=task.id,
                                                  outcome=outcome, by=by)
                else:
                    lesson, merged = book.add(op.text, op.tags, run_id=run.id, task_id=task.id, outcome=outcome,
                                              by=by)
                done.append(f"{'merged into' if merged else 'added'} {lesson.ref}")
            elif isinstance(op, CreditOp):
                book, ident = lessons.resolve(op.id)
                book.credit([ident], op.op == "helpful", by=by)
                done.append(f"{op.op} {op.id}")
            elif isinstance(op, EditOp):
                book, ident = lessons.resolve(op.id)
                book.edit(ident, text=op.text, by=by)
                done.append(f"edited {op.id}")
            elif isinstance(op, MergeOp):
                book, _ = lessons.resolve(op.ids[0])
                idents = [lessons.resolve(r)[1] for r in op.ids if lessons.resolve(r)[0] is book]
                merged = book.merge(idents, op.text, by=by)
                done.append(f"merged {', '.join(op.ids)} into {merged.ref}")
            elif isinstance(op, RetireOp):
                book, ident = lessons.resolve(op.id)
                book.retire(ident, op.reason, by=by)
                done.append(f"retired {op.id}")
    return done


def draft_skill(op: DraftSkillOp, *, project_root: Path, store: Store, task: Task, run: Run,
                successes: list[Task], auto_promote: bool) -> str:
    """Write the drafted SKILL.md into the `learned` pack, valid by the specification, disabled unless promoted."""
    from loopwright.skills.catalog import learned_root
    from loopwright.skills.format import is_valid, validate_skill

    folder = learned_root(project_root) / "learned" / op.name
    if folder.exists():
        return f"skill {op.name} exists already; the draft was not written"
    tasks = ",".join(str(t.id) for t in [*successes, task])
    front = {"name": op.name, "description": " ".join(op.description.split()),
             "metadata": {"origin": "loopwright reflection", "learned-from-tasks": tasks,
                          "learned-from-run": run.id,
                          "learned-at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds")}}
    folder.mkdir(parents=True)
    front_matter = yaml.safe_dump(front, sort_keys=False, allow_unicode=True, width=1000)
    (folder / "SKILL.md").write_text(f"---\n{front_matter}---\n\n{op.body.strip()}\n")
    problems = [d for d in validate_skill(folder) if d.severity == "error"]
    if not is_valid(problems):
        shutil.rmtree(folder)
        return f"draft skill {op.name} is invalid ({problems[0].message}); not kept"
    if not auto_promote:
        store.set_skill_enabled(op.name, False)
        return f"drafted skill learned:{op.name} (disabled until `loopwright skills promote {op.name}`)"
    return f"drafted skill learned:{op.name} (promoted: memory.auto_promote is on)"


async def reflect(*, store: Store, lessons, run: Run, task: Task, config: Config, adapter: ModelAdapter | None,
                  project_root: Path, policy: RetryPolicy, budget_day: str | None,
                  why_not: str = "") -> Reflected:
    """Credit the lessons the run was shown, then (with an adapter) ask for deltas and apply them; always recorded."""
    passed = verdict(store, run)
    practice = bool(task.options.get("selfplay"))  # credited with its task's other attempts (see the docstring)
    credited = lessons.credit_run(run.id, passed, by=f"run {run.id}") if passed is not None and not practice else []
    if adapter is None:
        event = Reflected(status="skipped", reason=why_not, credited=credited)
        store.append(run.id, event)
        return event
    shown = lessons.lessons_shown(run.id)
    related = [le for le in lessons.search(f"{task.title} {task.goal}", limit=10) if le.ref not in
               {s.ref for s in shown}]
    successes = similar_successes(store, task) if passed and config.memory.learned_skills else []
    may_draft = len(successes) >= 1  # this success and at least one before
    system = REFLECTION_SYSTEM + (SKILL_INVITATION.format(count=len(successes) + 1) if may_draft else "")
    t0 = time.perf_counter()
    try:
        response: ModelResponse = await call_model(adapter, policy, system=system, tools=[], max_tokens=2000,
                                                   messages=[Message.user(prompt(store, run, task, shown, related,
                                                                                 successes))])
    except ModelError as e:
        event = Reflected(status="failed", reason=f"the reflection call failed: {e}", credited=credited)
        store.append(run.id, event)
        return event
    from loopwright.harness.models import cache_saved_usd, cost_usd

    info = config.model_info()
    store.record_model_call(run.id, ModelCalled(
        model=response.model or adapter.model, usage=response.usage, purpose="reflection",
        cost_usd=cost_usd(response.usage, info), saved_usd=cache_saved_usd(response.usage, info),
        stop_reason=response.stop_reason, duration_ms=(time.perf_counter() - t0) * 1000), None, budget_day)
    reply = response.message.text
    try:
        deltas = parse_reply(reply)
        problems = check_deltas(deltas, lessons, max_retire=config.memory.max_retire_per_reflection,
                                may_draft=may_draft)
        if problems:
            raise Rejected(problems)
    except Rejected as e:
        event = Reflected(status="rejected", reason="the reply was ignored; nothing changed", problems=e.problems,
                          reply=reply[:4000], credited=credited)
        store.append(run.id, event)
        return event
    outcome = run.status
    changes = apply_deltas(deltas, lessons, run=run, task=task, outcome=outcome, by=f"run {run.id}")
    for op in deltas.operations:
        if isinstance(op, DraftSkillOp):
            changes.append(draft_skill(op, project_root=project_root, store=store, task=task, run=run,
                                       successes=successes, auto_promote=config.memory.auto_promote))
    retired = lessons.project.enforce_cap(config.memory.max_lessons, by=f"run {run.id}")
    if retired:
        changes.append(f"over the cap of {config.memory.max_lessons}: retired {', '.join(map(str, retired))}")
    event = Reflected(status="applied", changes=changes, credited=credited, reply=reply[:4000])
    store.append(run.id, event)
    return event

