"""Ratings on one scale for the solver and every task: a 1-parameter IRT (Rasch) model, tracked by a Kalman filter.

    P(solver passes task) = σ(θ_kind − b_task),   θ_kind = θ_global + offset_kind

The solver's state x = (θ_global, γ, offset per kind) has a mean and a full
covariance P. γ is what one practice attempt on a kind adds to that kind's
ability (a solver that learns from practice; about 0 for one that does not),
so after a round offset_kind += γ·(attempts on the kind), and P grows through
that transition and by process noise per attempt (DRIFT_KIND on every
offset, a tenth of it on θ_global: a solver may also change in ways practice
does not explain). Every task's b has a mean and a variance of its own;
tasks do not change, so b gets no process noise, and b and x are kept
independent (as Glicko and TrueSkill keep their ratings).

A measurement (passes of n valid attempts) of a rated task is one extended
Kalman update: the logit l = θ_kind − b has the prior N(l₀, S), S = hᵀPh +
v_b; the posterior mode l* (Newton on prior × binomial likelihood) and the
curvature there, n·p*(1−p*) = 1/R, give the shift Δl = l* − l₀; x moves by
P·h·Δl/S, b by −v_b·Δl/S, and both shrink by the Kalman gain 1/(S + R).

A new task is rated from its first measurement and what it was asked for
(`request`: the b at which the solver's predicted success is the requested
one, and the rated examples of its kind the proposer was shown):

- the proposer writes tasks relative to the examples it is shown, so b is
  (the examples' mean b) + (where it was asked relative to them) − o + ε:
  the first measurement moves θ_kind, the examples' b and the new b, each by
  its share of the variance (in a round about half of the attempts are on
  new tasks: rating only the task from them leaves the solver's ability to
  the replays alone);
- o and s² = Var ε, how much easier than asked the proposer's tasks come out
  and how far they scatter, are fitted (EM on the logit-normal model, once a
  round) over its last 64 such tasks: measured, not assumed, so a proposer
  that always overshoots is corrected for (controller.py asks against o);
- a task of a kind no rated example was shown of is rated from its
  measurement and the prior N(logit(requested) + o, s²) alone, relative to θ
  (it says nothing about the solver); without a request (a held-out task, a
  baseline) b = θ_kind − logit((passes + ½)/(n + 1)).

Why, measured on bench/selfplay.py's simulated populations (16 tasks a
round, seeds 100-119 — not the bench's 0-4 —, mean |s̄ − 0.5| over rounds
10-50, static / learning / drifting; the binomial floor is 0.035; the
simulator's latent truth was read by diagnostics only, never by the
controller).
The first version was Elo with fixed gains (θ_global += 0.5·r, θ_kind +=
0.3·r, b −= 0.15·r per replay residual r, a new task rated from its
measurement shrunk toward its request): fixed gains chase the binomial noise
of 8 attempts yet lag a learning solver, and the controller's bias had to
make up the lag from the noisy batch rate: 0.057 / 0.076 / 0.089. This
version: 0.048 / 0.048 / 0.054. Without the practice term γ (a random walk
lags a trend): 0.047 / 0.053 / 0.061; with new tasks rating only
themselves: 0.046 / 0.052 / 0.059; without o (in the prior and in the
request): 0.045 / 0.046 / 0.058. Each of the three costs the static
population up to 0.003 (more to estimate) and is kept for what it does for
a solver that changes, and, o, for a proposer that misjudges difficulty the
same way every time (the scripted one here does not). What is left on the
drifting population is tracking: its skills move by σ 0.025 per attempt on
every kind, and the information 16 tasks of 8 attempts give about each
kind's ability keeps the prediction's sd near 0.4 logits (Kalman steady
state), whatever the batch: 0.051 at 24 tasks a round, 0.055 at 32.

DRIFT_KIND was 1e-4 while a round was asked for in one batch: raising it
(tried 1e-6..1.2e-3) made the ratings follow the noise of 8 attempts no
better than the drift. With the round split into waves (engine.py), each
asked for after the last one's outcomes, a faster-moving rating is used at
once, and the drift pays (4 waves, same measurement): 1e-4: 0.040 / 0.040 /
0.049; 3e-4: 0.035 / 0.037 / 0.046; 4e-4: 0.038 / 0.038 / 0.045; 6e-4:
0.038 / 0.036 / 0.042; 1e-3: 0.036 / 0.035 / 0.043; 2e-3: 0.035 / 0.033 /
0.041 (one wave at 6e-4: 0.052 / 0.050 / 0.058). 6e-4 is kept: the drifting
population's figure stops improving near it (2e-3 is within noise of it and
puts a still larger share of the binomial noise into the ratings, see
engine.py), and static and learning are flat from 3e-4 up. It is close to
the drifting population's own per-attempt variance (0.025² = 6.25e-4): a
filter matched to the fastest-changing solver measured; a real solver's
drift is not known, and a slower one pays little for it (static 0.035 at
3e-4 against 0.038).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence

LOGIT_CLAMP = 4.0
PRIOR_VAR_GLOBAL = 2.25  # the solver's level is not known in advance (sd 1.5 logits)
PRIOR_VAR_KIND = 1.0  # a kind's offset from the global level (sd 1)
PRIOR_VAR_GAIN = 1e-4  # γ: sd 0.01 logits per attempt (0.08 per task of k = 8)
DRIFT_KIND = 6e-4  # process noise per solver attempt on each kind's offset (logits²; see the docstring)
GLOBAL_SHARE = 0.1  # and a tenth of it on θ_global
DRIFT_GAIN = 1e-10  # γ itself barely changes
REQUEST_VAR = 1.0  # the proposer's targeting error before there is history
REQUEST_VAR_MIN = 0.05
REQUEST_HISTORY = 64
GLOBAL, GAIN = 0, 1  # the first two entries of the solver's state


def sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-max(-30.0, min(30.0, x))))


def logit(p: float) -> float:
    p = min(max(p, 1e-6), 1 - 1e-6)
    return max(-LOGIT_CLAMP, min(LOGIT_CLAMP, math.log(p / (1 - p))))


def posterior_logit(mean: float, var: float, passes: int, n: int) -> tuple[float, float]:
    """Mode and variance of l under the prior N(mean, var) and `passes` of n Bernoulli(σ(l)) (Laplace)."""
    x = mean
    for _ in range(30):
        p = sigmoid(x)
        step = (passes - n * p - (x - mean) / var) / (n * p * (1 - p) + 1.0 / var)
        x += max(-2.0, min(2.0, step))
        if abs(step) < 1e-7:
            break
    p = sigmoid(x)
    return x, 1.0 / (n * p * (1 - p) + 1.0 / var)


class Ratings:
    """The solver's state (θ_global, γ, an offset per kind) with its covariance, and b per task with its variance;
    `state()`/`from_state` round-trip."""

    def __init__(self, drift_kind: float = DRIFT_KIND):
        self.drift_kind, self.drift_global = drift_kind, drift_kind * GLOBAL_SHARE
        self.kinds: list[str] = []  # offset of kinds[i] is x[2 + i]
        self.x: list[float] = [0.0, 0.0]
        self.P: list[list[float]] = [[PRIOR_VAR_GLOBAL, 0.0], [0.0, PRIOR_VAR_GAIN]]
        self.b: dict[str, float] = {}
        self.v_b: dict[str, float] = {}
        # new tasks asked against rated examples of their kind: (θ_kind − requested b, passes, valid, var of θ_kind)
        self.request_errors: deque[tuple[float, int, int, float]] = deque(maxlen=REQUEST_HISTORY)
        self._request_fit: tuple[float, float] | None = None  # refitted once a round (see `advance`)
        self._request_stale = True

    # -- the solver -------------------------------------------------------------------------------

    @property
    def global_theta(self) -> float:
        return self.x[GLOBAL]

    @property
    def gain(self) -> float:
        """γ: the estimated ability gained per practice attempt on a kind."""
        return self.x[GAIN]

    @property
    def theta(self) -> dict[str, float]:
        """The per-kind offsets."""
        return {k: self.x[2 + i] for i, k in enumerate(self.kinds)}

    def _index(self, kind: str) -> int | None:
        try:
            return 2 + self.kinds.index(kind)
        except ValueError:
            return None

    def _add_kind(self, kind: str) -> int:
        mean = sum(self.x[2:]) / len(self.kinds) if self.kinds else 0.0
        self.kinds.append(kind)
        self.x.append(mean)
        for row in self.P:
            row.append(0.0)
        self.P.append([0.0] * (len(self.x) - 1) + [PRIOR_VAR_KIND])
        return len(self.x) - 1

    def ability(self, kind: str) -> float:
        i = self._index(kind)
        if i is None:
            return self.x[GLOBAL] + (sum(self.x[2:]) / len(self.kinds) if self.kinds else 0.0)
        return self.x[GLOBAL] + self.x[i]

    def _ability_var(self, kind: str) -> float:
        i = self._index(kind)
        if i is None:
            return self.P[GLOBAL][GLOBAL] + PRIOR_VAR_KIND
        return self.P[GLOBAL][GLOBAL] + 2 * self.P[GLOBAL][i] + self.P[i][i]

    def abilities(self) -> dict[str, float]:
        return {k: self.ability(k) for k in sorted(self.kinds)}

    # -- tasks ------------------------------------------------------------------------------------

    def predict(self, task_id: str, kind: str) -> float | None:
        """Predicted success of the solver on a rated task (None when the task has no rating yet)."""
        if task_id not in self.b:
            return None
        return sigmoid(self.ability(kind) - self.b[task_id])

    def uncertainty(self, task_id: str, kind: str) -> float | None:
        """The variance of the predicted logit θ_kind − b (None for an unrated task)."""
        if task_id not in self.b:
            return None
        return self._ability_var(kind) + self.v_b[task_id]

    def difficulty_for(self, kind: str, success: float) -> float:
        """The task difficulty b at which the solver's predicted success on `kind` is `success`."""
        return self.ability(kind) - logit(success)

    def request_error(self) -> tuple[float, float]:
        """(o, s²): how much easier than requested (in logits) new tasks of a kind the proposer was shown examples
        of came out on average, and the spread around that (the proposer's own error, without the binomial noise of
        8 attempts and the uncertainty of the ability they were asked against): fitted by EM on the logit-normal
        model over the last REQUEST_HISTORY such tasks (see the module docstring)."""
        n = len(self.request_errors)
        if n < 8:
            return 0.0, REQUEST_VAR
        if self._request_fit is not None and not self._request_stale:
            return self._request_fit
        o, s2 = self._request_fit or (0.0, REQUEST_VAR)
        for _ in range(6 if self._request_fit else 20):
            post = [posterior_logit(mu + o, s2 + av, passes, valid) + (mu, av)
                    for mu, passes, valid, av in self.request_errors]
            o = sum(m - mu for m, _, mu, _ in post) / n
            s2 = max(REQUEST_VAR_MIN, sum((m - mu - o) ** 2 + v - av for m, v, mu, av in post) / n)
        self._request_fit, self._request_stale = (o, s2), False
        return o, s2

    # -- updates ----------------------------------------------------------------------------------

    def advance(self, attempts: dict[str, float]) -> None:
        """The solver made `attempts[kind]` practice attempts on each kind (a negative count takes back part of an
        earlier look ahead): offset_kind += γ·attempts, and the covariance grows by the transition and by the
        process noise of the attempts made. The proposer's offset is refitted before it is next used."""
        self._request_stale = True
        n = len(self.x)
        total = max(0.0, sum(attempts.values()))
        a = [0.0] * n
        for kind, count in attempts.items():
            if (i := self._index(kind)) is not None:
                a[i] = float(count)
        for i in range(2, n):
            self.x[i] += a[i] * self.x[GAIN]
        # P ← F P Fᵀ, F = I + a·e_GAINᵀ (column GAIN of F is a, plus the identity)
        P = self.P
        PF = [[P[r][c] + P[r][GAIN] * a[c] for c in range(n)] for r in range(n)]  # P Fᵀ
        self.P = [[PF[r][c] + a[r] * PF[GAIN][c] for c in range(n)] for r in range(n)]  # F (P Fᵀ)
        self.P[GLOBAL][GLOBAL] += self.drift_global * total
        self.P[GAIN][GAIN] += DRIFT_GAIN * total
        for i in range(2, n):
            self.P[i][i] += self.drift_kind * total

    def request(self, kind: str, success: float, anchors: Sequence[str] = ()) -> dict:
        """What a new task of `kind` asked at `success` is expected to be on this scale, taken when it is asked
        for: its b, and the rated examples of its kind the proposer was shown (`anchors`) with their mean b then.
        Pass it to `observe` as `prior` with the task's first measurement."""
        rated = [t for t in anchors if t in self.b]
        return {"b": self.difficulty_for(kind, success), "anchors": rated,
                "anchor_b": sum(self.b[t] for t in rated) / len(rated) if rated else 0.0}

    def observe(self, task_id: str, kind: str, passes: int, valid: int, *, prior: dict | None = None) -> float | None:
        """Record a measurement; returns the residual per attempt (None for a task rated by this measurement alone,
        or n = 0).

        `prior`: for a new task, `request(...)` from when it was asked for (see the module docstring).
        """
        if valid <= 0:
            return None
        i = self._index(kind)
        if i is None:
            i = self._add_kind(kind)
        theta = self.ability(kind)
        anchors: list[str] = []
        if task_id not in self.b:
            smoothed = (passes + 0.5) / (valid + 1)
            if prior is None:
                self.b[task_id], self.v_b[task_id] = theta - logit(smoothed), 1.0 / (valid * smoothed * (1 - smoothed))
                return None
            offset, spread = self.request_error()
            anchors = [t for t in prior["anchors"] if t in self.b]
            if not anchors:
                mode, v = posterior_logit(theta - prior["b"] + offset, spread, passes, valid)
                self.b[task_id], self.v_b[task_id] = theta - mode, v
                return None
            self.request_errors.append((theta - prior["b"], passes, valid, self._ability_var(kind)))
            # b = (mean b of the anchors now) + (where it was asked relative to them) − o + ε, ε ~ N(0, s²)
            moved = sum(self.b[t] for t in anchors) / len(anchors) - prior["anchor_b"]
            self.b[task_id], self.v_b[task_id] = prior["b"] + moved - offset, spread
        l0 = theta - self.b[task_id]
        residual = (passes - valid * sigmoid(l0)) / valid
        n, m = len(self.x), len(anchors)
        Ph = [self.P[r][GLOBAL] + self.P[r][i] for r in range(n)]  # Cov(x, l)
        own = self.v_b[task_id] + (sum(self.v_b[t] for t in anchors) / (m * m) if m else 0.0)  # −Cov(b, l)
        S = Ph[GLOBAL] + Ph[i] + own
        mode, v = posterior_logit(l0, S, passes, valid)
        shift = mode - l0
        R = 1.0 / max(1e-9, 1.0 / v - 1.0 / S)  # the measurement's own variance
        for r in range(n):
            self.x[r] += Ph[r] * shift / S
        self.P = [[self.P[r][c] - Ph[r] * Ph[c] / (S + R) for c in range(n)] for r in range(n)]
        for t in anchors:  # a new task moves the examples it was written against too
            va = self.v_b[t] / m
            self.b[t] -= va * shift / S
            self.v_b[t] -= va * va / (S + R)
        self.b[task_id] -= own * shift / S
        self.v_b[task_id] = own - own * own / (S + R)
        return residual

    # -- state ------------------------------------------------------------------------------------

    def state(self) -> dict:
        return {"drift_kind": self.drift_kind, "kinds": self.kinds, "x": self.x, "P": self.P, "b": self.b,
                "v_b": self.v_b, "request_errors": [list(e) for e in self.request_errors]}

    @classmethod
    def from_state(cls, data: dict) -> Ratings:
        r = cls(data.get("drift_kind", DRIFT_KIND))
        if "x" in data:
            r.kinds, r.x, r.P = list(data["kinds"]), list(data["x"]), [list(row) for row in data["P"]]
        else:  # a state of the Elo version: its means, and the variances of a kind just seen
            r.x[GLOBAL] = data.get("global_theta", 0.0)
            for kind, offset in data.get("theta", {}).items():
                r.x[r._add_kind(kind)] = offset
        r.b = dict(data.get("b", {}))
        r.v_b = {t: data.get("v_b", {}).get(t, 0.5) for t in r.b}  # the Elo version: as if measured once at k = 8
        r.request_errors = deque((tuple(e) for e in data.get("request_errors", []) if len(e) == 4),
                                 maxlen=REQUEST_HISTORY)
        return r
