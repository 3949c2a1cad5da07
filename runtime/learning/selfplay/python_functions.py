"""The `python-functions` domain: a statement, a function signature, a reference solution and hidden tests.

The proposer replies with JSON (one object, a list, or `{"tasks": [...]}`):

    {"statement": "Return the run-length encoding of s as a list of [char, count] pairs.",
     "function": "rle", "signature": "def rle(s: str) -> list",   # signature optional (taken from the reference)
     "reference": "def rle(s):\\n    ...", "tests": "def test_basic():\\n    assert rle('aab') == [['a', 2], ['b', 1]]",
     "kind": "strings", "predicted_success": 0.5}

Hidden tests are Python: `test*` functions (and module-level asserts) that call
the function by its name (it is bound in their namespace, and `from solution
import <name>` works). The solver writes `solution.py` in a fresh worktree;
the hidden tests decide, run from a folder outside it.

Gates, in order (the first that fails names the reason): it parses and the
reference defines the function (`unparseable`); size caps (`too_long`); no
banned API in tests or reference (`banned_api`); at least one test
(`no_tests`); not the same or nearly the same as an archived task, padded when
it is a longer telling (`duplicate`/`padded`, static); the reference passes in
the sandbox within the time limit (`timeout` when the tests hang,
`reference_fails`), and gives the same results and outputs under every
condition of sandbox.CONDITIONS — three hash seeds, a clock 40 days later,
another environment — each in its own process (`nondeterministic`); the
verifier runs a solution under the same conditions; no trivial answer
built from the signature passes (empty body, `return None`, each parameter
returned unchanged, constants including every literal the tests compare the
function's result to, `raise ValueError`) (`trivial`); and no archived task
behaves the same on both tasks' test inputs (`padded` when longer, else
`duplicate`): whatever the signatures, each reference is called on every
input with its own defaults filled in, outputs are compared with tuples read
as lists, inputs one of the two cannot take (TypeError) are left out, and at
least 3 inputs that do not raise and half of the new task's own inputs must
be compared.
"""

from __future__ import annotations

import ast
import copy
import re
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from loopwright.harness.sandbox import Sandbox
from loopwright.runtime.learning.selfplay.domain import (
    Archive,
    Domain,
    PracticeTask,
    ProposalRequest,
    Verdict,
    parse_payload,
    task_id,
)
from loopwright.runtime.learning.selfplay.gates import (
    GateConfig,
    banned_apis,
    features,
    longer,
    size_problem,
    static_duplicate,
)
from loopwright.runtime.learning.selfplay.sandbox import CONDITIONS, Conditions, run_everywhere

NAME = "python-functions"
IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
CONSTANTS = ("0", "1", "-1", "True", "False", "''", "[]", "{}", "()", "0.0")


class FunctionProposal(BaseModel):
    """One proposed task of the python-functions domain."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)
    statement: str = Field(min_length=1)
    function: str
    signature: str | None = None
    reference: str = Field(min_length=1)
    tests: str = Field(min_length=1)
    kind: str = Field(default="general", alias="kind")
    predicted_success: float | None = None
    meta: dict[str, Any] = Field(default_factory=dict)

    @field_validator("function")
    @classmethod
    def _ident(cls, v: str) -> str:
        if not IDENT.match(v):
            raise ValueError(f"{v!r} is not a Python function name")
        return v


def parse_proposals(text: str) -> list[FunctionProposal]:
    """Proposals in a reply; ProposalError when it has none that validate as FunctionProposal."""
    def topic_as_kind(item):
        return {**item, "kind": item["topic"]} if isinstance(item, dict) and "kind" not in item and "topic" in item \
            else item
    return parse_payload(text, FunctionProposal, topic_as_kind)


def find_function(tree: ast.Module, name: str) -> ast.FunctionDef | None:
    return next((n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == name), None)


def parameters(fn: ast.FunctionDef) -> list[str]:
    a = fn.args
    return [p.arg for p in a.posonlyargs + a.args + a.kwonlyargs]


def _calls(tree: ast.AST, name: str):
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and (
                (isinstance(node.func, ast.Name) and node.func.id == name) or
                (isinstance(node.func, ast.Attribute) and node.func.attr == name)):
            yield node


def call_inputs(tests: str, name: str, cap: int = 50) -> list[str]:
    """Literal argument lists of the calls to `name` in the tests, as sources `((args...), {kwargs})`."""
    tree = ast.parse(tests)
    found: list[str] = []
    for call in _calls(tree, name):
        if any(isinstance(a, ast.Starred) for a in call.args) or any(k.arg is None for k in call.keywords):
            continue
        try:
            for part in [*call.args, *(k.value for k in call.keywords)]:
                ast.literal_eval(part)
        except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
            continue
        src = ast.unparse(ast.Tuple(elts=[ast.Tuple(elts=list(call.args), ctx=ast.Load()),
                                          ast.Dict(keys=[ast.Constant(k.arg) for k in call.keywords],
                                                   values=[k.value for k in call.keywords])], ctx=ast.Load()))
        if src not in found:
            found.append(src)
        if len(found) >= cap:
            break
    return found


def compared_constants(tests: str, name: str, cap: int) -> list[str]:
    """Literals the tests compare the function's result to (`f(x) == 3`, `assertEqual(f(x), 3)`): constant answers."""
    tree = ast.parse(tests)
    found: list[str] = []

    def is_call(node: ast.AST) -> bool:
        return isinstance(node, ast.Call) and ((isinstance(node.func, ast.Name) and node.func.id == name) or
                                               (isinstance(node.func, ast.Attribute) and node.func.attr == name))

    def add(node: ast.AST) -> None:
        try:
            ast.literal_eval(node)
        except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
            return
        src = ast.unparse(node)
        if src not in found and len(src) <= 2000:
            found.append(src)

    for node in ast.walk(tree):
        if isinstance(node, ast.Compare) and len(node.ops) == 1 and isinstance(node.ops[0], (ast.Eq, ast.Is)):
            left, right = node.left, node.comparators[0]
            if is_call(left):
                add(right)
            elif is_call(right):
                add(left)
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in (
                "assertEqual", "assertIs", "assertAlmostEqual") and len(node.args) >= 2:
            a, b = node.args[:2]
            if is_call(a):
                add(b)
            elif is_call(b):
                add(a)
    return found[:cap]


