"""What `loopwright eval SUITE` measures (the command is cli/evaluate.py): does memory (lessons recalled at task
start, reflection after every run) make agents better?

The answer is a number: a task suite runs under several *arms* that differ only
in the `[memory]` knobs, for N seeds and K stream orders, and the arms are
compared pairwise with bootstrap confidence intervals.

Suite format
------------

    my-suite/
      suite.toml                  optional: name, split, defaults
      tasks/<id>/task.toml        prompt, check, category, optional title, split, max_attempts
      tasks/<id>/repo/            the task's starting repository (its files become the first commit of its branch)
      tasks/<id>/script.json      optional: the scripted model's turns and `reflections` for this task

`suite.toml` (every key optional):

    name = "money-and-exports"    # default: the folder's name
    split = 0.5                   # per category, the first half of its tasks (suite order) train, the rest test
    train = ["01-total"]          # or explicit lists; tasks in neither list go to the other one
    test = ["02-split-bill"]
    max_attempts = 1              # default for every task
    [defaults]                    # loopwright config for every run (any key of loopwright.toml), e.g.
    provider = "scripted"
    check_timeout = 120
    [defaults.budget]
    max_turns = 30

`task.toml`:

    prompt = "Add a total(prices) function to shop.py ..."   # required: the task as posted
    check = "{python} -m unittest -q"  # required: the acceptance command, run in the worktree; {python} is
                                       # the interpreter running loopwright
    category = "money"                 # default "default"; forgetting is measured per category
    title = "Shop total"               # default: the prompt's first line
    split = "test"                     # optional: overrides the suite's split for this task
    max_attempts = 1                   # attempts (fresh runs in the same worktree) before the task fails

Suite order is the task folders' names sorted (prefix them 01-, 02- to choose
it). A task's split comes from its own `split`, else the suite's `train`/`test`
lists, else the `split` fraction (default 0.5, per category; a category of one
task puts it in test). Every task id must be usable in a git branch name.

With the scripted provider (`--provider scripted`, or `provider = "scripted"`
in `[defaults]`) every task needs a `script.json` (harness/script.py: a turn's
`when`/`otherwise` lets a recalled lesson change what the "model" does, and
`reflections` are its replies to the reflection calls). The report then says
that the numbers come from a scripted model, not a model.

Arms (memory knobs; `global_lessons` is off in every arm, and each stream has
its own LOOPWRIGHT_HOME, so arms never share memory):

- `none`: no recall, no reflection.
- `placebo`: recall and reflection on, but the recalled lessons are replaced by
  neutral filler of the same length (`memory.placebo`): lessons are learned
  and never shown. It separates "more context" from "the right context".
- `frozen`: the train split with recall and reflection, then the test split
  with recall only (memory built on the training split, then frozen).
- `online`: recall and reflection throughout.

How a stream runs (one arm x seed x order): a fresh temporary git repository
and project (one store, so memory carries from task to task), the train tasks
then the test tasks (suite order for order 0; orders 1.. shuffle each split
by seed and order), each on its own branch `eval/<id>` whose tree is exactly
the task's `repo/`, through `Runner` in this process as a loop-until-done task
with the task's `max_attempts` (a failed check ends it as failed). Then the
first task of every category seen is re-run with memory frozen (no
reflection) on a fresh branch from the same start: re-test vs first run per
category shows forgetting (or backward transfer). Every arm runs the same
(seed, order) streams, so the results are paired; streams run one after
another (simplest; a suite is measured, not raced).

Scored: the test split. Per arm: success rate (task status succeeded) with a
bootstrap 95% interval, tokens and cost per task (reflection included), model
turns per solved task (the agent's turns, not reflection calls), and the
difference to the `none` arm (or the first arm listed) with a paired bootstrap
95% interval over the (seed, order, task) pairs (2,000 resamples, fixed seed,
percentile intervals). Seeds are repetitions: a real model's sampling is not
seeded, and a scripted model gives the same result for every seed.

Outputs in `--out` (default `.loopwright/eval/<suite>-<timestamp>/` inside a
project, else a temporary folder): results.json (every row and the summary),
results.csv (the rows), report.md, and chart.png when matplotlib is installed;
with `--keep` also every stream's repository and store under streams/.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import json
import math
import os
import random
import re
import shlex
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
import tomllib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from loopwright.errors import LoopwrightError

ARMS = ("none", "placebo", "frozen", "online")
SUITE_KEYS = ("name", "description", "split", "train", "test", "max_attempts", "defaults")
TASK_KEYS = ("prompt", "check", "category", "title", "split", "max_attempts")
TASK_ID = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")
RESAMPLES = 2000
BOOTSTRAP_SEED = 0
SCRIPTED_NOTE = "scripted model — not a real model"


class EvalError(LoopwrightError):
    """A problem with the suite or the eval's options, said in one line."""


