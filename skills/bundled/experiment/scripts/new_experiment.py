#!/usr/bin/env python3
"""Create an experiment folder: experiments/YYYY-MM-DD_HHMM_<slug>/ with run.py, data/, figures/ and report.md.

The generated run.py runs as is (an example measurement you replace): it writes data/*.csv with the
csv module and, when matplotlib can be imported, figures/*.png; without matplotlib it says so in
report.md instead of failing. report.md holds the four sections check_experiment.py requires.

Python 3.11+, standard library only.
"""

from __future__ import annotations

import argparse
import re
import sys
from datetime import datetime
from pathlib import Path

STAMP_FORMAT = "%Y-%m-%d_%H%M"
SECTIONS = (
    ("What was observed", "the numbers, each with the data/ or figures/ file it comes from; n, spread, surprises"),
    ("What is concluded", "only what the data supports, and how confident you are (n, noise, confounders)"),
    ("What is still unknown", "questions this run did not answer, and the limits of the setup"),
    ("What to try next", "the next experiment or change, concrete enough to start from this line"),
)

RUN_TEMPLATE = '''\
#!/usr/bin/env python3
"""Experiment __SLUG__: __QUESTION_DOC__

The one script of this experiment. It measures, writes every number to data/*.csv (csv module:
one header row, the same columns on every row, so pandas.read_csv reads it as is), then draws
figures/*.png from those CSV files, so any figure can be redrawn from the data.

    python3 __FOLDER__/run.py

Replace `measure` and `PARAMS` with the real measurement. Keep it deterministic (SEED), repeat
noisy measurements (REPEATS), and re-run the whole script rather than editing data by hand.
"""

from __future__ import annotations

import csv
import platform
import random
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent
DATA = HERE / "data"
FIGURES = HERE / "figures"
REPORT = HERE / "report.md"
NOTE_PREFIX = "> run.py:"

QUESTION = __QUESTION_REPR__
SEED = 0
REPEATS = 5
PARAMS = [1_000, 10_000, 100_000]  # the values swept: one raw row per (param, repeat)


def measure(param: int, rng: random.Random) -> dict[str, float]:
    """One measurement: returns the measured columns. Replace this example (sorting `param` random floats)."""
    values = [rng.random() for _ in range(param)]
    start = time.perf_counter()
    sorted(values)
    return {"seconds": time.perf_counter() - start}


def collect(path: Path) -> None:
    """Measure every (param, repeat) and append each row as soon as it exists: a timeout keeps what was done."""
    rng = random.Random(SEED)
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = None
        for param in PARAMS:
            for repeat in range(REPEATS):
                row = {"param": param, "repeat": repeat, **measure(param, rng)}
                if writer is None:
                    writer = csv.DictWriter(f, fieldnames=list(row))
                    writer.writeheader()
                writer.writerow(row)  # a row with a column the header lacks raises: no ragged CSV
                f.flush()
            print(f"measured param={param} ({REPEATS} repeats)", flush=True)


def write_csv(path: Path, rows: list[dict]) -> None:
    if not rows:
        raise SystemExit(f"run.py: nothing to write to {path.name}")
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def read_csv(path: Path) -> list[dict]:
    with path.open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def summarize(rows: list[dict]) -> list[dict]:
    """Median, min and max of every measured column, per parameter value."""
    groups: dict[str, list[dict]] = {}
    for row in rows:
        groups.setdefault(row["param"], []).append(row)
    metrics = [k for k in rows[0] if k not in ("param", "repeat")]
    summary = []
    for param, group in groups.items():
        item: dict = {"param": param, "n": len(group)}
        for m in metrics:
            values = [float(r[m]) for r in group]
            item[f"{m}_median"] = statistics.median(values)
            item[f"{m}_min"] = min(values)
            item[f"{m}_max"] = max(values)
        summary.append(item)
    return summary


def plot(summary: list[dict]) -> str | None:
    """Draw figures/*.png from the summary. Returns a note for report.md when no figure could be drawn."""
    try:
        import matplotlib

        matplotlib.use("Agg")  # files only, no display
        import matplotlib.pyplot as plt
    except ImportError:
        return ("matplotlib is not installed, so no figures were drawn; data/*.csv holds every number. "
                "Install matplotlib and re-run run.py to get figures/*.png.")
    x = [float(r["param"]) for r in summary]
    for metric in [k[: -len("_median")] for k in summary[0] if k.endswith("_median")]:
        median = [float(r[f"{metric}_median"]) for r in summary]
        below = [m - float(r[f"{metric}_min"]) for m, r in zip(median, summary)]
        above = [float(r[f"{metric}_max"]) - m for m, r in zip(median, summary)]
        fig, ax = plt.subplots(figsize=(6, 4))
        ax.errorbar(x, median, yerr=[below, above], marker="o", capsize=3)
        if min(x) > 0 and max(x) / min(x) >= 100:
            ax.set_xscale("log")
        if min(median) > 0 and max(median) / min(median) >= 100:
            ax.set_yscale("log")
        ax.set_xlabel("param")
        ax.set_ylabel(f"{metric} (median, min to max)")
        ax.set_title(f"{metric} by param")
        ax.grid(alpha=0.3)
        fig.tight_layout()
        fig.savefig(FIGURES / f"{metric}_by_param.png", dpi=120)
        plt.close(fig)
    return None


def note_in_report(note: str | None) -> None:
    """Keep at most one `> run.py:` line under the title of report.md (removed again once figures exist)."""
    if not REPORT.exists():
        return
    old = REPORT.read_text(encoding="utf-8").splitlines()
    lines: list[str] = []
    skip_blank = False
    for line in old:
        if line.startswith(NOTE_PREFIX):
            skip_blank = True
            continue
        if not (skip_blank and not line.strip()):
            lines.append(line)
        skip_blank = False
    if note:
        at = 2 if len(lines) > 1 and lines[0].startswith("#") and not lines[1].strip() else min(1, len(lines))
        lines[at:at] = [f"{NOTE_PREFIX} {note}", ""]
    if lines != old:
        REPORT.write_text("\\n".join(lines) + "\\n", encoding="utf-8")


def main() -> int:
    DATA.mkdir(exist_ok=True)
    FIGURES.mkdir(exist_ok=True)
    write_csv(DATA / "environment.csv", [
        {"key": "started_utc", "value": datetime.now(UTC).isoformat(timespec="seconds")},
        {"key": "python", "value": sys.version.split()[0]},
        {"key": "platform", "value": platform.platform()},
        {"key": "seed", "value": SEED},
        {"key": "repeats", "value": REPEATS},
    ])
    collect(DATA / "raw.csv")
    summary = summarize(read_csv(DATA / "raw.csv"))
    write_csv(DATA / "summary.csv", summary)
    note = plot(summary)
    note_in_report(note)
    for row in summary:
        print(", ".join(f"{k}={v:.6g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()))
    print(note or f"figures: {', '.join(sorted(p.name for p in FIGURES.glob('*.png')))}")
    print("next: fill report.md (observed, concluded, unknown, next), then run check_experiment.py on this folder")
    return 0


if __name__ == "__main__":
    sys.exit(main())
'''


