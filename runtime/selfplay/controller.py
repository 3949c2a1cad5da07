"""The controller: keeps the batch success rate s̄ near the target by choosing the mix and what is asked.

Three handles, all updated once per round from what was measured:

- the mix: c, the share of new (proposed) tasks in a batch, the rest replayed
  from the buffer: c ← clip(c + η·(s̄ − target), c_min, c_max) (η = 0.5,
  c_min = 1/8, c_max = 3/4: a quarter replayed at least, because replays are
  what keeps the solver's rating current — with c_max = 1 the mix reached 1
  against a learning population, the ratings froze and s̄ sat 0.1 above
  target; bench/selfplay.py, 5 seeds). Too easy (s̄ above target: the buffer's tasks have
  been learned) → more new tasks; too hard (the proposer overshoots, or
  proposes nonsense) → more replays of tasks with known mid rates: it backs off.
- the request: the proposer is asked for tasks of predicted success
  p_req = σ(logit(p_ff) + bias) within [0.2, 0.8], where p_ff makes the
  batch's expected rate the target given the replayed tasks' predicted
  success (feed-forward: n_new·p_ff + Σ p_replay = B·target), and
  bias ← clip(bias + κ·(logit(target) −
  logit(s̄)), ±3) (κ = 0.5; s̄ smoothed (passes + ½)/(n + 1)). A proposer whose tasks keep coming out too
  hard is asked for easier ones, and vice versa; it is an integrator in logit
  space because the error it corrects (the ratings lagging a learning solver)
  grows in logits: with a bounded correction in probability space (±0.45,
  the first version) the learning population's s̄ stayed 0.1 above target
  (bench/selfplay.py, 5 seeds).
- the examples: archive tasks whose predicted success under the current
  ratings (ratings.py) brackets p_req, shown with their measured rates; two
  just above and two just below when there are.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from .ratings import Ratings, logit, sigmoid

BIAS_CAP = 3.0


class ControllerConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    target: float = Field(default=0.5, gt=0, lt=1)
    eta: float = Field(default=0.5, ge=0)
    kappa: float = Field(default=0.5, ge=0)
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

    def request_success(self, replayed: list[float] | None = None, new: int = 0) -> float:
        """p_req: the target (feed-forward: what makes the batch's expected rate the target given the replayed
        tasks' predicted success), moved by the bias, within [0.2, 0.8]."""
        base = self.cfg.target
        if replayed and new > 0:
            base = (self.cfg.target * (new + len(replayed)) - sum(replayed)) / new
        base = min(0.8, max(0.2, base))
        return min(0.8, max(0.2, sigmoid(logit(base) + self.bias)))

    def plan(self, batch: int, replayable: int) -> tuple[int, int]:
        """(new, replayed) task counts for a batch: c of it new (at least one), the rest replayed if available."""
        new = max(1, round(self.c * batch))
        replay = min(batch - new, replayable)
        return batch - replay, replay

    def examples(self, candidates: list[tuple[str, str, dict]], ratings: Ratings,
                 want: float | None = None) -> list[dict]:
        """Up to `examples` archive tasks whose predicted success brackets `want` (default p_req): (id, kind,
        info) in, dicts out. `info` carries what the proposer is shown (statement, measured rate, meta);
        `predicted` is added.
        """
        want = self.request_success() if want is None else want
        above, below = [], []
        for task_id, kind, info in candidates:
            p = ratings.predict(task_id, kind)
            if p is None:
                continue
            gap = abs(logit(p) - logit(want))
            (above if p >= want else below).append((gap, info | {"id": task_id, "kind": kind, "predicted": p}))
        half = self.cfg.examples // 2
        above.sort(key=lambda x: x[0])
        below.sort(key=lambda x: x[0])
        picked = [x for _, x in above[:half]] + [x for _, x in below[:half]]
        rest = [x for _, x in sorted(above[half:] + below[half:], key=lambda x: x[0])]
        picked += rest[:self.cfg.examples - len(picked)]
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
