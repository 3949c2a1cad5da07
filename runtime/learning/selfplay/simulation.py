"""A simulated solver population and scripted proposers for self-play tests and the benchmark (never real use).

Population: a latent skill per topic (N(level, 1), the level U(−1.5, 1.5) per
seed: how strong the solver is is not known in advance), a logistic success
model P(pass) = σ(skill_topic − δ) for a task of latent difficulty δ, and an
attempt truncated (it hit the token budget) with probability
σ((L − 250)/25) for a task of length L (statement words + code tokens; normal
tasks are 50-130 long). Kinds:
- `static`: skills never change;
- `learning`: every practised attempt raises the topic's skill by
  lr·4·p(1−p) (lr 0.004: most is learned at the edge of ability);
- `drifting`: learning, plus a random walk of every skill (σ 0.2 per 64
  attempts, about one round).
Held-out measurement (learn=False) neither learns nor drifts.

The simulated domain (`SimDomain`) turns proposals into tasks through the
real static gates (size cap, normalised-AST hash, shingle similarity, padded
containment: gates.py) on generated Python code and statements, so padded and
duplicate proposals are caught (or not) as they would be. The sandboxed gates
(reference fails, nondeterministic, trivial) are simulated by flags the
proposer sets: they are tested on the real python-functions domain.

Proposers (`SimProposer`, scripted: no model):
- `blind` (the default of `--simulate` and the bench's `controlled` method):
  decides from what a model is shown and nothing else — the examples' kind,
  statement and rates (`predicted` where shown, else `measured`), never a
  difficulty number (`meta` and `request.difficulty` are not read). It
  imitates one example it is shown and moves away from it by what the rates
  say: δ = δ_text + g·(logit(rate_ex) − logit(requested)) + o + ε, where
  δ_text is the latent difficulty of the example's text (the simulator's
  truth about the text imitated, looked up by statement in what it wrote: a
  model rewriting a task inherits its content, not a number), g ~ U(0.5,
  1.5) and o ~ N(0, 0.5) per seed are a model's miscalibrated sense of "a bit
  harder" and its bias, ε ~ N(0, 0.6); with nothing it wrote shown, a guess
  δ ~ N(0, 1.5);
- `omniscient` (a named baseline, the old `controlled`): picks the topic of
  one of the examples and writes a task of that topic with δ = mean over the
  topic's examples of δ_ex + logit(predicted_ex) − logit(requested), + noise
  (σ 0.4): it reads the examples' true difficulty δ_ex from their `meta`,
  which no model can;
- `fixed`: δ = 0 (fixed difficulty), a random topic;
- `random`: δ ~ U(−3, 3), a random topic;
- `reference`: AZR-style, δ = δ_ex + noise of a random example (shown without
  rates), the prior N(0, 1.5) without examples.
Each proposal is, at the given rates, a padded variant (longer statement, or
dead code, of one of its own earlier tasks), a duplicate (renamed variables,
same or reworded statement), nonsense (the reference fails), trivial,
nondeterministic, or unparseable text; the rest are valid.
"""

from __future__ import annotations

import json
import math
import random
from pathlib import Path
from typing import Any

from loopwright.runtime.learning.selfplay.domain import (
    Archive,
    Attempt,
    Domain,
    PracticeTask,
    ProposalError,
    ProposalRequest,
    Verdict,
    task_id,
)
from loopwright.runtime.learning.selfplay.gates import GateConfig, features, size_problem, static_duplicate
from loopwright.runtime.learning.selfplay.ratings import logit, sigmoid

SIMULATION_NOTE = "SIMULATION: a simulated solver population and a scripted proposer — not a model"
TOPICS = ("strings", "lists", "math", "parsing", "graphs", "dates")
WORDS = {
    "strings": "character substring prefix suffix vowel palindrome case whitespace token split join reverse",
    "lists": "element index slice window pair sorted merge unique rotate chunk flatten neighbour",
    "math": "prime divisor digit modulo power factorial gcd sequence sum product parity square",
    "parsing": "expression bracket number operator field separator quote escape header record line",
    "graphs": "node edge path cycle neighbour degree component distance tree root leaf weight",
    "dates": "day month year weekday interval calendar leap week offset range period duration",
}
COMMON = ("return the given input list value count of each first last all every when if not and or with "
          "without from to in for as a an the").split()
FILLER = ("Please read this statement carefully and consider every detail of the input before you begin, since "
          "the precise wording of each requirement matters and nothing here is optional or approximate.")
