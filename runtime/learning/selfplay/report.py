"""Self-play reports: the summary numbers of a run, and history.json / rounds.csv / report.md for plots and people.

Per round (engine.py): accepted and rejected by reason, the success-rate
histogram, |s̄ − target|, wasted attempts (on tasks at 0 or k), the length
trend, clusters, the held-out score. The summary (also what bench/selfplay.py
tabulates): mean |s̄ − target| over rounds 10-50, the share of attempts
wasted, rounds to reach the band (the first round from which |s̄ − target| <=
0.1 holds for 3 rounds in a row), the held-out score at the first and last
re-run of the whole set and its least-squares slope per round, rejections.
"""

from __future__ import annotations

import csv
import json
import statistics
from collections import Counter
from pathlib import Path

from loopwright.runtime.learning.selfplay.domain import REASONS
from loopwright.runtime.learning.selfplay.engine import BINS

SIMULATION_BANNER = "SIMULATION — a simulated solver population and a scripted proposer, not a model"
BAND, HOLD = 0.1, 3


def rounds_to_band(rounds: list[dict], target: float, band: float = BAND, hold: int = HOLD) -> int | None:
    """The first round from which |s̄ − target| <= band holds for `hold` rounds in a row (None if never)."""
    run = 0
    for i, r in enumerate(rounds):
        s = r.get("s_bar")
        run = run + 1 if s is not None and abs(s - target) <= band else 0
        if run >= hold:
            return rounds[i - hold + 1]["round"]
    return None


def summary(rounds: list[dict], *, lo: int = 10, hi: int = 50) -> dict:
    """The run's numbers (see the module docstring)."""
    if not rounds:
        return {"rounds": 0}
    target = rounds[-1].get("target", 0.5)
    window = [r["gap"] for r in rounds if lo <= r["round"] <= hi and r.get("gap") is not None]
    attempts = sum(r.get("attempts", 0) for r in rounds)
    rejected: Counter = Counter()
    for r in rounds:
        rejected.update(r.get("rejected", {}))
    full = max((r.get("heldout_tasks", 0) for r in rounds if r.get("heldout") is not None), default=0)
    whole = [(x, y) for r in rounds if r.get("heldout") is not None and r.get("heldout_tasks", 0) == full
             for x, y in [(r["round"], r["heldout"])]]
    return {
        "rounds": len(rounds), "target": target, "simulated": any(r.get("simulated") for r in rounds),
        "mean_gap": statistics.mean(window) if window else None, "gap_window": [lo, hi],
        "mean_gap_all": statistics.mean(g) if (g := [r["gap"] for r in rounds if r.get("gap") is not None]) else None,
        "wasted_share": sum(r.get("wasted", 0) for r in rounds) / attempts if attempts else 0.0,
        "rounds_to_band": rounds_to_band(rounds, target),
        "proposals": sum(r.get("proposals", 0) for r in rounds),
        "accepted": sum(r.get("accepted", 0) for r in rounds),
        "rejected": {k: rejected[k] for k in REASONS if rejected[k]},
        "bad_accepted": sum(r.get("bad_accepted", 0) for r in rounds),
        "heldout_first": whole[0][1] if whole else None, "heldout_last": whole[-1][1] if whole else None,
        "heldout_slope": slope(whole),
        "tokens": sum(r.get("tokens", 0) for r in rounds), "cost_usd": sum(r.get("cost_usd", 0.0) for r in rounds),
    }


def slope(points: list[tuple[float, float]]) -> float | None:
    """The least-squares slope of y on x (None for fewer than two distinct x)."""
    if len({x for x, _ in points}) < 2:
        return None
    mx, my = statistics.mean(x for x, _ in points), statistics.mean(y for _, y in points)
    return sum((x - mx) * (y - my) for x, y in points) / sum((x - mx) ** 2 for x, _ in points)


CSV_FIELDS = ("round", "simulated", "accepted", "replayed", "proposals", "s_bar", "s_new", "gap", "target",
              "requested_success", "c", "c_after", "attempts", "wasted", "wasted_share", "reward_mean",
              "length_median_new", "clusters", "largest_cluster_share", "heldout", "buffer", "bad_accepted",
              "tokens", "cost_usd", "seconds")


