"""The task suites of `loopwright eval` (runtime/learning/evaluate.py): their format, read and checked.

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
"""

from __future__ import annotations

import math
import re
import shlex
import sys
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from loopwright.errors import LoopwrightError

SUITE_KEYS = ("name", "description", "split", "train", "test", "max_attempts", "defaults")
TASK_KEYS = ("prompt", "check", "category", "title", "split", "max_attempts")
TASK_ID = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")


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