def trivial_answers(reference: str, name: str, tests: str, max_constants: int = 10) -> list[tuple[str, str]]:
    """(label, code) of the trivial answers to `name`'s signature: none of them may pass the hidden tests."""
    fn = find_function(ast.parse(reference), name)
    assert fn is not None
    bodies: list[tuple[str, str]] = [("empty body", "pass"), ("return None", "return None")]
    bodies += [(f"return {p} unchanged", f"return {p}") for p in parameters(fn)]
    if fn.args.vararg:
        bodies.append((f"return {fn.args.vararg.arg} unchanged", f"return {fn.args.vararg.arg}"))
    constants = list(CONSTANTS) + [c for c in compared_constants(tests, name, max_constants) if c not in CONSTANTS]
    bodies += [(f"return constant {c[:40]}", f"return {c}") for c in constants]
    bodies.append(("raise ValueError", "raise ValueError('trivial')"))
    out = []
    for label, body in bodies:
        stub = copy.deepcopy(fn)
        stub.body, stub.decorator_list, stub.returns = ast.parse(body).body, [], None
        out.append((label, ast.unparse(ast.fix_missing_locations(ast.Module(body=[stub], type_ignores=[])))))
    return out


def count_tests(tests: str) -> int:
    tree = ast.parse(tests)
    defs = sum(1 for n in tree.body if isinstance(n, ast.FunctionDef) and n.name.startswith("test"))
    asserts = sum(1 for n in tree.body if isinstance(n, ast.Assert))
    return defs + asserts


