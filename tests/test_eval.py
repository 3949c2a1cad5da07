"""`loopwright eval`: suites, arms, streams, paired bootstrap statistics and reports, on the scripted model."""

from __future__ import annotations

import csv
import importlib.util
import json
import random
import textwrap
from pathlib import Path

import pytest
from support import git

from loopwright.cli.main import main
from loopwright.runtime.learning.eval_results import (
    Row,
    bootstrap,
    headlines,
    mean_difference,
    sign_flip_p,
    summarize,
    summary_table,
)
from loopwright.runtime.learning.eval_suite import load_suite
from loopwright.runtime.learning.evaluate import ARMS, memory_knobs

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "eval-suite"

# Each task's check passes only when answer.txt holds the right word AND the tree is exactly the task's repo/
# plus answer.txt (so a branch that leaked another task's files, or lost its own, fails).
CHECK_PY = textwrap.dedent('''\
    import os, sys
    files = sorted(f for f in os.listdir(".") if not f.startswith(".") and f != "__pycache__")
    want = sorted({expected!r} + ["answer.txt"])
    if files != want:
        sys.exit(f"tree {{files}} != {{want}}")
    sys.exit(0 if open("answer.txt").read() == "right" else "wrong answer")
''')


LESSONS = {"alpha": "Alpha puzzle answers: write the single word right into answer.txt (alpha-trick).",
           "beta": "Beta puzzles are solved by the word right; nothing else belongs in the answer file (beta-trick)."}


def _task(suite: Path, tid: str, category: str, phrase: str, *, split: str | None = None) -> None:
    d = suite / "tasks" / tid
    (d / "repo").mkdir(parents=True)
    (d / "repo" / f"{tid}.txt").write_text(f"the {category} puzzle {tid}\n")
    (d / "repo" / "check.py").write_text(CHECK_PY.format(expected=["check.py", f"{tid}.txt"]))
    (d / "task.toml").write_text(
        f'prompt = "Solve the {category} puzzle {tid}: write the answer into answer.txt."\n'
        f'title = "{category} puzzle {tid}"\ncheck = "{{python}} check.py"\ncategory = "{category}"\n'
        + (f'split = "{split}"\n' if split else ""))
    write = lambda word: {"name": "write_file", "arguments": {"path": "answer.txt", "content": word}}  # noqa: E731
    script = {"turns": [
        {"when": phrase, "tool_calls": [write("right")], "otherwise": {"tool_calls": [write("wrong")]}},
        {"tool_calls": [{"name": "finish", "arguments": {"summary": "answered"}}],
         "usage": {"input_tokens": 150, "output_tokens": 10}},
    ], "reflections": [{"operations": [{"op": "add", "tags": [category], "text": LESSONS[category]}]}]}
    (d / "script.json").write_text(json.dumps(script))


@pytest.fixture
def suite(tmp_path) -> Path:
    """Two categories: one train task each, then three test tasks."""
    s = tmp_path / "tiny"
    s.mkdir()
    (s / "suite.toml").write_text('name = "tiny"\ntrain = ["a1", "b1"]\n[defaults]\nprovider = "scripted"\n')
    for tid, category in (("a1", "alpha"), ("a2", "alpha"), ("a3", "alpha"), ("b1", "beta"), ("b2", "beta")):
        _task(s, tid, category, f"{category}-trick")
    return s


def run_cli(monkeypatch, capsys, cwd: Path, *args: str) -> tuple[int, str, str]:
    """`loopwright eval ...` through the CLI's own entry point."""
    monkeypatch.chdir(cwd)
    capsys.readouterr()
    code = main(["eval", *map(str, args)])
    out, err = capsys.readouterr()
    return code, out, err