# -- the suite ------------------------------------------------------------------------------------


@dataclass
class EvalTask:
    id: str
    prompt: str
    check: str
    category: str
    title: str
    split: str  # train | test
    max_attempts: int
    repo: Path
    script: Path | None

    @property
    def check_command(self) -> str:
        return self.check.replace("{python}", shlex.quote(sys.executable))


@dataclass
class Suite:
    name: str
    root: Path
    tasks: list[EvalTask]
    defaults: dict[str, Any] = field(default_factory=dict)
    description: str = ""

    def split(self, which: str) -> list[EvalTask]:
        return [t for t in self.tasks if t.split == which]

    @property
    def categories(self) -> list[str]:
        return list(dict.fromkeys(t.category for t in self.tasks))


def _toml(path: Path, what: str) -> dict:
    try:
        return tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as e:
        raise EvalError(f"{path} is not valid TOML: {e}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise EvalError(f"cannot read {what} {path}: {e}") from None


def _unknown(data: dict, allowed: Sequence[str], path: Path) -> None:
    extra = [k for k in data if k not in allowed]
    if extra:
        raise EvalError(f"{path}: unknown key '{extra[0]}' (allowed: {', '.join(allowed)})")


def _text(data: dict, key: str, path: Path, *, required: bool = False, default: str = "") -> str:
    value = data.get(key)
    if value is None:
        if required:
            hint = {"check": ' (the command that decides success, e.g. check = "{python} -m unittest -q")',
                    "prompt": " (what the agent is asked to do)"}.get(key, "")
            raise EvalError(f"task {path.parent.name} has no {key}: add {key} = \"...\" to {path}{hint}")
        return default
    if not isinstance(value, str) or (required and not value.strip()):
        raise EvalError(f"{path}: {key} must be a non-empty string, not {value!r}")
    return value


def _attempts(value: Any, path: Path) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise EvalError(f"{path}: max_attempts must be a whole number of at least 1, not {value!r}")
    return value


def load_suite(path: str | Path) -> Suite:
    """Read and check a suite folder; every problem is an EvalError in one line."""
    root = Path(path).expanduser()
    if not root.is_dir():
        raise EvalError(f"no suite folder at {root}" + (" (it is a file)" if root.exists() else ""))
    root = root.resolve()
    meta_path = root / "suite.toml"
    meta = _toml(meta_path, "suite file") if meta_path.is_file() else {}
    _unknown(meta, SUITE_KEYS, meta_path)
    tasks_dir = root / "tasks"
    folders = sorted(p for p in tasks_dir.iterdir() if p.is_dir()) if tasks_dir.is_dir() else []
    if not folders:
        raise EvalError(f"{root} is not an eval suite: it has no task folders under tasks/ "
                        f"(each holds task.toml and repo/)")
    default_attempts = _attempts(meta.get("max_attempts", 1), meta_path)
    defaults = meta.get("defaults", {})
    if not isinstance(defaults, dict):
        raise EvalError(f"{meta_path}: [defaults] must be a table of loopwright config keys")
    tasks: list[EvalTask] = []
    for folder in folders:
        tid = folder.name
        if not TASK_ID.match(tid) or ".." in tid or tid.endswith((".lock", ".")):
            raise EvalError(f"task folder name {tid!r} cannot be used in a git branch name "
                            f"(use letters, digits, '.', '_' and '-')")
        tpath = folder / "task.toml"
        if not tpath.is_file():
            raise EvalError(f"task {tid} has no task.toml ({tpath})")
        data = _toml(tpath, "task file")
        _unknown(data, TASK_KEYS, tpath)
        prompt = _text(data, "prompt", tpath, required=True)
        check = _text(data, "check", tpath, required=True)
        category = _text(data, "category", tpath, default="default").strip() or "default"
        title = _text(data, "title", tpath, default=prompt.strip().splitlines()[0][:80])
        split = data.get("split", "")
        if split not in ("", "train", "test"):
            raise EvalError(f"{tpath}: split must be 'train' or 'test', not {split!r}")
        repo = folder / "repo"
        if not repo.is_dir():
            raise EvalError(f"task {tid} has no repo/ folder (its starting files) at {repo}")
        script = folder / "script.json"
        tasks.append(EvalTask(id=tid, prompt=prompt, check=check, category=category, title=title, split=split,
                              max_attempts=_attempts(data.get("max_attempts", default_attempts), tpath),
                              repo=repo, script=script if script.is_file() else None))
    _assign_splits(tasks, meta, meta_path)
    if not any(t.split == "test" for t in tasks):
        raise EvalError(f"suite {root.name} has no test tasks: the test split is what is scored")
    name = meta.get("name", root.name)
    if not isinstance(name, str) or not name.strip():
        raise EvalError(f"{meta_path}: name must be a non-empty string")
    description = meta.get("description", "")
    if not isinstance(description, str):
        raise EvalError(f"{meta_path}: description must be a string")
    return Suite(name=name.strip(), root=root, tasks=tasks, defaults=defaults, description=description.strip())


def _assign_splits(tasks: list[EvalTask], meta: dict, meta_path: Path) -> None:
    ids = {t.id for t in tasks}
    lists: dict[str, set[str]] = {}
    for which in ("train", "test"):
        if which in meta:
            value = meta[which]
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise EvalError(f"{meta_path}: {which} must be a list of task ids")
            unknown = [v for v in value if v not in ids]
            if unknown:
                raise EvalError(f"{meta_path}: {which} names no task {unknown[0]!r} (tasks: {', '.join(sorted(ids))})")
            lists[which] = set(value)
    if lists.get("train", set()) & lists.get("test", set()):
        raise EvalError(f"{meta_path}: task {sorted(lists['train'] & lists['test'])[0]!r} is in both train and test")
    fraction = meta.get("split", 0.5)
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 <= fraction < 1:
        raise EvalError(f"{meta_path}: split must be a fraction from 0 up to (not including) 1, not {fraction!r}")
    by_category: dict[str, list[EvalTask]] = {}
    for t in tasks:
        if t.split:
            continue
        if lists:
            if t.id in lists.get("train", ()):
                t.split = "train"
            elif t.id in lists.get("test", ()):
                t.split = "test"
            elif len(lists) == 2:
                raise EvalError(f"{meta_path}: task {t.id!r} is in neither train nor test")
            else:
                t.split = "test" if "train" in lists else "train"
        else:
            by_category.setdefault(t.category, []).append(t)
    for group in by_category.values():
        n_train = min(math.floor(len(group) * fraction + 0.5), len(group) - 1)
        for i, t in enumerate(group):
            t.split = "train" if i < n_train else "test"


def check_arms(text: str | Sequence[str]) -> list[str]:
    arms = [a.strip() for a in (text.split(",") if isinstance(text, str) else text) if a.strip()]
    if not arms:
        raise EvalError(f"no arms given (arms: {', '.join(ARMS)})")
    for a in arms:
        if a not in ARMS:
            raise EvalError(f"unknown arm '{a}' (arms: {', '.join(ARMS)})")
    return list(dict.fromkeys(arms))


def memory_knobs(arm: str, phase: str) -> dict[str, bool]:
    """The `[memory]` settings of an arm in a phase (train, test, or retest: memory frozen)."""
    learn = phase != "retest"
    knobs = {
        "none": {"recall": False, "placebo": False, "reflect": False},
        "placebo": {"recall": True, "placebo": True, "reflect": learn},
        "frozen": {"recall": True, "placebo": False, "reflect": phase == "train"},
        "online": {"recall": True, "placebo": False, "reflect": learn},
    }[arm]
    return knobs | {"global_lessons": False}


def stream_order(tasks: list[EvalTask], seed: int, order: int) -> list[EvalTask]:
    """Order 0 is suite order; order k >= 1 shuffles with a generator seeded by (seed, k)."""
    out = list(tasks)
    if order > 0:
        random.Random(f"loopwright-eval:{seed}:{order}").shuffle(out)
    return out


# -- running --------------------------------------------------------------------------------------


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


def _git(cwd: Path, *args: str, env: dict | None = None) -> str:
    res = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, env=env)
    if res.returncode != 0:
        raise EvalError(f"git {' '.join(args[:2])} failed in {cwd}: {res.stderr.strip()[:300]}")
    return res.stdout.strip()