def slugify(text: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    return slug[:60].rstrip("-")


def report_text(slug: str, folder: str, question: str, stamp: str) -> str:
    lines = [f"# Experiment {slug}", "",
             f"Question: {question or 'TODO: the one question this experiment answers'}", "",
             f"Folder: `{folder}` · script: `run.py` · created: {stamp}", ""]
    for title, hint in SECTIONS:
        lines += [f"## {title}", "", f"<!-- {hint} -->", ""]
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="Create experiments/YYYY-MM-DD_HHMM_<slug>/ with run.py, data/, figures/ and report.md.",
        epilog="Prints the new folder on the first line. Example: new_experiment.py 'cache size vs hit rate' "
               "-q 'Does doubling the cache double the hit rate?'")
    p.add_argument("slug", help="short name; turned into lowercase words joined by hyphens")
    p.add_argument("-q", "--question", default="", help="the one question the experiment answers")
    p.add_argument("--root", default="experiments", help="folder that holds the experiments (default: experiments)")
    p.add_argument("--time", dest="stamp", metavar="YYYY-MM-DD_HHMM",
                   help="timestamp to use instead of the current local time")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    slug = slugify(args.slug)
    if not slug:
        return fail(f"slug {args.slug!r} has no letters or digits")
    if args.stamp:
        try:
            datetime.strptime(args.stamp, STAMP_FORMAT)
        except ValueError:
            return fail(f"--time {args.stamp!r} is not YYYY-MM-DD_HHMM, e.g. 2025-01-31_2359")
        stamp = args.stamp
    else:
        stamp = datetime.now().strftime(STAMP_FORMAT)
    question = " ".join(args.question.split())
    root = Path(args.root)
    if root.exists() and not root.is_dir():
        return fail(f"{root} exists and is not a folder")
    folder = root / f"{stamp}_{slug}"
    if folder.exists():
        return fail(f"{folder} already exists; pick another slug (or wait for the next minute)")
    doc = question.replace("\\", "/").replace('"""', "'''") or "TODO: the question"
    run_py = (RUN_TEMPLATE.replace("__SLUG__", slug).replace("__QUESTION_DOC__", doc)
              .replace("__FOLDER__", folder.as_posix()).replace("__QUESTION_REPR__", repr(question)))
    try:
        (folder / "data").mkdir(parents=True)
        (folder / "figures").mkdir()
        (folder / "run.py").write_text(run_py, encoding="utf-8")
        (folder / "run.py").chmod(0o755)
        (folder / "report.md").write_text(report_text(slug, folder.as_posix(), question, stamp), encoding="utf-8")
    except OSError as e:
        return fail(f"cannot create {folder}: {e.strerror or e}")
    print(folder.as_posix())
    print(f"  run.py     replace measure()/PARAMS, then: python3 {folder.as_posix()}/run.py")
    print("  data/      CSV written by run.py (never edited by hand)")
    print("  figures/   PNG drawn by run.py from data/")
    print("  report.md  fill the four sections after the run, then check the folder with check_experiment.py")
    return 0


def fail(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(130)