PROPOSERS = ("blind", "omniscient", "fixed", "random", "reference")
BAD_KINDS = ("padded", "duplicate", "nonsense", "trivial", "nondeterministic", "unparseable")
DEFAULT_BAD = {"padded": 0.08, "duplicate": 0.08, "nonsense": 0.04, "trivial": 0.03, "nondeterministic": 0.02,
               "unparseable": 0.02}


def sim_length(statement: str, code: str) -> int:
    return features(statement, code)["length"]


class Population:
    """Latent skills per topic; `attempt` draws one attempt (and learns/drifts as the kind says)."""

    def __init__(self, kind: str = "static", seed: int = 0, *, topics: tuple[str, ...] = TOPICS, lr: float = 0.004,
                 drift: float = 0.2, always_truncate: bool = False):
        assert kind in ("static", "learning", "drifting"), kind
        self.kind, self.lr, self.drift, self.always_truncate = kind, lr, drift, always_truncate
        self.rng = random.Random(f"population:{kind}:{seed}")
        self.level = self.rng.uniform(-1.5, 1.5)  # the solver's level is not known in advance
        self.skill = {t: self.level + self.rng.gauss(0.0, 1.0) for t in topics}
        self.attempts = 0

    def p_success(self, topic: str, delta: float) -> float:
        return sigmoid(self.skill.get(topic, 0.0) - delta)

    def p_truncated(self, length: int) -> float:
        return 1.0 if self.always_truncate else sigmoid((length - 250) / 25)

    def attempt(self, topic: str, delta: float, length: int, *, learn: bool = True) -> Attempt:
        tokens = 2000 + 40 * length
        if self.rng.random() < self.p_truncated(length):
            return Attempt(passed=False, truncated=True, tokens=tokens * 3, detail="token budget")
        p = self.p_success(topic, delta)
        passed = self.rng.random() < p
        if learn:
            self.attempts += 1
            if self.kind in ("learning", "drifting"):
                self.skill[topic] = self.skill.get(topic, 0.0) + self.lr * 4 * p * (1 - p)
            if self.kind == "drifting":
                step = self.drift / math.sqrt(64)
                for t in self.skill:
                    self.skill[t] += self.rng.gauss(0.0, step)
        return Attempt(passed=passed, tokens=tokens)


class SimSolver:
    """The population as a `Solver`: k attempts from the task's latent topic, difficulty and length."""

    def __init__(self, population: Population):
        self.population = population

    async def attempts(self, domain: Domain, task: PracticeTask, k: int, *, learn: bool = True) -> list[Attempt]:
        topic, delta = task.meta.get("topic", task.kind), float(task.meta.get("delta", 0.0))
        return [self.population.attempt(topic, delta, task.length, learn=learn) for _ in range(k)]


class SimDomain(Domain):
    """Generated tasks through the real static gates; the sandboxed gates by the proposer's flags."""

    name = "simulated-functions"

    def __init__(self, gates: GateConfig | None = None):
        self.gates = gates or GateConfig()

    def prompt(self, request: ProposalRequest) -> str:
        return f"[simulation] {request.count} task(s) at predicted success {request.target:.2f}"

    def parse(self, text: str) -> list[dict]:
        try:
            data = json.loads(text)
        except json.JSONDecodeError:
            raise ProposalError("the reply holds no JSON proposal") from None
        if not isinstance(data, dict) or not all(isinstance(data.get(k), str) for k in ("statement", "code", "kind")):
            raise ProposalError("a proposal needs statement, code and kind")
        return [data]

    def _validate(self, proposal: dict, archive: Archive, round: int) -> Verdict:
        if problem := size_problem(self.gates, proposal["statement"], "", proposal["code"]):
            return Verdict.reject("too_long", problem)
        try:
            f = features(proposal["statement"], proposal["code"])
        except SyntaxError:
            return Verdict.reject("unparseable", "the code does not parse")
        sim = proposal.get("sim", {})
        task = PracticeTask(id=task_id(self.name, f["ast_hash"], proposal["statement"]), domain=self.name,
                            kind=proposal["kind"], statement=proposal["statement"], created_round=round,
                            payload={"code": proposal["code"]},
                            meta={"topic": proposal["kind"], "delta": sim.get("delta", 0.0), "bad": sim.get("bad"),
                                  "code": proposal["code"]}, **f)
        if dup := static_duplicate(task, archive, self.gates):
            return dup
        flagged = {"nonsense": "reference_fails", "trivial": "trivial", "nondeterministic": "nondeterministic"}
        if sim.get("bad") in flagged:
            return Verdict.reject(flagged[sim["bad"]], "(simulated sandbox result)")
        return Verdict(True, task=task)

    def solver_goal(self, task: PracticeTask) -> str:
        return task.statement

    def verify(self, task: PracticeTask, workdir: Path) -> tuple[bool, str]:
        raise NotImplementedError("the simulated domain is solved by a simulated population")


