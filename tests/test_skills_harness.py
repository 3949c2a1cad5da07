"""Skills in a run: the catalog, `use_skill`, reading and running a skill's files, allowed-tools, hot reload."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
from support import call, turn, write_script

from loopwright.memory.store import Store
from loopwright.skills.catalog import BUNDLED_DIR, catalog_text, discover

EXPERIMENT = BUNDLED_DIR / "experiment"


@pytest.fixture(autouse=True)
def _home(tmp_path, monkeypatch):
    monkeypatch.setenv("LOOPWRIGHT_HOME", str(tmp_path / "home"))


def _skill(folder: Path, name: str, description: str, extra: str = "", body: str = "Do the thing.") -> Path:
    d = folder / name
    d.mkdir(parents=True, exist_ok=True)
    (d / "SKILL.md").write_text(f"---\nname: {name}\ndescription: {description}\n{extra}---\n{body}\n")
    return d


def test_an_agent_loads_a_skill_reads_its_files_and_runs_its_script(repo, cli, tmp_path):
    script = write_script(tmp_path / "s.json", [
        turn({"name": "use_skill", "arguments": {"name": "experiment"}}),
        turn(call("read_file", path=str(EXPERIMENT / "SKILL.md")), expect=f"Folder: {EXPERIMENT.resolve()}"),
        # the folder use_skill names (the shell's sandbox shows the skills' folders, read-only, where they are)
        turn(call("shell", command=f"python3 {EXPERIMENT.resolve()}/scripts/new_experiment.py --help"),
             expect="name: experiment"),
        turn(call("read_file", path="/etc/hostname"), expect="usage"),
        turn(call("finish", summary="looked"), expect="path escapes the worktree"),
    ])
    out = cli.json(repo, "run", "try the experiment skill", "--script", script, "--check", "true")
    assert out["status"] == "succeeded", out


def test_allowed_tools_limit_the_tools_while_the_skill_is_active(repo, cli, tmp_path):
    _skill(tmp_path / "home" / "skills", "read-only", "Only reads files. Use when inspecting.",
           extra="allowed-tools: Read Grep\n")
    script = write_script(tmp_path / "s.json", [
        turn({"name": "use_skill", "arguments": {"name": "read-only"}}),
        turn(call("shell", command="echo hi"), expect="you may use only: grep, read_file"),
        turn({"name": "use_skill", "arguments": {"name": "none"}},
             expect="not allowed while skill 'read-only' is active"),
        turn(call("shell", command="echo hi"), expect="every tool is available"),
        turn(call("finish", summary="ok"), expect="hi"),
    ])
    assert cli.json(repo, "run", "inspect", "--script", script, "--check", "true")["status"] == "succeeded"


def test_a_running_agent_sees_a_new_skill_at_its_next_turn(repo, cli, tmp_path, monkeypatch):
    user = tmp_path / "home" / "skills"
    user.mkdir(parents=True)
    # the agent's shell makes the skill, outside its worktree: the sandbox lets it write only there
    monkeypatch.setenv("LOOPWRIGHT_SANDBOX__WRITABLE", json.dumps([str(user)]))
    new = user / "fresh-skill"
    make = (f"mkdir -p {new} && printf -- '---\\nname: fresh-skill\\ndescription: Appeared while the run went. "
            f"Use when testing hot reload.\\n---\\nbody\\n' > {new}/SKILL.md && sleep 1")
    script = write_script(tmp_path / "s.json", [
        turn(call("shell", command=make)),
        turn({"name": "use_skill", "arguments": {"name": "fresh-skill"}}, expect="new: fresh-skill"),
        turn(call("finish", summary="ok"), expect="# Skill fresh-skill"),
    ])
    out = cli.json(repo, "run", "watch skills", "--script", script, "--check", "true")
    assert out["status"] == "succeeded", out
    store = Store(repo / ".loopwright" / "state.db")
    changed = store.events(out["run"], types=("skills_changed",))
    assert changed and changed[0][2].added == ["fresh-skill"]


def test_scopes_precedence_trust_and_the_catalog_budget(repo, tmp_path):
    project_skills = repo / ".claude" / "skills"
    _skill(project_skills, "experiment", "A project's own experiment skill. Use when told.")
    _skill(tmp_path / "home" / "skills" / "pack", "exp-helper", "Helps with experiments. Use for experiments.")
    untrusted = discover(repo, trusted=False)
    assert untrusted.get("experiment").scope == "bundled"
    assert any("loopwright trust" in d.message for d in untrusted.diagnostics)
    trusted = discover(repo, trusted=True)
    assert trusted.get("experiment").scope == "project" and trusted.get("loopwright:experiment").scope == "bundled"
    assert any("also in" in d.message for d in trusted.diagnostics)
    assert trusted.get("pack:exp-helper").pack == "pack"
    assert trusted.search("experiments")[0][1].name in ("exp-helper", "experiment")
    text, left_out = catalog_text(trusted.entries, budget_tokens=150)
    assert left_out and all(f"- {name}:" not in text for name in left_out)
    assert textwrap.dedent(text).count("\n- ") + len(left_out) == len(trusted.entries)


def test_skills_commands_validate_trust_enable_disable(repo, cli, tmp_path):
    bad = _skill(tmp_path / "bad", "Bad--Name", "x")
    code, out, _ = cli(repo, "skills", "validate", str(bad))
    assert code == 1 and "FAIL" in out
    assert cli(repo, "skills", "validate", str(EXPERIMENT))[0] == 0
    code, _, err = cli(repo, "skills", "validate", str(tmp_path / "missing"))
    assert code == 2 and "no such folder" in err
    _skill(repo / ".claude" / "skills", "house-style", "The project's house style. Use when writing code.")
    assert {r["name"]: r["status"] for r in cli.json(repo, "skills", "list")}["house-style"] == "untrusted"
    assert cli(repo, "trust")[0] == 0
    assert {r["name"]: r["status"] for r in cli.json(repo, "skills", "list")}["house-style"] == "enabled"
    cli(repo, "init")
    assert cli(repo, "skills", "disable", "house-style")[0] == 0
    rows = {r["name"]: r["status"] for r in cli.json(repo, "skills", "list")}
    assert rows["house-style"] == "disabled"
    assert cli(repo, "skills", "enable", "house-style")[0] == 0
    assert {r["name"]: r["status"] for r in cli.json(repo, "skills", "list")}["house-style"] == "enabled"


def test_skills_flag_chooses_what_the_agent_sees(repo, cli, tmp_path):
    user = tmp_path / "home" / "skills"
    _skill(user, "pdf-forms", "Fills PDF forms field by field. Use when a PDF form must be filled.")
    _skill(user, "kube-deploy", "Deploys services onto Kubernetes clusters. Use when shipping to a cluster.")

    def run(goal: str, choice: str, turns: list) -> dict:
        script = write_script(tmp_path / f"{choice}.json", [*turns, turn(call("finish", summary="ok"))])
        return cli.json(repo, "run", goal, "--script", script, "--check", "true", "--skills", choice)

    out = run("fill the pdf forms", "auto", [
        turn({"name": "use_skill", "arguments": {"name": "kube-deploy"}}),
        turn({"name": "use_skill", "arguments": {"name": "pdf-forms"}},
             expect="skill 'kube-deploy' is installed but not chosen for this task")])
    assert out["status"] == "succeeded", out
    out = run("anything", "none", [turn({"name": "use_skill", "arguments": {"name": "pdf-forms"}})])
    assert out["status"] == "succeeded", out  # the finish turn expects nothing; the unknown tool is checked next
    store = Store(repo / ".loopwright" / "state.db")
    assert "unknown tool 'use_skill'" in store.conversation(out["run"])[2].content[0].content
    out = run("anything", "kube-deploy", [
        turn({"name": "use_skill", "arguments": {"name": "pdf-forms"}}),
        turn({"name": "use_skill", "arguments": {"name": "kube-deploy"}}, expect="not chosen for this task")])
    assert out["status"] == "succeeded", out

    post = ("post", "deploy it", "--script", tmp_path / "none.json", "--skills")
    code, _, err = cli(repo, *post, "kube-deplo")
    assert code == 2 and "--skills: no skill named 'kube-deplo'" in err and "kube-deploy" in err
    assert len(err.strip().splitlines()) == 1
    code, _, err = cli(repo, *post, " , ")
    assert code == 2 and "--skills is empty" in err
    queued = cli.json(repo, *post, "kube-deploy, pdf-forms")
    assert Store(repo / ".loopwright" / "state.db").task(queued["task"]).options["skills"] == "kube-deploy,pdf-forms"