def _clean_git_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not (k.startswith("GIT_") and k not in ("GIT_CONFIG_NOSYSTEM",))}


def make_stream_repo(where: Path) -> Path:
    """An empty git repository on `main` with one empty commit, as a loopwright project."""
    from loopwright.runtime.project import init_project

    where.mkdir(parents=True)
    _git(where, "init", "-q", "-b", "main")
    _git(where, "config", "user.name", "loopwright eval")
    _git(where, "config", "user.email", "eval@loopwright.invalid")
    _git(where, "commit", "-q", "--allow-empty", "-m", "eval stream")
    init_project(where)
    return where


def start_commit(repo: Path, task: EvalTask) -> str:
    """A root commit whose tree is exactly the task's repo/ files (caches and .git left out)."""
    with tempfile.TemporaryDirectory(prefix="loopwright-eval-tree-") as tmp:
        stage = Path(tmp) / "tree"
        shutil.copytree(task.repo, stage, symlinks=True,
                        ignore=shutil.ignore_patterns(".git", "__pycache__", "*.pyc", ".pytest_cache"))
        env = _clean_git_env() | {"GIT_DIR": str(repo / ".git"), "GIT_WORK_TREE": str(stage),
                                  "GIT_INDEX_FILE": str(Path(tmp) / "index")}
        _git(stage, "add", "-A", ".", env=env)
        tree = _git(stage, "write-tree", env=env)
        return _git(stage, "commit-tree", tree, "-m", f"eval: the starting state of task {task.id}", env=env)