def make_code(rng: random.Random, name: str) -> str:
    """A small random Python function, every line of it live: each step works on the one before (distinct tasks
    share few code shingles, and stripping dead code, gates.py, does not collapse them into one)."""
    params = ["x", "y", "z"][:rng.randint(1, 3)]
    names = list(params)
    lines = [f"def {name}({', '.join(params)}):"]
    for i in range(rng.randint(4, 9)):
        v = f"t{i}"
        op = rng.choice(["+", "-", "*", "^", "&", "|", "//", "%", "<<", "max", "min", "abs"])
        a = names[-1] if i else rng.choice(names)
        if op in ("max", "min"):
            lines.append(f"    {v} = {op}({a}, {rng.choice(names + [str(rng.randint(2, 99))])})")
        elif op == "abs":
            lines.append(f"    {v} = abs({a} - {rng.randint(2, 99)})")
        elif op in ("//", "%", "<<"):
            lines.append(f"    {v} = {a} {op} {rng.randint(2, 9)}")
        else:
            lines.append(f"    {v} = {a} {op} {rng.choice(names + [str(rng.randint(2, 99))])}")
        names.append(v)
    lines.append(f"    return {names[-1]}")
    return "\n".join(lines) + "\n"


def make_statement(rng: random.Random, topic: str) -> str:
    vocab = WORDS[topic].split()
    n = rng.randint(12, 28)
    words = [rng.choice(vocab) if rng.random() < 0.5 else rng.choice(COMMON) for _ in range(n)]
    words += [str(rng.randint(2, 999))]
    return (" ".join(words) + ".").capitalize()


def rename(code: str, rng: random.Random) -> str:
    suffix = rng.choice(["a", "b", "v", "w"])
    out = code
    for i in range(12, -1, -1):
        out = out.replace(f"t{i}", f"{suffix}{i}_")
    for p in ("x", "y", "z"):
        out = out.replace(f"({p}", f"({p}{suffix}").replace(f" {p},", f" {p}{suffix},").replace(
            f" {p})", f" {p}{suffix})").replace(f" {p} ", f" {p}{suffix} ").replace(f" {p}\n", f" {p}{suffix}\n")
    return out


def reword(statement: str, rng: random.Random) -> str:
    words = statement.rstrip(".").split()
    if len(words) > 4:
        i = rng.randrange(len(words) - 1)
        words[i], words[i + 1] = words[i + 1], words[i]
    return " ".join(words) + "."


