"""The README tells the truth: its example script runs as written, and its tool table matches the tools."""

from __future__ import annotations

import os
import re
import shlex
import sys
from pathlib import Path

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()


def _section(title: str) -> str:
    """From `title` to the next `## ` heading."""
    return README.split(title, 1)[1].split("\n## ", 1)[0]


def test_the_tool_table_names_every_tool_and_argument_and_which_are_required():
    from loopwright.harness.tools import STANDARD_TOOLS
    from loopwright.memory.artifacts import ARTIFACT_TOOLS
    from loopwright.memory.tools import MEMORY_TOOLS
    from loopwright.runtime.chat.threads import FanOut
    from loopwright.skills.tool import UseSkill

    rows = dict(re.findall(r"^\| `(\w+)` \| (.*) \|$", _section("**Without an API key.**"), re.M))
    tools = [*STANDARD_TOOLS, *ARTIFACT_TOOLS, *MEMORY_TOOLS, UseSkill, FanOut]
    assert sorted(rows) == sorted(t.name for t in tools)
    for tool in tools:
        listed = {name: bool(bold) for bold, name in re.findall(r"(\*\*)?`(\w+)`(?:\*\*)?", rows[tool.name])
                  if name in tool.args.model_fields}
        assert listed == {name: f.is_required() for name, f in tool.args.model_fields.items()}, tool.name


def test_the_keyless_example_runs_as_the_readme_writes_it(repo, cli, monkeypatch):
    section = _section("**Without an API key.**")
    script = re.search(r"```json\n(.*?)```", section, re.S).group(1)
    (repo / "turns.json").write_text(script)
    command = re.search(r"^(loopwright run .*--script turns\.json)", section, re.M).group(1)
    argv = shlex.split(command)[1:]
    monkeypatch.setenv("PATH", os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"])  # pytest on PATH
    code, out, err = cli(repo, *argv)
    assert code == 0, out + err
    assert "succeeded" in out and "merged" in out
    assert "return a + b" in (repo / "calc.py").read_text()


def _commands(parser, path: tuple[str, ...] = ()):
    """(path, flags, positional choices) of every command under `parser`, subcommands included."""
    import argparse

    flags, choices = [], []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _commands(sub, (*path, name))
        elif action.option_strings:
            flags.append(max(action.option_strings, key=len))  # the long form
        elif action.choices:
            choices += list(action.choices)
    if path:
        yield path, [f for f in flags if f not in ("--help", "--json")], choices


def test_the_cli_reference_names_every_command_flag_and_action():
    """Every command, subcommand, flag and positional choice of the parser is in the README's CLI reference, in
    a row that names its command (`loopwright lessons ...`); --json is said once for all."""
    from loopwright.cli.main import build_parser

    section = _section("## CLI reference")
    assert "takes `--json`" in section
    rows = [line for line in section.splitlines() if line.startswith("| `loopwright")]
    gaps = []
    for path, flags, choices in _commands(build_parser()):
        top = re.compile(rf"loopwright (?:[\w-]+\\\|)*{re.escape(path[0])}(?![\w-])")
        text = " ".join(row for row in rows if top.search(row.split(" | ")[0]))
        if not text:
            gaps.append(f"loopwright {path[0]}: no row")
            continue
        words = [*path[1:], *choices]
        gaps += [f"loopwright {' '.join(path)}: {w}" for w in words if not re.search(rf"(?<![\w-]){w}(?![\w-])", text)]
        gaps += [f"loopwright {' '.join(path)}: {f}" for f in flags if not re.search(rf"{f}(?![\w-])", text)]
    assert gaps == []


def test_the_layout_names_every_package_and_runtime_subpackage():
    root = Path(__file__).resolve().parent.parent
    layout = _section("## Layout")
    packages = sorted(p.parent.name for p in root.glob("*/__init__.py"))
    runtime = sorted(p.parent.name for p in (root / "runtime").glob("*/__init__.py"))
    assert [p for p in packages if f"\n{p}/" not in layout] == []
    assert [p for p in runtime if f"{p}/" not in layout] == []


def test_the_readme_says_which_files_of_the_project_folder_are_committed():
    from loopwright.runtime.project import SHARED

    section = README.split("**What to commit.**", 1)[1].split("\n\n", 1)[0]
    for name in SHARED:
        assert f"`{name}`" in section, name