def csv_row(r: dict) -> dict:
    row = {k: r.get(k) for k in CSV_FIELDS}
    row |= {f"rejected_{k}": r.get("rejected", {}).get(k, 0) for k in REASONS}
    row |= {f"hist_{b}": r.get("histogram", {}).get(b, 0) for b in BINS}
    return row


def _f(x, digits: int = 2, pct: bool = False) -> str:
    if x is None:
        return "—"
    return f"{x:.0%}" if pct else f"{x:.{digits}f}"


def history_table(rounds: list[dict]) -> str:
    """The per-round table (terminal and markdown)."""
    lines = ["| round | new | replayed | rejected | s̄ | abs(s̄−target) | wasted | reward | length (new) | clusters "
             "| held-out | histogram " + " ".join(BINS) + " |",
             "|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in rounds:
        rej = ", ".join(f"{k} {v}" for k, v in r.get("rejected", {}).items()) or "—"
        hist = " ".join(str(r.get("histogram", {}).get(b, 0)) for b in BINS)
        lines.append(f"| {r['round']} | {r['accepted']} | {r['replayed']} | {rej} | {_f(r.get('s_bar'))} | "
                     f"{_f(r.get('gap'))} | {_f(r.get('wasted_share'), pct=True)} | {_f(r.get('reward_mean'))} | "
                     f"{_f(r.get('length_median_new'), 0)} | {r.get('clusters', 0)} | {_f(r.get('heldout'))} | "
                     f"{hist} |")
    return "\n".join(lines)


def summary_lines(s: dict) -> list[str]:
    if not s.get("rounds"):
        return ["no rounds played yet"]
    rej = ", ".join(f"{k} {v}" for k, v in s["rejected"].items()) or "none"
    lo, hi = s["gap_window"]
    return [f"rounds {s['rounds']}, target {s['target']:.2f}; proposals {s['proposals']}, accepted {s['accepted']}, "
            f"rejected: {rej}",
            f"mean abs(s̄ − target) over rounds {lo}-{hi}: {_f(s['mean_gap'], 3)} "
            f"(all rounds {_f(s['mean_gap_all'], 3)});"
            f" wasted attempts {_f(s['wasted_share'], pct=True)}; rounds to the band (±{BAND}): "
            f"{s['rounds_to_band'] if s['rounds_to_band'] is not None else 'not reached'}",
            f"held-out: first {_f(s['heldout_first'])}, last {_f(s['heldout_last'])}, slope per round "
            f"{_f(s.get('heldout_slope'), 4)} (re-runs of the whole set); tokens {s['tokens']:,.0f}, "
            f"cost ${s['cost_usd']:.2f}"]


def render_markdown(meta: dict, rounds: list[dict]) -> str:
    s = summary(rounds)
    head = [f"# Self-play: {meta.get('domain', '?')}", ""]
    if s.get("simulated"):
        head += [f"**{SIMULATION_BANNER}.**", ""]
    head += [f"- {line}" for line in summary_lines(s)]
    head += ["", "Files: history.json (everything), rounds.csv (one row per round), measurements.jsonl (one line "
             "per task measured).", "", history_table(rounds), ""]
    return "\n".join(head)


def write_report(folder: Path, out: Path | None = None) -> dict:
    """Read a self-play folder's history; write history.json, rounds.csv and report.md to `out` (default: it)."""
    out = out or folder
    out.mkdir(parents=True, exist_ok=True)
    rounds = load_rounds(folder)
    state = json.loads((folder / "state.json").read_text()) if (folder / "state.json").exists() else {}
    meta = {"domain": state.get("domain", folder.name), "folder": str(folder),
            "simulated": state.get("simulated", False) or any(r.get("simulated") for r in rounds),
            "note": SIMULATION_BANNER if state.get("simulated") else ""}
    data = {"meta": meta, "summary": summary(rounds), "rounds": rounds}
    (out / "history.json").write_text(json.dumps(data, indent=2, default=str) + "\n")
    with (out / "rounds.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(csv_row({}).keys()))
        w.writeheader()
        for r in rounds:
            w.writerow(csv_row(r))
    (out / "report.md").write_text(render_markdown(meta, rounds))
    data["paths"] = {"json": str(out / "history.json"), "csv": str(out / "rounds.csv"),
                     "report": str(out / "report.md")}
    return data


def load_rounds(folder: Path) -> list[dict]:
    path = folder / "rounds.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
