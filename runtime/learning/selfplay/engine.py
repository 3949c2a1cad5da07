"""The self-play loop: propose → gates → k attempts → rewards → ratings, controller, replay → a round's report.

A round: the controller splits the batch into new and replayed tasks; the
proposer is asked for the new ones (shown archive tasks whose predicted
success brackets the requested rate), each proposal goes through the domain's
gates (rejections counted by reason), every task of the batch gets k attempts
(outcomes in domain.Attempt: an attempt whose budget ends before its first
call to finish is truncated, not failed, and a new task with more than a
quarter truncated is rejected as `length_hard`; an error is run again, up to
`error_retries` times, and never rated), new tasks
are rewarded (reward.py) and rated (from their measurement and what they
were asked for next to which examples: ratings.py), replayed ones
re-estimated, the solver's rating is moved on by the round's practice, and
the controller moves. Every `heldout_every` rounds the held-out tasks (never
practised) are measured again without learning, so improvement and forgetting
are numbers. They are asked for on their own, one a round from round
`heldout_from` until there are `heldout_size`, on a ladder of predicted
success from `heldout_success[0]` down to `heldout_success[1]` (evenly spaced
in logits, not clamped): held-out tasks all at the practice target saturate
as the solver learns (the simulated learning population's went 0.61 → 1.00
over 50 rounds). How far down the ladder must reach depends on how fast the
solver learns: the simulated learning population gains about 5 logits in 50
rounds, and a ladder from 0.35 to 0.02 still ended at 0.95 on it, so
bench/selfplay.py asks from 0.25 down to 0.005; the default (0.5 to 0.1)
is for a solver that learns slowly, as one learning from lessons does, on
which a set that hard would measure mostly zeros.
Learning itself happens in the solver: a real solver's runs go through the
Runner, which reflects after every run (lessons with credit, skill
drafts); a simulated one has a learning rate.

Waves (`waves`, default 4; `loopwright selfplay --waves`, the daemon's
practice mode and bench/selfplay.py use the same default): a round of `batch`
tasks is asked for and solved in that many waves of about batch/waves tasks
(no more waves than new tasks; new and replayed ones spread evenly; a wave
makes up the new tasks the gates took from earlier waves), and each wave's request, examples and replays are
chosen after the earlier waves' outcomes have moved the ratings (observe and
`advance` per wave). The round's size, report and controller update (mix and
bias, once a round) stay as they were, so its figures compare with one-wave
rounds. Why: a solver that drifts per attempt moves within a round, and a
request made at the start of the round is a round old by its last attempt
(ratings.py). Measured on bench/selfplay.py's populations (16 tasks x k 8,
seeds 100-119, mean |s̄ − 0.5| over rounds 10-50, static / learning /
drifting): one wave 0.0485 / 0.0475 / 0.0543; 2 waves 0.044 / 0.043 / 0.050;
4 waves 0.040 / 0.040 / 0.049; 8 waves 0.036 / 0.037 / 0.049 — and with
waves the ratings' per-attempt drift can be raised, which did not pay without
them (ratings.py): 4 waves at DRIFT_KIND 6e-4: 0.038 / 0.036 / 0.042 (one
wave at 6e-4: 0.052 / 0.050 / 0.058). Read this with care: part of the gain
is not better-aimed tasks but later waves answering the earlier waves'
binomial noise (a wave that passed by luck moves the ratings up, and the next
one is asked harder): measured against the simulator's latent success p (a
diagnostic; the controller never sees it), the mean |p̄ − 0.5| of a round
fell from 0.031 / 0.033 / 0.044 to 0.029 / 0.030 / 0.037, the per-attempt
spread rms(p − 0.5) stayed 0.12 / 0.16-0.17 / 0.18, and the static figure
at 8 waves is below the binomial "floor" of fixed p = 0.5, which such
feedback makes possible. Wasted attempts fell (static 4.1% → 3.1%) or stayed
(learning 5.5% → 5.8%, drifting 7.3% → 6.6%); at 8 and 16 waves the learning
population's rose to 8% and 10%. The price is in real use: each wave is a
proposer call (`proposer_calls` is per wave) and a wait for its slowest
solver run, so a round of 4 waves takes about 4 solve phases instead of one.

The run stops after `rounds`, when the budget is spent, or when `patience`
rounds in a row produced no new task with a positive reward (a proposer that
only writes impossible or invalid tasks does not loop forever).

State lives in one folder (`.loopwright/selfplay/<domain>/`, or
`simulate-<domain>/` for simulations): archive.jsonl (accepted tasks),
rounds.jsonl (one report per round), measurements.jsonl (one line per task
measured), state.json (ratings, controller, replay buffer, length medians).
"""