def test_every_arm_runs_paired_streams_and_writes_json_csv_and_report(suite, tmp_path, monkeypatch, capsys):
    out = tmp_path / "results"
    code, stdout, err = run_cli(monkeypatch, capsys, tmp_path, suite, "--seeds", "2", "--orders", "2",
                                "--out", out, "--keep", "--json")
    assert code == 0, err
    shown = json.loads(stdout)
    data = json.loads((out / "results.json").read_text())
    rows = data["rows"]
    assert shown["summary"] == data["summary"] and data["meta"]["arms"] == list(ARMS)
    assert data["meta"]["scripted"] and data["meta"]["provider"] == "scripted"
    # every arm x seed x order: the 2 train tasks, then the 3 test tasks, then a re-test per category
    for arm in ARMS:
        for seed in (0, 1):
            for order in (0, 1):
                stream = [r for r in rows if (r["arm"], r["seed"], r["order"]) == (arm, seed, order)]
                assert [r["phase"] for r in stream] == ["train"] * 2 + ["test"] * 3 + ["retest"] * 2
                assert {r["task"] for r in stream[:2]} == {"a1", "b1"}
                assert {r["task"] for r in stream[2:5]} == {"a2", "a3", "b2"}
                assert [r["task"] for r in stream[5:]] == [stream[0]["task"], stream[1]["task"]]
                assert all(r["status"] in ("succeeded", "failed") and r["turns"] == 2 for r in stream)
    def stream(arm: str, seed: int, order: int) -> list[str]:
        return [r["task"] for r in rows if (r["arm"], r["seed"], r["order"]) == (arm, seed, order)]

    for seed in (0, 1):  # every arm runs the same streams (paired); order 0 is the suite's order, 1 a shuffle
        assert stream("none", seed, 0)[:5] == ["a1", "b1", "a2", "a3", "b2"]
        for order in (0, 1):
            assert all(stream(arm, seed, order) == stream("none", seed, order) for arm in ARMS)
    assert stream("none", 0, 1) != stream("none", 0, 0) or stream("none", 1, 1) != stream("none", 1, 0)
    # each task's branch starts from exactly its repo/ files, and the re-test from the same commit
    repo = Path(data["meta"]["streams"]) / "none-s0-o0" / "repo"
    for branch in ("eval/a1", "eval-retest/a1"):
        assert git(repo, "ls-tree", "-r", "--name-only", branch).split() == ["a1.txt", "check.py"]
    assert git(repo, "rev-parse", "eval/a1") == git(repo, "rev-parse", "eval-retest/a1")
    assert {r["tokens"] for r in rows if r["arm"] == "none"} == {(100 + 20) + (150 + 10)}

    summary = data["summary"]
    assert summary["baseline"] == "none" and set(summary["arms"]) == set(ARMS)
    for arm in ARMS:
        test = summary["arms"][arm]["test"]
        assert test["tasks"] == 2 * 2 * 3 and summary["arms"][arm]["train"]["tasks"] == 2 * 2 * 2
        assert 0 <= test["success_rate"] <= 1 and test["success_ci95"][0] <= test["success_rate"] <= \
            test["success_ci95"][1]
        if arm != "none":
            assert summary["arms"][arm]["vs_baseline"]["pairs"] == 12
    assert {(f["arm"], f["category"]) for f in summary["forgetting"]} == {(a, c) for a in ARMS
                                                                          for c in ("alpha", "beta")}
    with (out / "results.csv").open() as f:
        csv_rows = list(csv.DictReader(f))
    assert len(csv_rows) == len(rows) == 4 * 4 * 7 and csv_rows[0]["arm"] == "none"
    report = (out / "report.md").read_text()
    assert "scripted model — not a real model" in report
    assert all(f"| {arm} |" in report for arm in ARMS) and "## Forgetting" in report
    has_mpl = importlib.util.find_spec("matplotlib") is not None
    assert (out / "chart.png").exists() == has_mpl
    assert ("matplotlib is not installed" in report) == (not has_mpl)


def test_memory_beats_no_memory_when_lessons_carry_the_trick(suite, tmp_path, monkeypatch, capsys):
    """The scripts solve a task only when a recalled lesson holds its category's phrase; reflection writes it."""
    out = tmp_path / "results"
    code, stdout, err = run_cli(monkeypatch, capsys, tmp_path, suite, "--seeds", "1", "--out", out)
    assert code == 0, err
    assert "scripted model — not a real model" in stdout and f"report: {out / 'report.md'}" in stdout
    summary = json.loads((out / "results.json").read_text())["summary"]
    rate = {arm: summary["arms"][arm]["test"]["success_rate"] for arm in ARMS}
    assert rate == {"none": 0.0, "placebo": 0.0, "frozen": 1.0, "online": 1.0}
    for arm in ("frozen", "online"):
        lo, hi = summary["arms"][arm]["vs_baseline"]["success_rate"]["ci95"]
        assert lo > 0  # the interval excludes 0
        assert summary["arms"][arm]["test"]["lessons_recalled_per_task"] >= 1
        assert summary["arms"][arm]["lessons_at_end"] == [2]
    assert summary["arms"]["placebo"]["vs_baseline"]["success_rate"]["ci95"] == [0.0, 0.0]
    assert summary["arms"]["placebo"]["lessons_at_end"] == [2]  # learned, never shown
    assert summary["arms"]["none"]["lessons_at_end"] in ([0], [None])
    gained = {f["arm"]: f["gained"] for f in summary["forgetting"] if f["category"] == "alpha"}
    assert gained == {"none": 0, "placebo": 0, "frozen": 1, "online": 1}  # the first task, re-run with the lesson
    assert "online: not enough tasks to tell (3 paired test tasks, at least 8 needed)" in stdout  # 3 test tasks