@contextlib.contextmanager
def _env(**values: str) -> Iterator[None]:
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _active_lessons(store) -> int | None:
    try:
        return store.conn.execute("SELECT count(*) FROM lessons WHERE status = 'active'").fetchone()[0]
    except sqlite3.Error:
        return None


def run_task(project, base_config, task: EvalTask, *, arm: str, phase: str, branch: str) -> dict:
    """One task through Runner in this process, on `branch`; what it cost and how it ended."""
    from loopwright.runtime.runner import Runner, model_options

    config = base_config.model_copy(update={
        "target_branch": branch, "on_success": "keep", "script": str(task.script) if task.script else None,
        "memory": base_config.memory.model_copy(update=memory_knobs(arm, phase))})
    project.config = config
    store = project.store
    check = task.check_command
    t0 = time.monotonic()
    created = store.create_task(task.prompt, title=task.title, check=check, target_branch=branch, status="running",
                                options=model_options(config) | {"until": check, "max_attempts": task.max_attempts})
    asyncio.run(Runner(project).run_task(created))
    seconds = time.monotonic() - t0
    done = store.task(created.id)
    runs = store.runs(task_id=created.id)
    turns = reflections = reflection_tokens = recalled = 0
    for r in runs:
        for _, _, e in store.events(r.id, types=("model_called", "lessons_recalled")):
            if e.type == "lessons_recalled":
                recalled += len(getattr(e, "refs", []))
            elif getattr(e, "purpose", "turn") == "reflection":
                reflections += 1
                reflection_tokens += e.usage.input_tokens + e.usage.output_tokens
            elif getattr(e, "purpose", "turn") == "turn":
                turns += 1
    return {"status": done.status, "succeeded": done.status == "succeeded", "attempts": len(runs), "turns": turns,
            "reflection_calls": reflections, "input_tokens": sum(r.input_tokens for r in runs),
            "output_tokens": sum(r.output_tokens for r in runs), "tokens": sum(r.tokens for r in runs),
            "reflection_tokens": reflection_tokens, "cost_usd": sum(r.cost_usd for r in runs),
            "seconds": round(seconds, 3), "lessons_recalled": recalled, "lessons_after": _active_lessons(store),
            "reason": done.reason or (runs[-1].reason if runs else "")}