class PythonFunctions(Domain):
    """Write a function from its statement and signature; hidden tests decide."""

    name = NAME

    def __init__(self, gates: GateConfig | None = None):
        self.gates = gates or GateConfig()
        self.allowed_modules = frozenset(self.gates.allowed_modules)

    # -- proposing ----------------------------------------------------------------------------

    def prompt(self, request: ProposalRequest) -> str:
        lines = [f"Write {request.count} new self-contained Python programming task(s) for another agent (the "
                 f"solver). Each must be solved by the solver with probability about {request.target:.0%}: not "
                 f"trivial, not impossible, and hard because of what it asks, not because it is long.",
                 "Reply with JSON only: {\"tasks\": [{\"statement\": ..., \"function\": ..., \"signature\": ..., "
                 "\"reference\": ..., \"tests\": ..., \"kind\": ..., \"predicted_success\": ...}]}",
                 "- statement: what the function must do, precisely (inputs, output, edge cases), short.",
                 "- reference: a correct implementation (standard library only; no randomness, time, files, "
                 "network, os or sys).",
                 "- tests: Python with test_* functions using assert that call the function by name with literal "
                 "arguments; they must fail for trivial answers (None, a constant, an input returned unchanged) "
                 "and be deterministic.",
                 "- kind: a one-word topic (strings, lists, math, parsing, ...)."]
        if request.examples:
            lines.append("\nEarlier tasks with the solver's measured success rate (aim between them):")
            for ex in request.examples:
                lines.append(f"- [{ex.get('kind', 'general')}] measured {ex.get('measured', 0):.0%} "
                             f"(predicted {ex.get('predicted', 0):.0%}): {ex['statement'][:300]}")
        lines.append("Do not repeat or pad an earlier task: a longer wording of the same task is rejected.")
        return "\n".join(lines)

    def parse(self, text: str) -> list[FunctionProposal]:
        return parse_proposals(text)

    # -- the gates ----------------------------------------------------------------------------

    def _validate(self, p: FunctionProposal, archive: Archive, round: int) -> Verdict:
        cfg = self.gates
        try:
            ref_tree = ast.parse(p.reference)
            ast.parse(p.tests)
        except SyntaxError as e:
            return Verdict.reject("unparseable", f"syntax error: {e.msg} (line {e.lineno})")
        fn = find_function(ref_tree, p.function)
        if fn is None:
            return Verdict.reject("unparseable", f"the reference defines no top-level function {p.function!r}")
        if p.signature:
            try:
                sig = ast.parse(p.signature.strip().rstrip(":") + ":\n    pass").body[0]
            except SyntaxError:
                return Verdict.reject("unparseable", f"the signature {p.signature!r} does not parse")
            if not isinstance(sig, ast.FunctionDef) or sig.name != p.function or \
                    parameters(sig) != parameters(fn):
                return Verdict.reject("unparseable", "the signature and the reference's function disagree")
        if problem := size_problem(cfg, p.statement, p.tests, p.reference):
            return Verdict.reject("too_long", problem)
        banned = banned_apis(p.tests, self.allowed_modules) + banned_apis(p.reference, self.allowed_modules)
        if banned:
            return Verdict.reject("banned_api", ", ".join(sorted(set(banned))))
        if not count_tests(p.tests):
            return Verdict.reject("no_tests", "the tests define no test* function and no assert")
        signature = p.signature or f"def {p.function}({ast.unparse(fn.args)})"
        f = features(p.statement, p.reference)
        task = PracticeTask(id=task_id(NAME, f["ast_hash"], p.statement), domain=NAME, kind=p.kind or "general",
                            statement=p.statement, created_round=round,
                            payload={"function": p.function, "signature": signature, "reference": p.reference,
                                     "tests": p.tests, "inputs": call_inputs(p.tests, p.function)},
                            meta={**p.meta, "predicted_success": p.predicted_success}, **f)
        if dup := static_duplicate(task, archive, cfg):
            return dup
        return self._sandboxed(task, archive)

    def _sandboxed(self, task: PracticeTask, archive: Archive) -> Verdict:
        cfg, pl = self.gates, task.payload
        reference = {"label": "reference", "code": pl["reference"], "name": pl["function"], "tests": pl["tests"],
                     "inputs": pl["inputs"]}
        candidates = [t for t in archive.tasks if t.domain == NAME]
        candidates = sorted(candidates, key=lambda t: -len(set(t.shingles) & set(task.shingles)))
        candidates = candidates[:cfg.behaviour_candidates]
        union = list(dict.fromkeys(pl["inputs"] + [i for t in candidates for i in t.payload.get("inputs", [])]))
        runs = [{"label": "behaviour", "code": pl["reference"], "name": pl["function"], "inputs": union}]
        runs += [{"label": f"trivial:{label}", "code": code, "name": pl["function"], "tests": pl["tests"],
                  "limit": cfg.trivial_limit}
                 for label, code in trivial_answers(pl["reference"], pl["function"], pl["tests"],
                                                    cfg.max_trivial_constants)]
        runs += [{"label": f"archive:{t.id}", "code": t.payload["reference"], "name": t.payload["function"],
                  "inputs": union, "limit": cfg.trivial_limit} for t in candidates]
        # the reference's hidden tests under every condition the verifier uses (sandbox.CONDITIONS); the other
        # runs (behaviour, trivial answers, archived tasks) go with the first
        everywhere = run_everywhere([reference], first=runs, limit=cfg.time_limit, sandbox=self.sandbox)
        first_conditions, first = everywhere[0]
        ref = first.by_label().get("reference")
        for conditions, result in everywhere:
            got = result.by_label().get("reference")
            if result.timed_out or (got and got.get("timeout")):
                return Verdict.reject("timeout", f"the hidden tests did not finish within {cfg.time_limit:.0f}s "
                                                 f"({conditions.describe()})")
            if result.forbidden:
                return Verdict.reject("banned_api", f"caught running ({conditions.describe()}): {result.forbidden}")
            if got is None:
                return Verdict.reject("reference_fails", f"the sandbox crashed ({conditions.describe()}): "
                                                         f"{result.crashed[-200:]}")
            if ref is not None and (got.get("results"), got.get("outputs")) != (ref.get("results"),
                                                                               ref.get("outputs")):
                return Verdict.reject("nondeterministic", _difference(ref, got, first_conditions, conditions))
        assert ref is not None
        if not ref.get("passed"):
            return Verdict.reject("reference_fails", ref.get("error") or "the reference fails its own tests")
        got = first.by_label()
        for run in first.runs:
            if run["label"].startswith("trivial:") and run.get("passed"):
                return Verdict.reject("trivial", f"the hidden tests pass for a trivial answer ({run['label'][8:]})")
        ours = got.get("behaviour", {}).get("outputs") or []
        for t in candidates:
            theirs = got.get(f"archive:{t.id}", {}).get("outputs")
            if theirs and same_behaviour(ours, theirs, len(pl["inputs"]), cfg.min_behaviour_inputs):
                if longer(task, t, cfg.padded_ratio):
                    return Verdict.reject("padded", f"behaves as task {t.id} on every test input and is longer")
                return Verdict.reject("duplicate", f"behaves as task {t.id} on every test input")
        return Verdict(True, task=task)

    # -- solving and verifying ----------------------------------------------------------------

    def solver_goal(self, task: PracticeTask) -> str:
        pl = task.payload
        return (f"{task.statement}\n\nImplement it in Python as `{pl['signature']}` in the file `solution.py` at the "
                f"root of this repository (create it; standard library only). Hidden tests import `{pl['function']}` "
                f"from `solution` and decide whether it is right; they are not in the repository.")

    def verify(self, task: PracticeTask, workdir: Path) -> tuple[bool, str]:
        return verify_solution(task, workdir, self.gates.time_limit, sandbox=self.sandbox)