def test_the_example_suite_is_valid_and_shows_a_gain_offline(tmp_path, monkeypatch, capsys):
    suite = load_suite(EXAMPLE)
    assert [t.id for t in suite.split("train")] == ["01-money-total", "04-exports-slugify"]
    assert len(suite.split("test")) == 4 and suite.categories == ["money", "exports"]
    out = tmp_path / "results"
    code, _, err = run_cli(monkeypatch, capsys, tmp_path, EXAMPLE, "--seeds", "1", "--arms", "none,online",
                           "--out", out)
    assert code == 0, err
    arms = json.loads((out / "results.json").read_text())["summary"]["arms"]
    assert arms["none"]["test"]["success_rate"] == 0.0 and arms["online"]["test"]["success_rate"] == 1.0


def test_paired_bootstrap_intervals_on_known_data():
    rng = random.Random(7)

    def one_each(pairs):  # one run per task: every pair its own cluster
        return [[p] for p in pairs]

    same = [(x, x) for x in (rng.random() for _ in range(40))]
    est, lo, hi = bootstrap(one_each(same), mean_difference)
    assert est == lo == hi == 0.0  # identical arms: no difference, whatever the resample
    noise = [(float(rng.random() < 0.5), float(rng.random() < 0.5)) for _ in range(60)]
    est, lo, hi = bootstrap(one_each(noise), mean_difference)
    assert lo < 0 < hi and lo <= est <= hi  # same distribution: the interval contains 0
    clear = [(float(i % 10 != 0), float(i % 10 == 0)) for i in range(40)]  # 90% vs 10%
    est, lo, hi = bootstrap(one_each(clear), mean_difference)
    assert est == pytest.approx(0.8) and 0.5 < lo <= est <= hi <= 1.0  # excludes 0
    assert bootstrap(one_each(clear), mean_difference) == bootstrap(one_each(clear), mean_difference)  # reproducible
    assert bootstrap([], mean_difference) == (None, None, None)


def test_the_bootstrap_resamples_tasks_not_runs():
    """Ten tasks, each run under 8 seeds that agree (as a scripted model's do): resampling runs as if independent
    gives an interval as narrow as 80 tasks would; resampling tasks gives the interval of ten."""
    per_task = [[(1.0, 0.0)] * 8 if i < 6 else [(0.0, 0.0)] * 8 for i in range(10)]
    _, lo_task, hi_task = bootstrap(per_task, mean_difference)
    _, lo_run, hi_run = bootstrap([[p] for task in per_task for p in task], mean_difference)
    assert hi_task - lo_task > 2 * (hi_run - lo_run)
    assert lo_task <= 0.3 and hi_task >= 0.9


def test_the_sign_flip_test_is_exact():
    assert sign_flip_p([1.0] * 4) == pytest.approx(0.125)  # the two-sided sign test: 2 / 2^4
    assert sign_flip_p([1.0] * 8) == pytest.approx(2 / 256)
    assert sign_flip_p([1.0, -1.0]) == 1.0 and sign_flip_p([]) is None
    assert sign_flip_p([0.5, 0.25, 0.0, -0.25]) == pytest.approx(0.75)  # |sum| >= 0.5: 12 of 16 flips
    wide = [random.Random(3).random() for _ in range(30)]  # too many sums to count: sampled, still small
    assert sign_flip_p(wide) < 0.001


def test_four_tasks_one_seed_are_not_enough_to_tell():
    """The reproduction: 4 test tasks, 1 seed, memory solves all and no memory none. A percentile bootstrap over
    the runs said "+100 pp [+100, +100]" as if conclusive; the report now says there are too few tasks, with the
    exact p = 0.125."""
    rows = [r for i in range(4) for r in (_row("none", f"t{i}", False), _row("online", f"t{i}", True))]
    summary = summarize(rows, ["none", "online"], resamples=200)
    vs = summary["arms"]["online"]["vs_baseline"]
    assert vs["tasks"] == 4 and vs["success_rate"]["p"] == pytest.approx(0.125) and summary["unit"] == "task"
    results = {"summary": summary, "meta": {"arms": ["none", "online"], "suite": "tiny", "test_tasks": 4, "seeds": 1,
                                            "orders": 1, "provider": "scripted", "model": "m", "scripted": True}}
    [line] = headlines(results)
    assert line.startswith("online: not enough tasks to tell (4 paired test tasks, at least 8 needed)")
    assert "p = 0.125" in line and "better" not in line
    table = summary_table(results)
    assert "p=0.125" in table and "intervals resample tasks" in table
    rows8 = [r for i in range(8) for r in (_row("none", f"t{i}", False), _row("online", f"t{i}", True))]
    results["summary"] = summarize(rows8, ["none", "online"], resamples=200)
    [line] = headlines(results)
    assert line.startswith("online: better than none, +100 pp") and "p = 0.008" in line


