"""What `loopwright eval SUITE` measures (the command is cli/evaluate.py): does memory (lessons recalled at task
start, reflection after every run) make agents better?

The answer is a number: a task suite runs under several *arms* that differ only
in the `[memory]` knobs, for N seeds and K stream orders, and the arms are
compared pairwise: bootstrap confidence intervals over tasks and a sign-flip
p-value (eval_results.py).

The suite format is in eval_suite.py, the statistics and reports in
eval_results.py; this module runs the streams and the whole eval.

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

Outputs in `--out` (default `.loopwright/eval/<suite>-<timestamp>/` inside a
project, else a temporary folder): results.json (every row and the summary),
results.csv (the rows), report.md, and chart.png when matplotlib is installed;
with `--keep` also every stream's repository and store under streams/.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import re
import shutil
import sqlite3
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from loopwright.runtime.learning.eval_results import (
    RESAMPLES,
    SCRIPTED_NOTE,
    Row,
    render_report,
    summarize,
    write_chart,
    write_csv,
)
from loopwright.runtime.learning.eval_suite import EvalError, EvalTask, Suite, load_suite

ARMS = ("none", "placebo", "frozen", "online")


# -- arms and streams -----------------------------------------------------------------------------


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
    from loopwright.memory.lessons import active_count

    try:
        return active_count(store)
    except sqlite3.Error:
        return None


def run_task(project, base_config, task: EvalTask, *, arm: str, phase: str, branch: str) -> dict:
    """One task through Runner in this process, on `branch`; what it cost and how it ended."""
    from loopwright.harness.statuses import TaskStatus
    from loopwright.runtime.runner import Runner, model_options

    config = base_config.model_copy(update={
        "target_branch": branch, "on_success": "keep", "script": str(task.script) if task.script else None,
        "memory": base_config.memory.model_copy(update=memory_knobs(arm, phase))})
    project.config = config
    store = project.store
    check = task.check_command
    t0 = time.monotonic()
    created = store.create_task(task.prompt, title=task.title, check=check, target_branch=branch,
                                status=TaskStatus.RUNNING,
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
    return {"status": done.status, "succeeded": done.status == TaskStatus.SUCCEEDED, "attempts": len(runs),
            "turns": turns, "reflection_calls": reflections, "input_tokens": sum(r.input_tokens for r in runs),
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

