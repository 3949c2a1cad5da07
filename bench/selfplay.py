"""Self-play controller against three baselines on simulated solver populations, measured in one run.

SIMULATION: a simulated solver population and scripted proposers
(runtime/learning/selfplay/simulation.py), no model. Every method runs through the same engine,
gates and simulated domain; they differ only in how tasks are asked for and
chosen:

- `controlled` (ours): ratings (1-PL IRT, Kalman-tracked), bracketing examples, the
  controller (mix, feed-forward request, logit bias) and the replay buffer,
  with the model-blind proposer (`blind`: it reads the rates it is shown,
  never a difficulty; simulation.py);
- `omniscient`: the same with the old proposer that reads the examples' true
  difficulty (a baseline of what perfect knowledge of the examples buys);
- `fixed`: every task at one fixed difficulty (δ = 0), no replay;
- `random`: difficulty U(−3, 3), no replay;
- `azr`: AZR-style: new tasks like random earlier ones that passed the
  0 < passes < k filter, shown without rates; no ratings, no replay.

The figures quoted below and in ratings.py, controller.py and engine.py were
measured with the omniscient proposer, before the blind one existed (issue
20); the `omniscient` rows reproduce them, the `controlled` rows are the
figures that stand for a model.

Measured (seeds 0-4, 16 x 8, 50 rounds; static / learning / drifting):
the blind proposer's mean |s̄ − 0.5| 0.044 / 0.042 / 0.046, wasted attempts
0.48 / 0.32 / 0.34 of the fixed baseline's, no padded or duplicate task
through, held-out 0.05 → 0.05 / 0.15 → 0.73 / 0.14 → 0.73 (slope per round
+0.0003 / +0.015 / +0.016); the omniscient one's 0.034 / 0.038 / 0.041 and
0.29 / 0.26 / 0.21 (its held-out tasks come out easier than asked: the
learning population's reached 0.95). Before the ladder (held-out tasks
drafted from the practice stream at the target) the learning population's
held-out went to 0.95-1.00.

Populations: static, learning, drifting (see runtime/learning/selfplay/simulation.py); 5 seeds
each; 50 rounds of 16 tasks x k = 8 attempts, the same for every method.
Reported per population and method (mean over seeds, ± sd): mean |s̄ − 0.5|
over rounds 10-50 (goal <= 0.05), the share of attempts wasted on tasks at 0
or k (goal: at most half the fixed baseline's), rounds to the band (|s̄ − 0.5|
<= 0.1 for 3 rounds in a row; median over seeds, and how many never), and the
share of padded or duplicate proposals that got through the gates (goal 0).
The `floor` line is what a perfect controller would score: every task exactly
at p = 0.5, so |s̄ − 0.5| is the binomial noise of B·k attempts alone. No
assertions.

Why 16 tasks a round (the default of `loopwright selfplay` too): at 8 tasks
x 8 attempts the floor is E|s̄ − 0.5| = 0.050, the goal itself, so no
controller could meet it; at 16 it is 0.035. More tasks lower the floor
further (24: 0.029, 32: 0.025) and help on the static and learning
populations (the controller scored 0.039 / 0.041 at 24 and 0.036 / 0.039 at
32, seeds 100-109) but not on the drifting one (0.051, 0.055: it is limited
by how fast a rating can follow a solver that drifts per attempt, see
runtime/selfplay/ratings.py), while a real round costs B·k solver runs.

Waves (runtime/selfplay/engine.py): `controlled` asks for and solves a round
in 4 waves of about 4 tasks, each after the earlier waves' outcomes moved the
ratings (the default of `loopwright selfplay` and the daemon's practice mode
too); the baselines keep one wave, as they were measured before (AZR does not
re-plan within a batch). The figures above at 24 and 32 tasks are of one-wave
rounds. With 4 waves (and the ratings' drift at 6e-4 per attempt, which pays
only with waves) the controlled method scored, seeds 100-119, 0.038 / 0.036 /
0.042 against 0.0485 / 0.0475 / 0.0543 in one wave; part of that is later
waves answering earlier waves' binomial noise, which can take |s̄ − 0.5|
below the `floor` line (a floor only for tasks whose p does not depend on
the round's earlier outcomes): see engine.py.

    python -m loopwright.bench.selfplay [--quick] [--seeds 5] [--rounds 50] [--batch 16] [--jobs N] [--out DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import os
import random
import statistics
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from loopwright.runtime.learning.selfplay.engine import Engine, SelfPlayConfig
from loopwright.runtime.learning.selfplay.report import summary
from loopwright.runtime.learning.selfplay.simulation import (
    SIMULATION_NOTE,
    Population,
    SimDomain,
    SimProposer,
    SimSolver,
)

METHODS = {
    "controlled": ("blind", {}),
    "omniscient": ("omniscient", {}),
    "fixed": ("fixed", {"replay": False, "examples": "none", "control": False, "waves": 1}),
    "random": ("random", {"replay": False, "examples": "none", "control": False, "waves": 1}),
    "azr": ("reference", {"replay": False, "examples": "random_mid", "control": False, "waves": 1}),
}
POPULATIONS = ("static", "learning", "drifting")
HELDOUT_LADDER = (0.25, 0.005)  # the learning population gains ~5 logits in 50 rounds (engine.py)


def one_run(population: str, method: str, seed: int, rounds: int, batch: int, k: int) -> dict:
    mode, flags = METHODS[method]
    proposer = SimProposer(mode, seed)
    solver = SimSolver(Population(population, seed))
    engine = Engine(SimDomain(), proposer, solver, SelfPlayConfig(seed=seed, batch=batch, k=k,
                                                                  heldout_success=HELDOUT_LADDER, **flags),
                    simulated=True)
    records = asyncio.run(engine.run(rounds))
    s = summary(records, lo=10, hi=rounds)
    bad = proposer.emitted["padded"] + proposer.emitted["duplicate"]
    return {"population": population, "method": method, "seed": seed, "rounds": len(records),
            "mean_gap": s["mean_gap"], "wasted_share": s["wasted_share"], "rounds_to_band": s["rounds_to_band"],
            "bad_proposals": bad, "bad_through": s["bad_accepted"],
            "bad_through_share": s["bad_accepted"] / bad if bad else 0.0,
            "heldout_first": s["heldout_first"], "heldout_last": s["heldout_last"], "heldout_slope": s["heldout_slope"],
            "accepted": s["accepted"], "proposals": s["proposals"], "rejected": s["rejected"]}


def _one_run(args: tuple) -> dict:
    return one_run(*args)


def floor(batch: int, k: int, rounds: int = 20000, seed: int = 0) -> float:
    """E|s̄ − 0.5| when every attempt succeeds with probability exactly 0.5 (binomial noise only)."""
    rng = random.Random(seed)
    n = batch * k
    return statistics.mean(abs(sum(rng.random() < 0.5 for _ in range(n)) / n - 0.5) for _ in range(rounds))


def _ms(values: list[float]) -> str:
    if not values:
        return "—"
    sd = statistics.pstdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.3f} ± {sd:.3f}"


def table(rows: list[dict], batch: int, k: int, rounds: int, seeds: int) -> list[str]:
    out = [SIMULATION_NOTE, f"{len(POPULATIONS)} populations x {seeds} seeds x {len(METHODS)} methods; {rounds} rounds "
           f"of {batch} tasks x k = {k}; floor (every task at p = 0.5) E|s̄ − 0.5| = {floor(batch, k):.3f}", "",
           f"{'population':<10} {'method':<11} {'proposer':<10} {'|s̄−0.5| r10-' + str(rounds):>18} {'wasted':>15} "
           f"{'vs fixed':>9} {'to band (med)':>14} {'never':>6} {'bad through':>12} {'held-out first→last':>20} "
           f"{'slope/round':>12}",
           f"{'':<10} {'goal':<11} {'':<10} {'<= 0.05':>18} {'':>15} {'<= 0.50':>9} {'':>14} {'':>6} {'0':>12}"]
    for pop in POPULATIONS:
        fixed = [r["wasted_share"] for r in rows if r["population"] == pop and r["method"] == "fixed"]
        fixed_mean = statistics.mean(fixed) if fixed else None
        for method in METHODS:
            rs = [r for r in rows if r["population"] == pop and r["method"] == method]
            if not rs:
                continue
            gaps = [r["mean_gap"] for r in rs if r["mean_gap"] is not None]
            waste = [r["wasted_share"] for r in rs]
            bands = [r["rounds_to_band"] for r in rs if r["rounds_to_band"] is not None]
            never = sum(1 for r in rs if r["rounds_to_band"] is None)
            bad = sum(r["bad_through"] for r in rs)
            bad_all = sum(r["bad_proposals"] for r in rs)
            ratio = statistics.mean(waste) / fixed_mean if fixed_mean else None
            held = [(r["heldout_first"], r["heldout_last"]) for r in rs if r["heldout_first"] is not None]
            held_s = (f"{statistics.mean(a for a, _ in held):.2f} → {statistics.mean(b for _, b in held):.2f}"
                      if held else "—")
            slopes = [r["heldout_slope"] for r in rs if r["heldout_slope"] is not None]
            out.append(f"{pop:<10} {method:<11} {METHODS[method][0]:<10} {_ms(gaps):>18} {_ms(waste):>15} "
                       f"{(f'{ratio:.2f}' if ratio is not None else '—'):>9} "
                       f"{(str(statistics.median(bands)) if bands else '—'):>14} {never:>6} "
                       f"{f'{bad}/{bad_all}':>12} {held_s:>20} "
                       f"{(f'{statistics.mean(slopes):+.4f}' if slopes else '—'):>12}")
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="2 seeds, 30 rounds")
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=50)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--k", type=int, default=8)
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="runs in parallel (default: CPUs)")
    ap.add_argument("--out", help="write rows.json, rows.csv and table.txt here")
    args = ap.parse_args(argv)
    seeds, rounds = (2, 30) if args.quick else (args.seeds, args.rounds)
    t0 = time.perf_counter()
    runs = [(pop, method, seed, rounds, args.batch, args.k)
            for pop in POPULATIONS for method in METHODS for seed in range(seeds)]
    if args.jobs > 1:
        with ProcessPoolExecutor(args.jobs) as pool:
            rows = list(pool.map(_one_run, runs))
    else:
        rows = [one_run(*r) for r in runs]
    lines = table(rows, args.batch, args.k, rounds, seeds)
    lines.append(f"\n({len(rows)} runs in {time.perf_counter() - t0:.0f} s; `bad through`: padded or duplicate "
                 f"proposals accepted / made; held-out: mean success on never-practised tasks asked on a ladder "
                 f"of predicted success {HELDOUT_LADDER[0]} → {HELDOUT_LADDER[1]}, first and last re-run of the "
                 f"whole set, and its least-squares slope per round over those re-runs; proposer: the simulated "
                 f"proposer, `blind` sees only the rates a model is shown)")
    print("\n".join(lines))
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "rows.json").write_text(json.dumps(rows, indent=2, default=str))
        with (out / "rows.csv").open("w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=[k for k in rows[0] if k != "rejected"], extrasaction="ignore")
            w.writeheader()
            w.writerows(rows)
        (out / "table.txt").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
