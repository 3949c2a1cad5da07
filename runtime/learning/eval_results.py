"""What `loopwright eval` (runtime/learning/evaluate.py) makes of its runs: statistics and reports.

Scored: the test split. Per arm: success rate (task status succeeded) with a
bootstrap 95% interval, tokens and cost per task (reflection included), model
turns per solved task (the agent's turns, not reflection calls), and the
difference to the `none` arm (or the first arm listed) with a paired bootstrap
95% interval and a p-value.

The unit of resampling is the task: runs of one task under several seeds and
orders are not independent (a scripted model gives the same result for every
seed; a real model's runs of one task share its difficulty), so the bootstrap
is clustered: tasks are drawn with replacement, then each drawn task's
(seed, order) runs (pairs, for a difference) with replacement within it
(2,000 resamples, fixed seed, percentile intervals). The p-value is an exact
sign-flip permutation test on the per-task mean differences (with one run a
task and 0/1 outcomes, the two-sided sign test: 4 tasks all better give p =
0.125). Below MIN_TASKS paired tasks the headline says there are not enough
tasks to tell, whatever the interval: a percentile bootstrap over 4 tasks
that all moved the same way is [+100, +100] and means nothing.

The report is report.md, results.csv (the rows) and chart.png when matplotlib
is installed; the CLI prints `summary_table` and `headlines`.
"""

from __future__ import annotations

import csv
import math
import random
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

RESAMPLES = 2000
BOOTSTRAP_SEED = 0
MIN_TASKS = 8  # fewer paired test tasks: "not enough tasks to tell" (an exact p is then >= 2/2^7 at best)
ALPHA = 0.05
EXACT_SUMS = 200_000  # the permutation test's exact distribution is given up (for sampling) beyond this many sums
SCRIPTED_NOTE = "scripted model — not a real model"


@dataclass
class Row:
    """One task run in one stream."""

    arm: str
    seed: int
    order: int
    position: int
    phase: str  # train | test | retest
    task: str
    category: str
    status: str
    succeeded: bool
    attempts: int
    turns: int  # the agent's model calls
    reflection_calls: int
    input_tokens: int
    output_tokens: int
    tokens: int
    reflection_tokens: int
    cost_usd: float
    seconds: float
    lessons_recalled: int
    lessons_after: int | None  # active project lessons in the stream's store after this task (None: no table)
    reason: str

# -- statistics -----------------------------------------------------------------------------------