def run_stream(suite: Suite, base_config, arm: str, seed: int, order: int, *, work: Path,
               say: Callable[[str], None] = lambda s: None) -> list[Row]:
    """One arm x seed x order: train then test in a fresh repository, then the forgetting re-tests."""
    from loopwright.runtime.project import open_project

    where = work / f"{arm}-s{seed}-o{order}"
    rows: list[Row] = []
    with _env(LOOPWRIGHT_HOME=str(where / "home")):
        repo = make_stream_repo(where / "repo")
        project = open_project(repo)
        try:
            stream = ([("train", t) for t in stream_order(suite.split("train"), seed, order)]
                      + [("test", t) for t in stream_order(suite.split("test"), seed, order)])
            starts: dict[str, str] = {}
            first: dict[str, EvalTask] = {}  # category -> its first task in this stream
            for phase, t in stream:
                starts[t.id] = start_commit(repo, t)
                first.setdefault(t.category, t)
                _git(repo, "update-ref", f"refs/heads/eval/{t.id}", starts[t.id])
                rows.append(_row(arm, seed, order, len(rows), phase, t,
                                 run_task(project, base_config, t, arm=arm, phase=phase, branch=f"eval/{t.id}")))
                say(_progress_line(rows[-1]))
            for t in first.values():
                branch = f"eval-retest/{t.id}"
                _git(repo, "update-ref", f"refs/heads/{branch}", starts[t.id])
                rows.append(_row(arm, seed, order, len(rows), "retest", t,
                                 run_task(project, base_config, t, arm=arm, phase="retest", branch=branch)))
                say(_progress_line(rows[-1]))
        finally:
            project.store.close()
    return rows


def _row(arm: str, seed: int, order: int, position: int, phase: str, t: EvalTask, result: dict) -> Row:
    return Row(arm=arm, seed=seed, order=order, position=position, phase=phase, task=t.id, category=t.category,
               **result)


def _progress_line(r: Row) -> str:
    return (f"  {r.arm:<8} seed {r.seed} order {r.order}  {r.phase:<6} {r.task:<28} "
            f"{'ok  ' if r.succeeded else 'FAIL'} {r.turns} turns, {r.tokens} tokens"
            + (f", {r.lessons_recalled} lesson(s) recalled" if r.lessons_recalled else ""))


# -- statistics -----------------------------------------------------------------------------------