from __future__ import annotations

import asyncio
import json
import math
import random
import statistics
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from loopwright.runtime.learning.selfplay.controller import Controller, ControllerConfig
from loopwright.runtime.learning.selfplay.domain import (
    REASONS,
    Archive,
    Attempt,
    Domain,
    PracticeTask,
    ProposalError,
    ProposalRequest,
    Proposer,
    Solver,
)
from loopwright.runtime.learning.selfplay.gates import length_hard
from loopwright.runtime.learning.selfplay.ratings import Ratings, sigmoid
from loopwright.runtime.learning.selfplay.replay import ReplayBuffer
from loopwright.runtime.learning.selfplay.reward import LengthStats, RewardConfig, batch_rewards, clusters

Probability = Annotated[float, Field(gt=0, lt=1)]
BINS = ("0", "(0,.2]", "(.2,.4]", "(.4,.6]", "(.6,.8]", "(.8,1)", "1")


class SelfPlayConfig(BaseModel):
    """Everything a self-play run is configured by (CLI flags map onto these)."""

    model_config = ConfigDict(extra="forbid")
    k: int = Field(default=8, ge=1)
    # 16 tasks x k = 8: the batch rate of even a perfect controller (every task at p = 0.5) is binomial, and
    # E|s̄ − 0.5| over 64 attempts is 0.050 — the goal itself; over 128 it is 0.035 (bench/selfplay.py)
    batch: int = Field(default=16, ge=1)
    waves: int = Field(default=4, ge=1)  # the batch is asked for and solved in this many waves (see the docstring)
    truncated_share: float = Field(default=0.25, ge=0, le=1)
    error_retries: int = Field(default=1, ge=0)  # times a task's errored attempts (infrastructure) are run again
    heldout_size: int = Field(default=8, ge=0)
    heldout_from: int = Field(default=3, ge=1)  # the first round a held-out task is asked for (ratings exist)
    heldout_success: tuple[Probability, Probability] = (0.5, 0.1)  # the ladder's ends (see the docstring)
    heldout_every: int = Field(default=5, ge=1)
    proposer_calls: int = Field(default=3, ge=1)  # per round, to fill the new share
    patience: int = Field(default=10, ge=1)
    budget_usd: float | None = Field(default=None, gt=0)
    seed: int = 0
    replay: bool = True  # baselines turn replay, rated examples and the controller off
    examples: Literal["rated", "random_mid", "none"] = "rated"
    control: bool = True
    replay_capacity: int = Field(default=64, ge=1)
    reward: RewardConfig = Field(default_factory=RewardConfig)
    controller: ControllerConfig = Field(default_factory=ControllerConfig)


def histogram(rates: list[float]) -> dict[str, int]:
    out = dict.fromkeys(BINS, 0)
    for p in rates:
        if p <= 0:
            out["0"] += 1
        elif p >= 1:
            out["1"] += 1
        else:
            out[BINS[min(5, 1 + int((p - 1e-9) / 0.2))]] += 1
    return out