def _row(arm: str, task: str, ok: bool, seed: int = 0, turns: int = 3) -> Row:
    return Row(arm=arm, seed=seed, order=0, position=0, phase="test", task=task, category="c", status="x",
               succeeded=ok, attempts=1, turns=turns, reflection_calls=0, input_tokens=90, output_tokens=10,
               tokens=100, reflection_tokens=0, cost_usd=0.01, seconds=0.1, lessons_recalled=0, lessons_after=None,
               reason="")


def test_summary_pairs_arms_by_seed_order_and_task():
    rows = []
    for seed in range(4):
        for i in range(10):
            rows.append(_row("none", f"t{i}", i < 2, seed))
            rows.append(_row("online", f"t{i}", i < 9, seed, turns=2))
            rows.append(_row("placebo", f"t{i}", i < 2, seed))
    s = summarize(rows, ["none", "placebo", "online"], resamples=500)
    online, placebo = s["arms"]["online"], s["arms"]["placebo"]
    assert online["test"]["success_rate"] == pytest.approx(0.9) and online["vs_baseline"]["pairs"] == 40
    assert online["vs_baseline"]["success_rate"]["estimate"] == pytest.approx(0.7)
    assert online["vs_baseline"]["success_rate"]["ci95"][0] > 0
    assert placebo["vs_baseline"]["success_rate"]["ci95"] == [0.0, 0.0]
    assert online["test"]["turns_per_solved"] == 2 and online["vs_baseline"]["turns_per_solved"]["estimate"] == -1
    assert online["vs_baseline"]["tokens_per_task"]["estimate"] == 0


def test_arms_map_to_memory_knobs():
    assert memory_knobs("none", "test") == {"recall": False, "placebo": False, "reflect": False,
                                            "global_lessons": False}
    assert memory_knobs("placebo", "train") == {"recall": True, "placebo": True, "reflect": True,
                                                     "global_lessons": False}
    assert [memory_knobs("frozen", p)["reflect"] for p in ("train", "test", "retest")] == [True, False, False]
    assert [memory_knobs("online", p)["reflect"] for p in ("train", "test", "retest")] == [True, True, False]


@pytest.mark.parametrize("case, words", [
    ("missing", "no suite folder at"),
    ("no-check", "task a1 has no check"),
    ("bad-toml", "task.toml is not valid TOML"),
    ("unknown-key", "unknown key 'chek'"),
    ("unknown-arm", "unknown arm 'sometimes'"),
    ("no-script", "needs tasks/<id>/script.json for every task; b1 has none"),
    ("no-tasks", "has no task folders under tasks/"),
    ("bad-split", "split must be 'train' or 'test'"),
    ("bad-default", "unknown key 'budget.max_turnz' (from the suite's [defaults] or the options)"),
])
def test_bad_input_is_one_line(case, words, suite, tmp_path, monkeypatch, capsys):
    args = [suite]
    task = suite / "tasks" / "a1" / "task.toml"
    if case == "missing":
        args = [tmp_path / "nowhere"]
    elif case == "no-check":
        task.write_text(task.read_text().replace('check = "{python} check.py"\n', ""))
    elif case == "bad-toml":
        task.write_text('prompt = "unterminated\n')
    elif case == "unknown-key":
        task.write_text(task.read_text().replace("check =", "chek ="))
    elif case == "unknown-arm":
        args += ["--arms", "none,sometimes"]
    elif case == "no-script":
        (suite / "tasks" / "b1" / "script.json").unlink()
    elif case == "no-tasks":
        args = [tmp_path]
    elif case == "bad-split":
        task.write_text(task.read_text() + 'split = "later"\n')
    elif case == "bad-default":
        (suite / "suite.toml").write_text('[defaults]\nprovider = "scripted"\nbudget = {max_turnz = 3}\n')
    code, out, err = run_cli(monkeypatch, capsys, tmp_path, *args, "--out", tmp_path / "out")
    assert code == 2 and out == ""
    assert err.startswith("loopwright: error: ") and err.count("\n") == 1 and words in err, err
