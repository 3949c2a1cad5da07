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