def as_lists(output: str) -> str:
    """An output repr with its tuples read as lists (unchanged when it is not a literal)."""
    def lists(x: Any) -> Any:
        if isinstance(x, (list, tuple)):
            return [lists(v) for v in x]
        if isinstance(x, dict):
            return {k: lists(v) for k, v in x.items()}
        return x
    try:
        return repr(lists(ast.literal_eval(output)))
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return output


def same_behaviour(ours: list[str], theirs: list[str], own: int, at_least: int) -> bool:
    """Whether two references' outputs on the same inputs (ours first: `own` of them from our tests) agree modulo
    list/tuple on every input both can take (see the module docstring)."""
    pairs = [(i, as_lists(a), as_lists(b)) for i, (a, b) in enumerate(zip(ours, theirs))
             if "raise:TypeError" not in (a, b)]
    return (all(a == b for _, a, b in pairs)
            and sum(1 for _, a, _ in pairs if not a.startswith("raise:")) >= at_least
            and 2 * sum(1 for i, _, _ in pairs if i < own) >= own)


def _difference(a: dict, b: dict, first: Conditions, other: Conditions) -> str:
    between = f"between {first.describe()} and {other.describe()}"
    if a.get("results") != b.get("results"):
        return f"the hidden tests' results differ {between}"
    pairs = [(x, y) for x, y in zip(a.get("outputs") or [], b.get("outputs") or []) if x != y]
    x, y = pairs[0] if pairs else ("?", "?")
    return f"outputs differ {between}: {x[:60]} vs {y[:60]}"


def verify_solution(task: PracticeTask, workdir: Path, limit: float = 5.0, *,
                    sandbox: Sandbox | None = None) -> tuple[bool, str]:
    """Run the hidden tests against `workdir/solution.py` under every condition the gates ran the reference under,
    in the sandbox: (passed under all of them, a detail without the tests)."""
    path = Path(workdir) / "solution.py"
    if not path.is_file():
        return False, "no solution.py"
    pl = task.payload
    solution = {"label": "solution", "code": path.read_text(errors="replace"), "name": pl["function"],
                "tests": pl["tests"]}
    for conditions, result in run_everywhere([solution], limit=limit, wall=limit + 5, sandbox=sandbox):
        run = result.by_label().get("solution")
        where = "" if conditions == CONDITIONS[0] else f", under {conditions.describe()}"
        if result.timed_out or (run and run.get("timeout")):
            return False, f"the hidden tests timed out after {limit:.0f}s{where}"
        if result.forbidden:
            return False, f"not counted: {result.forbidden}{where}"
        if run is None:
            return False, f"the sandbox crashed{where}"
        results = {k: v for k, v in (run.get("results") or {}).items() if k != "<module>"}
        passed = sum(1 for v in results.values() if v)
        if not run.get("passed"):
            error = (run.get("error") or "").split(":")
            kind = error[1].strip() if len(error) > 2 else error[0]
            return False, f"hidden tests: {passed} of {len(results)} passed ({kind or 'failed'}){where}"
    return True, f"hidden tests: {passed} of {len(results)} passed"
