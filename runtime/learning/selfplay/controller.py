"""The controller: keeps the batch success rate s̄ near the target by choosing the mix and what is asked.

Three handles, all updated once per round from what was measured:

- the mix: c, the share of new (proposed) tasks in a batch, the rest replayed
  from the buffer: c ← clip(c + η·(s̄ − target), c_min, c_max) (η = 0.5,
  c_min = 1/8, c_max = 3/4: a quarter replayed at least, because replays are
  what keeps the solver's rating current — with c_max = 1 the mix reached 1
  against a learning population, the ratings froze and s̄ sat 0.1 above
  target; bench/selfplay.py, 5 seeds). Too easy (s̄ above target: the
  buffer's tasks have been learned) → more new tasks; too hard (the proposer overshoots, or
  proposes nonsense) → more replays of tasks with known mid rates: it backs off.
- the request: the proposer is asked for tasks of predicted success
  p_req = σ(logit(p_ff) + bias − o) within [0.2, 0.8], where p_ff makes the
  batch's expected rate the target given the replayed tasks' predicted
  success (feed-forward: n_new·p_ff + Σ p_replay = B·target), o is how much
  easier than asked the proposer's tasks have come out (in logits; measured
  by the ratings over its last 64 tasks, ratings.py), and
  bias ← clip(bias + κ·(logit(target) − logit(s̄)), ±3) (κ = 0.1; s̄ smoothed
  (passes + ½)/(n + 1)) catches what the ratings miss: a proposer whose tasks
  keep coming out too hard is asked for easier ones, and vice versa. κ was
  0.5 when the integrator had to make up for Elo ratings lagging a learning
  solver; with the ratings tracking it (ratings.py) κ = 0.5 mostly fed the
  binomial noise of s̄ back into the request: mean |s̄ − 0.5| 0.050 / 0.048 /
  0.057 (static / learning / drifting) against 0.048 / 0.048 / 0.054 at κ = 0.1
  (bench/selfplay.py populations, 16 tasks a round, seeds 100-119; κ = 0 is
  the same within noise: κ = 0.1 is kept as a slow net under the ratings).
- the examples: archive tasks whose predicted success under the current
  ratings brackets p_req, shown with their measured rates: for every kind its
  nearest one above and its nearest one below (then more of them, nearest
  first), nearness being the expected squared distance of the task's logit
  from the requested one, (logit p − logit p_req)² + its variance, so that a
  task measured once and a task measured five times at the same prediction
  are not alike. Per kind, because the proposer writes tasks like the
  examples it is shown and a kind's rating error is shared by its tasks: with
  the nearest four above and four below overall, most rounds' examples (and
  so most new tasks) were of one or two kinds and the batch rate moved with
  those kinds' errors: 0.049 / 0.049 / 0.064 against 0.048 / 0.048 / 0.054
  (same measurement).

The figures above are of rounds asked for in one batch. The engine now asks
in waves (engine.py): `request_success` and `examples` are called once a
wave with the ratings as the earlier waves left them; the mix and the bias
still move once a round.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from loopwright.runtime.learning.selfplay.ratings import Ratings, logit, sigmoid

BIAS_CAP = 3.0


class ControllerConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    target: float = Field(default=0.5, gt=0, lt=1)
    eta: float = Field(default=0.5, ge=0)
    kappa: float = Field(default=0.1, ge=0)
    c_start: float = Field(default=0.5, ge=0, le=1)
    c_min: float = Field(default=0.125, ge=0, le=1)
    c_max: float = Field(default=0.75, ge=0, le=1)
    examples: int = Field(default=8, ge=0)


class Controller:
    def __init__(self, cfg: ControllerConfig | None = None):
        self.cfg = cfg or ControllerConfig()
        self.c = self.cfg.c_start
        self.bias = 0.0

    @property
    def target(self) -> float:
        return self.cfg.target

    def request_success(self, replayed: list[float] | None = None, new: int = 0, offset: float = 0.0) -> float:
        """p_req: the target (feed-forward: what makes the batch's expected rate the target given the replayed
        tasks' predicted success), moved by the bias and against the proposer's measured `offset` (logits),
        within [0.2, 0.8]."""
        base = self.cfg.target
        if replayed and new > 0:
            base = (self.cfg.target * (new + len(replayed)) - sum(replayed)) / new
        base = min(0.8, max(0.2, base))
        return min(0.8, max(0.2, sigmoid(logit(base) + self.bias - offset)))

    def plan(self, batch: int, replayable: int) -> tuple[int, int]:
        """(new, replayed) task counts for a batch: c of it new (at least one), the rest replayed if available."""
        new = max(1, round(self.c * batch))
        replay = min(batch - new, replayable)
        return batch - replay, replay

    def examples(self, candidates: list[tuple[str, str, dict]], ratings: Ratings,
                 want: float | None = None) -> list[dict]:
        """Up to `examples` archive tasks whose predicted success brackets `want` (default p_req), spread over the
        kinds (see the module docstring): (id, kind, info) in, dicts out. `info` carries what the proposer is shown
        (statement, measured rate, meta); `predicted` is added.
        """
        want = self.request_success() if want is None else want
        by_kind: dict[str, tuple[list, list]] = {}
        for task_id, kind, info in candidates:
            p = ratings.predict(task_id, kind)
            if p is None:
                continue
            gap = (logit(p) - logit(want)) ** 2 + (ratings.uncertainty(task_id, kind) or 0.0)
            above, below = by_kind.setdefault(kind, ([], []))
            (above if p >= want else below).append((gap, info | {"id": task_id, "kind": kind, "predicted": p}))
        queues = []  # per kind: its nearest above, its nearest below, then the rest by nearness
        for above, below in by_kind.values():
            above.sort(key=lambda x: x[0])
            below.sort(key=lambda x: x[0])
            queues.append(sorted(above[:1] + below[:1], key=lambda x: x[0])
                          + sorted(above[1:] + below[1:], key=lambda x: x[0]))
        picked: list[dict] = []
        depth = 0  # round robin over the kinds, the nearest first in every turn
        while len(picked) < self.cfg.examples and any(depth < len(q) for q in queues):
            level = sorted((q[depth] for q in queues if depth < len(q)), key=lambda x: x[0])
            picked += [x for _, x in level[:self.cfg.examples - len(picked)]]
            depth += 1
        return sorted(picked, key=lambda x: -x["predicted"])

    def update(self, s_bar: float | None, new: tuple[int, int] | None) -> None:
        """After a round: the mix from the batch rate, the request's bias from the new tasks' (passes, valid)."""
        cfg = self.cfg
        if s_bar is not None:
            self.c = min(cfg.c_max, max(cfg.c_min, self.c + cfg.eta * (s_bar - cfg.target)))
        if new is not None and new[1] > 0:
            s_new = (new[0] + 0.5) / (new[1] + 1)
            self.bias = min(BIAS_CAP, max(-BIAS_CAP, self.bias + cfg.kappa * (logit(cfg.target) - logit(s_new))))

    def state(self) -> dict:
        return {"c": self.c, "bias": self.bias, "config": self.cfg.model_dump()}

    @classmethod
    def from_state(cls, data: dict) -> Controller:
        ctl = cls(ControllerConfig(**data.get("config", {})))
        ctl.c, ctl.bias = data.get("c", ctl.cfg.c_start), data.get("bias", 0.0)
        return ctl