def _quantile(sorted_values: list[float], q: float) -> float:
    pos = q * (len(sorted_values) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


def bootstrap(clusters: Sequence[Sequence[Any]], statistic: Callable[[Sequence[Any]], float | None], *,
              resamples: int = RESAMPLES, seed: int = BOOTSTRAP_SEED,
              level: float = 0.95) -> tuple[float | None, float | None, float | None]:
    """(estimate, low, high): a percentile bootstrap interval of `statistic` over the items of `clusters` (tasks),
    resampled nested: clusters with replacement, then items with replacement within each drawn cluster.

    Pass pairs (arm value, baseline value) for a paired interval: the pairs are resampled together. Resamples
    where the statistic is undefined (None) are left out; with none left the interval is (None, None).
    """
    clusters = [c for c in clusters if c]
    point = statistic([x for c in clusters for x in c]) if clusters else None
    if point is None:
        return None, None, None
    rng = random.Random(seed)

    def resample() -> list[Any]:
        return [x for c in rng.choices(clusters, k=len(clusters)) for x in rng.choices(c, k=len(c))]

    values = sorted(v for v in (statistic(resample()) for _ in range(resamples)) if v is not None)
    if not values:
        return point, None, None
    tail = (1 - level) / 2
    return point, _quantile(values, tail), _quantile(values, 1 - tail)


def sign_flip_p(differences: Sequence[float], *, resamples: int = 20_000, seed: int = BOOTSTRAP_SEED) -> float | None:
    """Two-sided p-value of the paired permutation test: the share of the 2^n sign flips of the per-task
    `differences` whose sum is at least as far from 0 as the observed one (exact; sampled, with a fixed seed, when
    the flips' sums are too many to count). None without differences."""
    if not differences:
        return None
    observed = abs(sum(differences)) - 1e-9
    sums: dict[float, int] = {0.0: 1}
    for d in differences:
        grown: dict[float, int] = {}
        for total, ways in sums.items():
            for step in (d, -d):
                key = round(total + step, 9)
                grown[key] = grown.get(key, 0) + ways
        sums = grown
        if len(sums) > EXACT_SUMS:
            rng = random.Random(seed)
            hits = sum(abs(sum(x if rng.random() < 0.5 else -x for x in differences)) >= observed
                       for _ in range(resamples))
            return (hits + 1) / (resamples + 1)
    return sum(ways for total, ways in sums.items() if abs(total) >= observed) / 2 ** len(differences)


def _by_task(items: Sequence[tuple[str, Any]]) -> list[list[Any]]:
    """Items grouped by their task (the clusters of the bootstrap), in first-seen order."""
    groups: dict[str, list[Any]] = {}
    for task, item in items:
        groups.setdefault(task, []).append(item)
    return list(groups.values())


def _mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


def mean_difference(pairs: Sequence[tuple[float, float]]) -> float | None:
    """mean(arm) - mean(baseline) over (arm, baseline) pairs."""
    if not pairs:
        return None
    return sum(a - b for a, b in pairs) / len(pairs)


def _per_solved(rows: Sequence[Row]) -> float | None:
    solved = [r for r in rows if r.succeeded]
    return sum(r.turns for r in solved) / len(solved) if solved else None


def _turns_difference(pairs: Sequence[tuple[Row, Row]]) -> float | None:
    a, b = _per_solved([p[0] for p in pairs]), _per_solved([p[1] for p in pairs])
    return None if a is None or b is None else a - b


METRICS: dict[str, Callable[[Row], float]] = {
    "success_rate": lambda r: 1.0 if r.succeeded else 0.0,
    "tokens_per_task": lambda r: float(r.tokens),
    "cost_per_task": lambda r: r.cost_usd,
}


def _ci(result: tuple[float | None, float | None, float | None], p: float | None = None) -> dict:
    point, lo, hi = result
    return {"estimate": point, "ci95": [lo, hi] if lo is not None else None, "p": p}


def _last(rows: list[Row], arm: str, seed: int, order: int) -> int | None:
    """Active lessons after the stream's last task (before the re-tests, which do not learn)."""
    stream = [r for r in rows if (r.arm, r.seed, r.order) == (arm, seed, order) and r.phase != "retest"]
    return stream[-1].lessons_after if stream else None


def summarize(rows: list[Row], arms: list[str], *, resamples: int = RESAMPLES) -> dict:
    """Per arm: the test split scored (with intervals and paired differences to the baseline), train, forgetting."""
    baseline = "none" if "none" in arms else arms[0]
    keyed = {(r.arm, r.seed, r.order, r.task): r for r in rows if r.phase == "test"}
    out: dict[str, Any] = {"baseline": baseline, "resamples": resamples, "bootstrap_seed": BOOTSTRAP_SEED,
                           "unit": "task", "min_tasks": MIN_TASKS, "arms": {}, "forgetting": []}
    for arm in arms:
        test = [r for r in rows if r.arm == arm and r.phase == "test"]
        train = [r for r in rows if r.arm == arm and r.phase == "train"]
        rate = bootstrap(_by_task([(r.task, METRICS["success_rate"](r)) for r in test]), _mean, resamples=resamples)
        entry: dict[str, Any] = {
            "test": {"tasks": len(test), "solved": sum(r.succeeded for r in test), "success_rate": rate[0],
                     "success_ci95": [rate[1], rate[2]] if rate[1] is not None else None,
                     "tokens_per_task": _mean([r.tokens for r in test]),
                     "cost_per_task": _mean([r.cost_usd for r in test]),
                     "turns_per_solved": _per_solved(test),
                     "reflection_tokens_per_task": _mean([r.reflection_tokens for r in test]),
                     "lessons_recalled_per_task": _mean([r.lessons_recalled for r in test])},
            "train": {"tasks": len(train), "solved": sum(r.succeeded for r in train),
                      "success_rate": _mean([METRICS["success_rate"](r) for r in train]),
                      "tokens_per_task": _mean([r.tokens for r in train])},
            "lessons_at_end": [_last(rows, arm, seed, order) for seed, order in
                               dict.fromkeys((r.seed, r.order) for r in rows if r.arm == arm)],
        }
        if arm != baseline:
            pairs = [(r, keyed[(baseline, r.seed, r.order, r.task)]) for r in test
                     if (baseline, r.seed, r.order, r.task) in keyed]
            by_task = _by_task([(a.task, (a, b)) for a, b in pairs])
            vs: dict[str, Any] = {"pairs": len(pairs), "tasks": len(by_task)}
            for name, metric in METRICS.items():
                diffs = [[(metric(a), metric(b)) for a, b in task] for task in by_task]
                per_task = [d for task in diffs if (d := mean_difference(task)) is not None]
                vs[name] = _ci(bootstrap(diffs, mean_difference, resamples=resamples), sign_flip_p(per_task))
            vs["turns_per_solved"] = _ci(bootstrap(by_task, _turns_difference, resamples=resamples))
            entry["vs_baseline"] = vs
        out["arms"][arm] = entry
    for arm in arms:
        firsts: dict[tuple[str, str], list[tuple[Row, Row]]] = {}
        for r in rows:
            if r.arm != arm or r.phase != "retest":
                continue
            first = next(x for x in rows if x.arm == arm and x.seed == r.seed and x.order == r.order
                         and x.task == r.task and x.phase != "retest")
            firsts.setdefault((r.category, r.task), []).append((first, r))
        for (category, task), pairs in firsts.items():
            out["forgetting"].append({
                "arm": arm, "category": category, "task": task, "streams": len(pairs),
                "first_success": _mean([float(f.succeeded) for f, _ in pairs]),
                "retest_success": _mean([float(r.succeeded) for _, r in pairs]),
                "forgot": sum(f.succeeded and not r.succeeded for f, r in pairs),
                "gained": sum(r.succeeded and not f.succeeded for f, r in pairs)})
    return out


# -- reports --------------------------------------------------------------------------------------


def _pct(x: float | None) -> str:
    return "—" if x is None else f"{100 * x:.0f}%"


def _num(x: float | None, digits: int = 0) -> str:
    return "—" if x is None else f"{x:,.{digits}f}"


def _usd(x: float | None) -> str:
    return "—" if x is None else f"${x:.4f}"


def _signed(v: float, fmt: Callable[[float], str]) -> str:
    return ("+" if v > 0 else "") + fmt(v)


def _diff(d: dict | None, fmt: Callable[[float], str]) -> str:
    """'+50 pp [+20 pp, +80 pp] p=0.012': a difference, its interval and its p-value (when it has one)."""
    if not d or d.get("estimate") is None:
        return "—"
    ci = d.get("ci95")
    return (_signed(d["estimate"], fmt) + (f" [{_signed(ci[0], fmt)}, {_signed(ci[1], fmt)}]" if ci else "")
            + (f" p={_p(d['p'])}" if d.get("p") is not None else ""))


def _p(p: float) -> str:
    return f"{p:.3f}" if p >= 0.001 else "<0.001"


def _pp(v: float) -> str:
    return f"{100 * v:.0f} pp"


def model_line(meta: dict) -> str:
    line = (f"provider {meta['provider']}, model {meta['model']}"
            + (f" at {meta['base_url']}" if meta.get('base_url') else ""))
    if meta["provider"] == "scripted":
        line += (f" — **{SCRIPTED_NOTE}**: every turn and reflection reply comes from the task's script.json, "
                 "so these numbers show the machinery (recall, placebo, reflection, statistics), not an agent's skill")
    return line


def headlines(results: dict) -> list[str]:
    """One sentence per arm: better, worse or no clear difference in test success than the baseline."""
    summary = results["summary"]
    base = summary["baseline"]
    out = []
    for arm in results["meta"]["arms"]:
        vs = summary["arms"][arm].get("vs_baseline")
        if vs is None:
            continue
        d = vs["success_rate"]
        if d["estimate"] is None or d["ci95"] is None:
            out.append(f"{arm}: no paired test tasks with {base} to compare")
            continue
        lo, hi = d["ci95"]
        tasks = vs.get("tasks", 0)
        est = _signed(d["estimate"], _pp)
        ci = (f"95% CI {_signed(lo, _pp)} to {_signed(hi, _pp)} over {tasks} tasks"
              + (f", p = {_p(d['p'])}" if d.get("p") is not None else ""))
        significant = d.get("p") is not None and d["p"] < ALPHA
        if tasks < MIN_TASKS:
            out.append(f"{arm}: not enough tasks to tell ({tasks} paired test tasks, at least {MIN_TASKS} needed); "
                       f"{est} test success vs {base} ({ci})")
        elif lo > 0 and significant:
            out.append(f"{arm}: better than {base}, {est} test success ({ci})")
        elif hi < 0 and significant:
            out.append(f"{arm}: worse than {base}, {est} test success ({ci})")
        else:
            out.append(f"{arm}: no clear difference from {base} in test success ({est}, {ci})")
    return out


def render_report(results: dict) -> str:
    meta, summary = results["meta"], results["summary"]
    base = summary["baseline"]
    lines = [f"# loopwright eval: {meta['suite']}", ""] + ([meta["description"], ""] if meta.get("description") else [])
    lines += [f"Suite `{meta['suite_path']}`: {meta['tasks']} tasks ({meta['train_tasks']} train, "
              f"{meta['test_tasks']} test) in {len(meta['categories'])} categories ({', '.join(meta['categories'])}). "
              f"Arms {', '.join(meta['arms'])}; {meta['seeds']} seed(s) x {meta['orders']} order(s); "
              f"{meta['started']}, {meta['seconds']:.1f} s, streams run one after another.", "",
              f"Model: {model_line(meta)}.", ""]
    lines += [f"- {h}" for h in headlines(results)] + [""]
    lines += ["## Test split (scored)", "",
              f"Differences are arm − {base}, paired over (seed, order, task). Unit of resampling: the task — a "
              f"bootstrap 95% interval ({summary['resamples']:,} resamples) draws tasks, then each drawn task's "
              f"(seed, order) pairs within it; p is an exact sign-flip permutation test on the per-task mean "
              f"differences. Fewer than {MIN_TASKS} paired tasks are not enough to tell.", "",
              f"| arm | success | 95% CI | Δ success vs {base} | tokens/task | Δ tokens | cost/task | turns/solved "
              f"| Δ turns/solved | lessons recalled/task |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for arm in meta["arms"]:
        e = summary["arms"][arm]
        t, vs = e["test"], e.get("vs_baseline")
        ci = t["success_ci95"]
        lines.append(
            f"| {arm} | {_pct(t['success_rate'])} ({t['solved']}/{t['tasks']}) | "
            f"{f'{_pct(ci[0])}–{_pct(ci[1])}' if ci else '—'} | "
            f"{_diff(vs and vs['success_rate'], _pp) if vs else '(baseline)'} | {_num(t['tokens_per_task'])} | "
            f"{_diff(vs and vs['tokens_per_task'], lambda v: f'{v:,.0f}') if vs else ''} | "
            f"{_usd(t['cost_per_task'])} | {_num(t['turns_per_solved'], 1)} | "
            f"{_diff(vs and vs['turns_per_solved'], lambda v: f'{v:.1f}') if vs else ''} | "
            f"{_num(t['lessons_recalled_per_task'], 1)} |")
    lines += ["", "## Train split (run by every arm, not scored)", "",
              "| arm | success | tokens/task | active lessons at the end of each stream |", "|---|---|---|---|"]
    for arm in meta["arms"]:
        e = summary["arms"][arm]
        lessons = ", ".join("—" if n is None else str(n) for n in e["lessons_at_end"])
        lines.append(f"| {arm} | {_pct(e['train']['success_rate'])} ({e['train']['solved']}/{e['train']['tasks']}) | "
                     f"{_num(e['train']['tokens_per_task'])} | {lessons} |")
    lines += ["", "## Forgetting: the first task of each category, re-run after the stream with memory frozen", "",
              "| arm | category | task | first run | re-test | forgot | gained |", "|---|---|---|---|---|---|---|"]
    for f in summary["forgetting"]:
        lines.append(f"| {f['arm']} | {f['category']} | {f['task']} | {_pct(f['first_success'])} | "
                     f"{_pct(f['retest_success'])} | {f['forgot']} | {f['gained']} |")
    lines += ["", "## Notes", "",
              "- Success is the task's status: its acceptance check passed within its attempts.",
              "- Tokens and cost include the reflection calls; turns are the agent's model calls only.",
              "- Seeds are repetitions: the model's sampling is not seeded"
              + (" (a scripted model answers the same for every seed)." if meta["provider"] == "scripted" else "."),
              "- Orders: order 0 is suite order; orders 1.. shuffle each split by seed. Every arm runs the same "
              "streams, train split first.",
              f"- Rows: results.csv ({len(results['rows'])} runs); everything: results.json.",
              f"- Chart: {meta['chart']}."]
    return "\n".join(lines) + "\n"


def write_csv(rows: list[Row], path: Path) -> None:
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=[fl.name for fl in fields(Row)])
        w.writeheader()
        for r in rows:
            w.writerow(asdict(r))


def write_chart(results: dict, path: Path) -> str:
    """A PNG of test success per arm with its 95% interval; said in words when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except Exception:  # noqa: BLE001 — an optional extra: no chart, and the report says why
        return "none (matplotlib is not installed: `pip install matplotlib` for chart.png)"
    arms = results["meta"]["arms"]
    tests = [results["summary"]["arms"][a]["test"] for a in arms]
    rates = [100 * (t["success_rate"] or 0) for t in tests]
    errs = [[r - 100 * (t["success_ci95"] or [0, 0])[0] for r, t in zip(rates, tests)],
            [100 * (t["success_ci95"] or [0, 0])[1] - r for r, t in zip(rates, tests)]]
    fig, ax = plt.subplots(figsize=(1.6 + 1.3 * len(arms), 3.6))
    ax.bar(arms, rates, yerr=errs, capsize=6, color=["#999999" if a == "none" else "#4477aa" for a in arms])
    ax.set_ylim(0, 105)
    ax.set_ylabel("test success (%)")
    title = f"{results['meta']['suite']}: success by memory arm (95% CI)"
    if results["meta"]["provider"] == "scripted":
        title += f"\n{SCRIPTED_NOTE}"
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return f"{path.name}"


def summary_table(results: dict) -> str:
    """The short table the CLI prints."""
    meta, summary = results["meta"], results["summary"]
    base = summary["baseline"]
    lines = [f"eval {meta['suite']}: {meta['test_tasks']} test task(s) x {meta['seeds']} seed(s) x "
             f"{meta['orders']} order(s); {meta['provider']}/{meta['model']}"
             + (f" — {SCRIPTED_NOTE}" if meta["scripted"] else ""),
             "intervals resample tasks (then seeds and orders within a task); p: sign-flip test over tasks",
             f"{'arm':<9}{'success':>9}  {'Δ vs ' + base + ' [95% CI] p':<36}{'tokens/task':>12}{'cost/task':>11}"
             f"{'turns/solved':>14}"]
    for arm in meta["arms"]:
        e = summary["arms"][arm]
        t, vs = e["test"], e.get("vs_baseline")
        lines.append(f"{arm:<9}{_pct(t['success_rate']):>9}  {(_diff(vs['success_rate'], _pp) if vs else '—'):<36}"
                     f"{_num(t['tokens_per_task']):>12}{_usd(t['cost_per_task']):>11}"
                     f"{_num(t['turns_per_solved'], 1):>14}")
    return "\n".join(lines)