class PlayLog:
    """The folder a domain's self-play state lives in (see the module docstring)."""

    def __init__(self, folder: Path | None):
        self.folder = folder
        if folder is not None:
            folder.mkdir(parents=True, exist_ok=True)

    def append(self, name: str, record: dict) -> None:
        if self.folder is not None:
            with (self.folder / name).open("a") as f:
                f.write(json.dumps(record, default=str) + "\n")

    def lines(self, name: str) -> list[dict]:
        if self.folder is None or not (self.folder / name).exists():
            return []
        return [json.loads(line) for line in (self.folder / name).read_text().splitlines() if line.strip()]

    def write_state(self, state: dict) -> None:
        if self.folder is not None:
            tmp = self.folder / "state.json.tmp"
            tmp.write_text(json.dumps(state, indent=1, default=str))
            tmp.replace(self.folder / "state.json")

    def state(self) -> dict:
        if self.folder is None or not (self.folder / "state.json").exists():
            return {}
        return json.loads((self.folder / "state.json").read_text())


class Engine:
    """One domain's self-play: holds the archive, ratings, controller and buffer; `run` plays rounds."""

    def __init__(self, domain: Domain, proposer: Proposer, solver: Solver, cfg: SelfPlayConfig | None = None, *,
                 folder: Path | None = None, simulated: bool = False, say: Callable[[str], None] = lambda s: None):
        self.domain, self.proposer, self.solver = domain, proposer, solver
        self.cfg = cfg or SelfPlayConfig()
        self.simulated, self.say = simulated, say
        self.log = PlayLog(folder)
        state = self.log.state()
        self.archive = Archive([PracticeTask.model_validate(t) for t in self.log.lines("archive.jsonl")])
        self.ratings = Ratings.from_state(state["ratings"]) if "ratings" in state else Ratings()
        self.controller = (Controller.from_state(state["controller"] | {"config": self.cfg.controller.model_dump()})
                           if "controller" in state else Controller(self.cfg.controller))
        self.buffer = (ReplayBuffer.from_state(state["replay"]) if "replay" in state
                       else ReplayBuffer(self.cfg.replay_capacity))
        self.lengths = LengthStats(state.get("lengths"))
        self.measured: dict[str, dict] = state.get("measured", {})  # task id -> last {passes, valid, round}
        self.round_no: int = state.get("round", 0)
        self.spent_usd: float = state.get("spent_usd", 0.0)
        self.accepted_total: int = state.get("accepted_total", 0)
        self.quiet_rounds: int = state.get("quiet_rounds", 0)
        self.rng = random.Random(f"{self.cfg.seed}:{self.round_no}")
        self.stopped = ""
        self._shown: list[dict] = []  # the examples shown to the proposer this round

    # -- state ------------------------------------------------------------------------------------

    def state(self) -> dict:
        return {"domain": self.domain.name, "simulated": self.simulated, "round": self.round_no,
                "spent_usd": self.spent_usd, "accepted_total": self.accepted_total,
                "quiet_rounds": self.quiet_rounds, "ratings": self.ratings.state(),
                "controller": self.controller.state(), "replay": self.buffer.state(),
                "lengths": self.lengths.to_json(), "measured": self.measured}

    def heldout(self) -> list[PracticeTask]:
        return [t for t in self.archive.tasks if t.heldout]

    # -- one round --------------------------------------------------------------------------------

    def _examples(self, want: float) -> list[dict]:
        practice = [t for t in self.archive.tasks if not t.heldout and t.id in self.measured]
        if self.cfg.examples == "none" or not practice:
            return []
        if self.cfg.examples == "random_mid":  # AZR-style: past tasks that passed the filter, no rates
            mid = [t for t in practice if 0 < self.measured[t.id]["passes"] < self.measured[t.id]["valid"]]
            picked = self.rng.sample(mid, min(len(mid), self.cfg.controller.examples))
            return [{"id": t.id, "kind": t.kind, "statement": t.statement, "meta": t.meta} for t in picked]
        info = [(t.id, t.kind, {"statement": t.statement, "meta": t.meta,
                                "measured": self.measured[t.id]["passes"] / max(1, self.measured[t.id]["valid"])})
                for t in practice]
        return self.controller.examples(info, self.ratings, want)

    def heldout_want(self) -> float:
        """The predicted success the next held-out task is asked at (its rung of the ladder, against the proposer's
        measured offset)."""
        hi, lo = (math.log(p / (1 - p)) for p in self.cfg.heldout_success)
        n = max(1, self.cfg.heldout_size - 1)
        rung = hi + (lo - hi) * min(len(self.heldout()), n) / n
        return sigmoid(rung - self.ratings.request_error()[0])

    async def _propose(self, n_new: int, rnd: int, record: dict, want: float, *,
                       heldout: bool = False) -> list[PracticeTask]:
        """Ask for `n_new` tasks at `want` and gate them: the accepted ones (for `heldout`, set aside instead)."""
        rejected: Counter = record["rejected"]
        new: list[PracticeTask] = []
        examples = self._shown = self._examples(want)
        for _ in range(self.cfg.proposer_calls):
            if len(new) >= n_new:
                break
            request = ProposalRequest(domain=self.domain.name, target=want, count=n_new - len(new),
                                      examples=examples, difficulty=self.ratings.difficulty_for("", want), round=rnd)
            for item in await self.domain.propose(request, self.proposer):
                record["proposals"] += 1
                if isinstance(item, ProposalError):
                    rejected["unparseable"] += 1
                    continue
                verdict = await asyncio.to_thread(self.domain.validate, item, self.archive, round=rnd)
                if not verdict.ok:
                    rejected[verdict.reason] += 1
                    continue
                task = verdict.task
                assert task is not None
                task.meta["max_similarity"] = self.archive.max_similarity(frozenset(task.shingles))
                self.accepted_total += 1
                task.heldout = heldout and len(new) < n_new  # a reply's extra tasks are archived, not held out
                if task.heldout:
                    task.meta["asked"] = want
                self.archive.add(task)
                record["added"].append(task)
                if len(new) < n_new:
                    new.append(task)
        if heldout:
            record["heldout_added"] += len(new)
        return new

    async def _measure(self, tasks: list[PracticeTask], *, learn: bool = True) -> list[list[Attempt]]:
        return list(await asyncio.gather(*(self._attempts(t, learn) for t in tasks)))

    async def _attempts(self, task: PracticeTask, learn: bool) -> list[Attempt]:
        """k attempts at `task`; those that ended in an error (infrastructure) are run again, up to
        `error_retries` times, and stay in the list (counted, never rated)."""
        tries = await self.domain.solve(task, self.cfg.k, self.solver, learn=learn)
        for _ in range(self.cfg.error_retries):
            missing = self.cfg.k - sum(1 for a in tries if not a.error)
            if missing <= 0:
                break
            tries += await self.domain.solve(task, missing, self.solver, learn=learn)
        return tries

    async def play_round(self) -> dict:
        """Play one round and return (and store) its report."""
        cfg, ctl = self.cfg, self.controller
        rnd = self.round_no + 1
        started = time.monotonic()
        record: dict = {"round": rnd, "domain": self.domain.name, "simulated": self.simulated, "proposals": 0,
                        "rejected": Counter(), "heldout_added": 0, "added": [], "c": ctl.c, "target": ctl.target}
        n_new, n_replay = ctl.plan(cfg.batch, len(self.buffer)) if cfg.replay else (cfg.batch, 0)
        waves = max(1, min(cfg.waves, n_new))
        new: list[PracticeTask] = []
        replayed: list[PracticeTask] = []
        batch: list[PracticeTask] = []
        items, rows = [], []
        passes_all = valid_all = passes_new = valid_new = wasted = attempts = 0
        tokens = cost = 0.0
        rates: list[float] = []
        hard = 0
        record["requested_waves"] = []
        if cfg.heldout_size and len(self.heldout()) < cfg.heldout_size and rnd >= cfg.heldout_from:
            await self._propose(1, rnd, record, self.heldout_want(), heldout=True)
        for w in range(waves):  # each wave is asked for after the earlier waves' outcomes moved the ratings
            w_new = n_new * (w + 1) // waves - len(new)  # and makes up what the gates took from earlier waves
            w_replay = n_replay * (w + 1) // waves - n_replay * w // waves
            if w_replay:
                self.buffer.refresh({e.task_id: p for e in self.buffer.entries.values()
                                     if (p := self.ratings.predict(e.task_id, e.kind)) is not None})
            replay_ids = self.buffer.sample(w_replay, rnd, self.rng, exclude={t.id for t in replayed}) \
                if w_replay else []
            w_replayed = [t for t in (self.archive.get(i) for i in replay_ids) if t is not None]
            predicted = [p for t in w_replayed if (p := self.ratings.predict(t.id, t.kind)) is not None]
            want = ctl.request_success(predicted, w_new, self.ratings.request_error()[0]) if cfg.control \
                else ctl.target
            record["requested_waves"].append(want)
            w_new_tasks = await self._propose(w_new, rnd, record, want) if w_new > 0 else []
            w_batch = w_new_tasks + w_replayed
            # what each new task was asked for on the rating scale, and the rated examples of its kind it was shown
            asked = {t.id: self.ratings.request(t.kind, want, [e["id"] for e in self._shown
                                                               if e.get("kind") == t.kind
                                                               and e.get("predicted") is not None])
                     for t in w_new_tasks} if cfg.control else {}
            new += w_new_tasks
            replayed += w_replayed
            batch += w_batch
            results = await self._measure(w_batch)
            practised: Counter = Counter()
            for task, tries in zip(w_batch, results):
                practised[task.kind] += len(tries)
            new_ids = {t.id for t in w_new_tasks}
            for task, tries in zip(w_batch, results):
                is_new = task.id in new_ids
                errors = sum(1 for a in tries if a.error)
                truncated = sum(1 for a in tries if a.outcome == "truncated")
                passes = sum(1 for a in tries if a.outcome == "passed")
                valid = len(tries) - truncated - errors
                tokens += sum(a.tokens for a in tries)
                cost += sum(a.cost_usd for a in tries)
                attempts += len(tries)
                row = {"round": rnd, "wave": w + 1, "task": task.id, "kind": task.kind,
                       "source": "new" if is_new else "replay", "passes": passes, "valid": valid,
                       "truncated": truncated, "errors": errors, "length": task.length, "reward": None,
                       "predicted": self.ratings.predict(task.id, task.kind), "bad": task.meta.get("bad")}
                if is_new and length_hard(truncated, len(tries) - errors, cfg.truncated_share):
                    record["rejected"]["length_hard"] += 1
                    hard += 1
                    task.meta["rejected"] = "length_hard"
                    row["source"] = "length_hard"
                    wasted += len(tries)
                    rows.append(row)
                    continue
                if valid == 0:
                    rows.append(row)
                    wasted += len(tries)
                    continue
                if passes in (0, valid):
                    wasted += len(tries)
                passes_all += passes
                valid_all += valid
                rates.append(passes / valid)
                self.ratings.observe(task.id, task.kind, passes, valid,
                                     prior=asked.get(task.id) if is_new else None)
                self.measured[task.id] = {"passes": passes, "valid": valid, "round": rnd}
                if is_new:
                    passes_new += passes
                    valid_new += valid
                    items.append({"task": task, "row": row, "passes": passes, "valid": valid, "kind": task.kind,
                                  "length": task.length, "shingles": task.shingles,
                                  "max_similarity": task.meta.get("max_similarity", 0.0)})
                elif self.buffer.reestimate(task.id, passes, valid, rnd):
                    row["evicted"] = True
                rows.append(row)
            self.ratings.advance(practised)  # the solver practised: its ability moves (ratings.py)
        record["requested_success"] = record["requested_waves"][0]
        rewards = batch_rewards(items, self.lengths, cfg.reward, others=[t.shingles for t in replayed]) \
            if items else []
        for it, rw in zip(items, rewards):
            it["row"]["reward"] = rw["total"]
            it["row"]["reward_parts"] = rw
            if cfg.replay:
                self.buffer.offer(it["task"].id, it["task"].kind, it["passes"], it["valid"], rnd)
        for it in items:
            self.lengths.add(it["kind"], it["length"])

        s_bar = passes_all / valid_all if valid_all else None
        s_new = passes_new / valid_new if valid_new else None
        if cfg.control:
            ctl.update(s_bar, (passes_all, valid_all) if valid_all else None)
        heldout = None
        held = self.heldout()
        if held and rnd % cfg.heldout_every == 0:
            held_results = await self._measure(held, learn=False)
            scores = []
            for task, tries in zip(held, held_results):
                valid = sum(1 for a in tries if a.outcome in ("passed", "failed"))
                if valid:
                    passes = sum(1 for a in tries if a.outcome == "passed")
                    scores.append(passes / valid)
                    self.ratings.observe(task.id, task.kind, passes, valid)
                tokens += sum(a.tokens for a in tries)
                cost += sum(a.cost_usd for a in tries)
            heldout = statistics.mean(scores) if scores else None
        self.spent_usd += cost + getattr(self.proposer, "take_cost", lambda: 0.0)()
        rewarded = [r["total"] for r in rewards]
        self.quiet_rounds = 0 if any(r > 0 for r in rewarded) else self.quiet_rounds + 1
        labels = clusters([frozenset(t.shingles) for t in batch], cfg.reward.cluster_similarity) if batch else []
        new_lengths = [t.length for t in new]
        record.update({
            "accepted": len(new) - hard, "replayed": len(replayed), "measured": len(rates),
            "rejected": {r: record["rejected"][r] for r in REASONS if record["rejected"][r]},
            "s_bar": s_bar, "s_new": s_new, "gap": abs(s_bar - ctl.target) if s_bar is not None else None,
            "histogram": histogram(rates), "attempts": attempts, "wasted": wasted,
            "wasted_share": wasted / attempts if attempts else 0.0,
            "reward_mean": statistics.mean(rewarded) if rewarded else 0.0,
            "length_median_new": statistics.median(new_lengths) if new_lengths else None,
            "length_median_kinds": {k: self.lengths.median(k) for k in sorted(self.lengths.lengths)},
            "clusters": len(set(labels)), "largest_cluster_share": (max(Counter(labels).values()) / len(labels))
            if labels else 0.0,
            "heldout": heldout, "heldout_tasks": len(held), "theta": dict(self.ratings.theta),
            "bad_accepted": sum(1 for t in record["added"]
                                if t.meta.get("bad") and t.meta.get("rejected") != "length_hard"),
            "tokens": tokens, "cost_usd": cost, "spent_usd": self.spent_usd, "buffer": len(self.buffer),
            "c_after": ctl.c, "seconds": round(time.monotonic() - started, 3)})
        self.round_no = rnd
        for task in record.pop("added"):
            self.log.append("archive.jsonl", task.model_dump())
        for row in rows:
            self.log.append("measurements.jsonl", row)
        self.log.append("rounds.jsonl", record)
        self.log.write_state(self.state())
        return record

    async def run(self, rounds: int) -> list[dict]:
        """Play up to `rounds` rounds (stops early on the budget or on `patience` quiet rounds)."""
        out: list[dict] = []
        self.stopped = ""
        for _ in range(rounds):
            if self.cfg.budget_usd is not None and self.spent_usd >= self.cfg.budget_usd:
                self.stopped = f"budget spent (${self.spent_usd:.2f} of ${self.cfg.budget_usd:.2f})"
                break
            record = await self.play_round()
            out.append(record)
            self.say(round_line(record))
            if self.quiet_rounds >= self.cfg.patience:
                self.stopped = (f"stopped: {self.quiet_rounds} rounds in a row without a new task worth solving "
                                f"(every reward 0); the proposer's tasks were invalid, impossible or trivial")
                break
        if self.stopped:
            self.say(self.stopped)
        return out


def round_line(r: dict) -> str:
    """One line per round for the terminal."""
    rej = ", ".join(f"{k} {v}" for k, v in r["rejected"].items()) or "none"
    s = "-" if r["s_bar"] is None else f"{r['s_bar']:.2f}"
    held = "" if r.get("heldout") is None else f"  held-out {r['heldout']:.2f}"
    sim = " [simulation]" if r.get("simulated") else ""
    return (f"round {r['round']:>3}{sim}: {r['accepted']} new + {r['replayed']} replayed, s̄ {s} "
            f"(target {r['target']:.2f}), wasted {r['wasted_share']:.0%}, reward {r['reward_mean']:.2f}, "
            f"rejected: {rej}{held}")