class SimProposer:
    """A scripted proposer for the simulated domain (see the module docstring for its modes)."""

    def __init__(self, mode: str = "blind", seed: int = 0, *, bad: dict[str, float] | None = None,
                 noise: float | None = None, fixed_delta: float = 0.0, impossible: bool = False):
        assert mode in PROPOSERS, mode
        self.mode, self.fixed_delta, self.impossible = mode, fixed_delta, impossible
        self.noise = noise if noise is not None else 0.6 if mode == "blind" else 0.4
        self.bad = DEFAULT_BAD if bad is None else bad
        self.rng = random.Random(f"proposer:{mode}:{seed}")
        self.gain, self.offset = self.rng.uniform(0.5, 1.5), self.rng.gauss(0.0, 0.5)  # the blind one's judgement
        self.latent: dict[str, float] = {}  # statement -> δ of the text it wrote (the simulator's truth)
        self.written: list[dict] = []  # its own valid proposals (sources of padded and duplicate variants)
        self.emitted: dict[str, int] = dict.fromkeys(BAD_KINDS + ("valid",), 0)
        self.requests: list[ProposalRequest] = []
        self.count = 0

    def _delta(self, request: ProposalRequest) -> tuple[str, float]:
        rng = self.rng
        if self.impossible:
            return rng.choice(TOPICS), 50.0
        if self.mode == "blind":
            return self._blind(request)
        examples = [e for e in request.examples if "delta" in (e.get("meta") or {})]
        if self.mode == "fixed":
            return rng.choice(TOPICS), self.fixed_delta
        if self.mode == "random" or not examples:
            if self.mode == "random":
                return rng.choice(TOPICS), rng.uniform(-3.0, 3.0)
            return rng.choice(TOPICS), rng.gauss(0.0, 1.5)
        ex = rng.choice(examples)
        topic = ex["meta"].get("topic", ex.get("kind"))
        if self.mode == "omniscient":  # every example of the topic, each moved to the requested rate, averaged
            same = [e for e in examples if e["meta"].get("topic", e.get("kind")) == topic
                    and e.get("predicted") is not None]
            delta = sum(float(e["meta"]["delta"]) + logit(e["predicted"]) - logit(request.target)
                        for e in same) / len(same) if same else float(ex["meta"]["delta"])
        else:
            delta = float(ex["meta"]["delta"])
        return topic, delta + rng.gauss(0.0, self.noise)

    def _blind(self, request: ProposalRequest) -> tuple[str, float]:
        """From the rates shown only (see the module docstring)."""
        rng = self.rng
        known = [e for e in request.examples if e.get("statement") in self.latent]
        if not known:
            return rng.choice(TOPICS), rng.gauss(0.0, 1.5)
        ex = rng.choice(known)
        rate = ex.get("predicted") if ex.get("predicted") is not None else ex.get("measured", 0.5)
        rate = min(0.9, max(0.1, rate))  # "0%" read as "very hard", not as minus infinity
        shift = self.gain * (logit(rate) - math.log(request.target / (1 - request.target)))
        delta = self.latent[ex["statement"]] + shift + self.offset + rng.gauss(0.0, self.noise)
        return ex.get("kind", TOPICS[0]), delta

    def _valid(self, request: ProposalRequest) -> dict:
        topic, delta = self._delta(request)
        self.count += 1
        statement = make_statement(self.rng, topic)
        self.latent[statement] = delta
        return {"statement": statement, "code": make_code(self.rng, f"f{self.count}"),
                "kind": topic, "sim": {"delta": delta, "bad": None}}

    def _bad(self, kind: str, request: ProposalRequest) -> dict | str | None:
        rng = self.rng
        if kind == "unparseable":
            return "I think a good task would be about strings."
        if kind in ("padded", "duplicate"):
            if not self.written:
                return None
            src = rng.choice(self.written)
            p = json.loads(json.dumps(src))
            p["sim"]["bad"] = kind
            if kind == "duplicate":
                p["code"] = rename(p["code"], rng)
                if rng.random() < 0.5:
                    p["statement"] = reword(p["statement"], rng)
            elif rng.random() < 0.5:  # a longer statement: harder only because it is long
                p["statement"] = p["statement"] + " " + " ".join([FILLER] * rng.randint(1, 3))
                p["sim"]["delta"] += 0.5
            else:  # dead code before the return
                lines = p["code"].rstrip("\n").split("\n")
                dead = [f"    d{i} = {rng.randint(2, 99)} * {rng.randint(2, 99)} + {i}"
                        for i in range(rng.randint(4, 8))]
                p["code"] = "\n".join(lines[:-1] + dead + lines[-1:]) + "\n"
                p["sim"]["delta"] += 0.5
            return p
        p = self._valid(request)
        p["sim"]["bad"] = kind
        return p

    async def propose(self, request: ProposalRequest, prompt: str) -> list[str]:
        self.requests.append(request)
        out: list[str] = []
        for _ in range(request.count):
            x, item = self.rng.random(), None
            for kind in BAD_KINDS:
                rate = self.bad.get(kind, 0.0)
                if x < rate:
                    item = self._bad(kind, request)
                    if item is not None:
                        self.emitted[kind] += 1
                    break
                x -= rate
            if item is None:
                item = self._valid(request)
                self.written.append(item)
                self.emitted["valid"] += 1
            out.append(item if isinstance(item, str) else json.dumps(item))
        return out


def sim_engine_parts(population: str = "learning", seed: int = 0, mode: str = "blind",
                     **proposer_kw: Any) -> tuple[SimDomain, SimProposer, SimSolver]:
    """A domain, proposer and solver wired for a simulation."""
    return SimDomain(), SimProposer(mode, seed, **proposer_kw), SimSolver(Population(population, seed))