def _quantile(sorted_values: list[float], q: float) -> float:
    pos = q * (len(sorted_values) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


def bootstrap(items: Sequence[Any], statistic: Callable[[Sequence[Any]], float | None], *,
              resamples: int = RESAMPLES, seed: int = BOOTSTRAP_SEED,
              level: float = 0.95) -> tuple[float | None, float | None, float | None]:
    """(estimate, low, high): a percentile bootstrap interval of `statistic` over `items` resampled with replacement.

    Pass pairs (arm value, baseline value) for a paired interval: the pairs are resampled together. Resamples
    where the statistic is undefined (None) are left out; with none left the interval is (None, None).
    """
    point = statistic(items) if items else None
    if point is None:
        return None, None, None
    rng = random.Random(seed)
    values = sorted(v for v in (statistic(rng.choices(items, k=len(items))) for _ in range(resamples))
                    if v is not None)
    if not values:
        return point, None, None
    tail = (1 - level) / 2
    return point, _quantile(values, tail), _quantile(values, 1 - tail)


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


def _ci(result: tuple[float | None, float | None, float | None]) -> dict:
    point, lo, hi = result
    return {"estimate": point, "ci95": [lo, hi] if lo is not None else None}


def _last(rows: list[Row], arm: str, seed: int, order: int) -> int | None:
    """Active lessons after the stream's last task (before the re-tests, which do not learn)."""
    stream = [r for r in rows if (r.arm, r.seed, r.order) == (arm, seed, order) and r.phase != "retest"]
    return stream[-1].lessons_after if stream else None


def summarize(rows: list[Row], arms: list[str], *, resamples: int = RESAMPLES) -> dict:
    """Per arm: the test split scored (with intervals and paired differences to the baseline), train, forgetting."""
    baseline = "none" if "none" in arms else arms[0]
    keyed = {(r.arm, r.seed, r.order, r.task): r for r in rows if r.phase == "test"}
    out: dict[str, Any] = {"baseline": baseline, "resamples": resamples, "bootstrap_seed": BOOTSTRAP_SEED,
                           "arms": {}, "forgetting": []}
    for arm in arms:
        test = [r for r in rows if r.arm == arm and r.phase == "test"]
        train = [r for r in rows if r.arm == arm and r.phase == "train"]
        rate = bootstrap([METRICS["success_rate"](r) for r in test], _mean, resamples=resamples)
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
            vs: dict[str, Any] = {"pairs": len(pairs)}
            for name, metric in METRICS.items():
                vs[name] = _ci(bootstrap([(metric(a), metric(b)) for a, b in pairs], mean_difference,
                                         resamples=resamples))
            vs["turns_per_solved"] = _ci(bootstrap(pairs, _turns_difference, resamples=resamples))
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
    """'+50 pp [+20 pp, +80 pp]': a difference and its interval."""
    if not d or d.get("estimate") is None:
        return "—"
    ci = d.get("ci95")
    return _signed(d["estimate"], fmt) + (f" [{_signed(ci[0], fmt)}, {_signed(ci[1], fmt)}]" if ci else "")


def _pp(v: float) -> str:
    return f"{100 * v:.0f} pp"


def model_line(meta: dict) -> str:
    line = f"provider {meta['provider']}, model {meta['model']}" + (f" at {meta['base_url']}" if meta.get('base_url') else "")
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
        est, ci = _signed(d["estimate"], _pp), f"95% CI {_signed(lo, _pp)} to {_signed(hi, _pp)}"
        if lo > 0:
            out.append(f"{arm}: better than {base}, {est} test success ({ci})")
        elif hi < 0:
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
              f"Differences are arm − {base}, paired over (seed, order, task) with a bootstrap 95% interval "
              f"({summary['resamples']:,} resamples).", "",
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


# -- the whole eval -------------------------------------------------------------------------------


def _flatten(tree: dict, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in tree.items():
        if isinstance(v, dict) and k != "models":
            out |= _flatten(v, f"{prefix}{k}.")
        else:
            out[f"{prefix}{k}"] = v
    return out


def _project_root() -> Path | None:
    from loopwright.runtime.project import DIR, project_root

    try:
        root = project_root(Path.cwd())
    except Exception:  # noqa: BLE001 — not inside a git repository
        return None
    return root if (root / DIR).is_dir() else None


def base_config(suite: Suite, overrides: dict[str, Any]):
    """The config every run starts from: the project's (when inside one), the suite's defaults, then the options."""
    from loopwright.runtime.config import ConfigError, load_config
    from loopwright.runtime.runner import check_model

    given = {k: v for k, v in overrides.items() if v is not None}
    merged = _flatten(suite.defaults) | given
    missing = [t.id for t in suite.tasks if t.script is None]
    if merged.get("provider") == "scripted" and missing:
        raise EvalError(f"the scripted provider needs tasks/<id>/script.json for every task; {missing[0]} has none")
    if "provider" not in merged or merged["provider"] == "scripted":  # the project's config may say scripted
        first = next((t.script for t in suite.tasks if t.script), None)
        merged.setdefault("script", str(first) if first else None)  # each task's own script replaces it
    try:
        config = load_config(_project_root(), overrides=merged)
    except ConfigError as e:
        raise EvalError(str(e).replace("the command line", "the suite's [defaults] or the options")) from None
    if config.provider == "scripted":
        if "model" not in merged:
            config = config.model_copy(update={"model": "scripted"})
        if missing:
            raise EvalError(f"the scripted provider needs tasks/<id>/script.json for every task; "
                            f"{missing[0]} has none")
        from loopwright.harness.script import Script, ScriptError

        for t in suite.tasks:
            try:
                Script.load(t.script)  # type: ignore[arg-type]
            except ScriptError as e:
                raise EvalError(f"task {t.id}: {e}") from None
    else:
        try:
            check_model(config)  # a missing key or an unknown model, now and in one line
        except ConfigError as e:
            raise EvalError(str(e)) from None
    return config


def default_out(suite: Suite) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    slug = re.sub(r"[^\w.-]+", "-", suite.name).strip("-") or "suite"
    root = _project_root()
    if root is not None:
        return root / ".loopwright" / "eval" / f"{slug}-{stamp}"
    return Path(tempfile.mkdtemp(prefix=f"loopwright-eval-{slug}-{stamp}-"))


def run_eval(suite_path: str | Path, *, arms: str | Sequence[str] = ARMS, seeds: int = 3, orders: int = 1,
             out: str | Path | None = None, overrides: dict[str, Any] | None = None, keep: bool = False,
             resamples: int = RESAMPLES, say: Callable[[str], None] = lambda s: None) -> dict:
    """Run the suite under every arm for every (seed, order); write results.json/.csv, report.md, chart.png."""
    arm_list = check_arms(arms)
    if seeds < 1 or orders < 1:
        raise EvalError(f"--seeds and --orders must be at least 1 (got {seeds} and {orders})")
    if resamples < 1:
        raise EvalError("the number of bootstrap resamples must be at least 1")
    suite = load_suite(suite_path)
    config = base_config(suite, overrides or {})
    out_dir = Path(out) if out else default_out(suite)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise EvalError(f"cannot create the output folder {out_dir}: {e}") from None
    work = out_dir / "streams" if keep else Path(tempfile.mkdtemp(prefix="loopwright-eval-streams-"))
    started, t0 = time.strftime("%Y-%m-%d %H:%M:%S"), time.monotonic()
    rows: list[Row] = []
    note = f" ({SCRIPTED_NOTE})" if config.provider == "scripted" else ""
    say(f"eval {suite.name}: {len(arm_list)} arm(s) x {seeds} seed(s) x {orders} order(s), "
        f"{len(suite.tasks)} tasks each; {config.provider}/{config.model}{note}")
    try:
        for seed in range(seeds):
            for order in range(orders):
                for arm in arm_list:
                    rows += run_stream(suite, config, arm, seed, order, work=work, say=say)
    finally:
        if not keep:
            shutil.rmtree(work, ignore_errors=True)
    meta = {"suite": suite.name, "description": suite.description, "suite_path": str(suite.root),
            "tasks": len(suite.tasks),
            "train_tasks": len(suite.split("train")), "test_tasks": len(suite.split("test")),
            "categories": suite.categories, "arms": arm_list, "seeds": seeds, "orders": orders,
            "provider": config.provider, "model": config.model, "base_url": config.base_url,
            "scripted": config.provider == "scripted", "note": SCRIPTED_NOTE if config.provider == "scripted" else "",
            "started": started, "seconds": round(time.monotonic() - t0, 2), "streams": str(work) if keep else None,
            "sequential": True}
    results = {"meta": meta, "summary": summarize(rows, arm_list, resamples=resamples),
               "rows": [asdict(r) for r in rows]}
    meta["chart"] = write_chart(results, out_dir / "chart.png")
    (out_dir / "results.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
    write_csv(rows, out_dir / "results.csv")
    (out_dir / "report.md").write_text(render_report(results))
    results["paths"] = {"out": str(out_dir), "report": str(out_dir / "report.md"),
                        "json": str(out_dir / "results.json"), "csv": str(out_dir / "results.csv"),
                        "chart": str(out_dir / "chart.png") if (out_dir / "chart.png").exists() else None}
    return results


def summary_table(results: dict) -> str:
    """The short table the CLI prints."""
    meta, summary = results["meta"], results["summary"]
    base = summary["baseline"]
    lines = [f"eval {meta['suite']}: {meta['test_tasks']} test task(s) x {meta['seeds']} seed(s) x "
             f"{meta['orders']} order(s); {meta['provider']}/{meta['model']}"
             + (f" — {SCRIPTED_NOTE}" if meta["scripted"] else ""),
             f"{'arm':<9}{'success':>9}  {'Δ vs ' + base + ' [95% CI]':<28}{'tokens/task':>12}{'cost/task':>11}"
             f"{'turns/solved':>14}"]
    for arm in meta["arms"]:
        e = summary["arms"][arm]
        t, vs = e["test"], e.get("vs_baseline")
        lines.append(f"{arm:<9}{_pct(t['success_rate']):>9}  {(_diff(vs['success_rate'], _pp) if vs else '—'):<28}"
                     f"{_num(t['tokens_per_task']):>12}{_usd(t['cost_per_task']):>11}"
                     f"{_num(t['turns_per_solved'], 1):>14}")
    return "\n".join(lines)
