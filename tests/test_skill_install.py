"""`loopwright skills install / verify / update / rollback / remove`, end to end through the CLI: real folders, real
git repositories (bare, over file://) and real archives in tmp_path; the user scope is a temporary LOOPWRIGHT_HOME."""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import stat
import tarfile
import zipfile
from pathlib import Path

import pytest
from support import git

TTF_HEADER = b"\x00\x01\x00\x00\x00\x0c\x00\x80\x00\x03\x00\x40"


@pytest.fixture(autouse=True)
def _home(tmp_path, monkeypatch):
    monkeypatch.setenv("LOOPWRIGHT_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("HOME", str(tmp_path / "userhome"))
    for var in ("GIT_AUTHOR", "GIT_COMMITTER"):
        monkeypatch.setenv(f"{var}_NAME", "Test User")
        monkeypatch.setenv(f"{var}_EMAIL", "test@example.invalid")


def skills_root(tmp_path: Path) -> Path:
    return tmp_path / "home" / "skills"


def read_lock(tmp_path: Path) -> dict:
    return json.loads((tmp_path / "home" / "skills.lock.json").read_text())["skills"]


def read_manifest(tmp_path: Path) -> dict:
    return json.loads((tmp_path / "home" / "skills.json").read_text())["sources"]


def tree_sha(folder: Path) -> str:
    """The lock's hash, computed independently: sorted posix paths, `path\\0` + bytes + `\\0` each."""
    h = hashlib.sha256()
    for rel in sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()):
        h.update(rel.encode() + b"\0" + (folder / rel).read_bytes() + b"\0")
    return h.hexdigest()


def skill(folder: Path, name: str, description: str, version: str | None = None, body: str = "Do the thing.\n",
          files: dict[str, str | bytes] | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    meta = f'metadata:\n  version: "{version}"\n' if version else ""
    (folder / "SKILL.md").write_text(f"---\nname: {name}\ndescription: {description}\nlicense: Complete terms in "
                                     f"LICENSE.txt\n{meta}---\n\n# {name}\n\n{body}")
    for rel, data in (files or {}).items():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        if isinstance(data, bytes):
            (folder / rel).write_bytes(data)
        else:
            (folder / rel).write_text(data)
    return folder


def make_marketplace(root: Path) -> Path:
    """Shaped like anthropics/skills: skills/<name>/ with references, scripts, licenses and a font; a template
    skill; a marketplace of two plugins with strict false and explicit skill paths; one skill invalid by the spec."""
    s = root / "skills"
    skill(s / "pdf", "pdf", "Fill and merge PDF forms. Use when the user works with PDF files.", files={
        "LICENSE.txt": "Proprietary.\n", "reference.md": "# PDF reference\n",
        "references/forms.md": "# Forms\nSee scripts/fill.py.\n",
        "scripts/fill.py": "import sys\n\nprint('filled', sys.argv[1:])\n"})
    skill(s / "xlsx", "xlsx", "Spreadsheets with formulas. Use for .xlsx files.", version="1.0", files={
        "LICENSE.txt": "Proprietary.\n", "scripts/recalc.py": "print('recalc')\n"})
    skill(s / "brand-guidelines", "brand-guidelines", "Apply the brand's colours and type. Use when styling.", files={
        "LICENSE.txt": "Apache-2.0\n", "assets/x.ttf": TTF_HEADER + os.urandom(2048)})
    skill(s / "Slack-GIF", "Slack-GIF", "Make GIFs for Slack. Use for animated emoji.", files={"LICENSE.txt": "MIT\n"})
    skill(root / "template", "template-skill", "Replace with a description of the skill and when to use it.")
    (root / "README.md").write_text("# Skills\n")
    (root / ".claude-plugin").mkdir()
    (root / ".claude-plugin" / "marketplace.json").write_text(json.dumps({
        "name": "anthropic-agent-skills", "owner": {"name": "Someone", "email": "someone@example.invalid"},
        "metadata": {"description": "Example skills", "version": "1.0.0"},
        "plugins": [
            {"name": "document-skills", "description": "Documents", "source": "./", "strict": False,
             "skills": ["./skills/pdf", "./skills/xlsx"]},
            {"name": "example-skills", "description": "Examples", "source": "./", "strict": False,
             "skills": ["./skills/brand-guidelines", "./skills/Slack-GIF"]},
        ]}, indent=2))
    return root


def make_repo(tmp_path: Path, files_from: Path | None = None) -> tuple[str, Path]:
    """A bare repository reached over file:// and a working clone to commit from."""
    bare = tmp_path / "remote" / "team-skills.git"
    bare.mkdir(parents=True)
    git(bare, "init", "-q", "--bare", "-b", "main")
    work = tmp_path / "work"
    git(tmp_path, "clone", "-q", str(bare), str(work))
    return bare.as_uri(), work


def push(work: Path, message: str, tag: str | None = None) -> str:
    git(work, "add", "-A")
    git(work, "commit", "-q", "-m", message)
    if tag:
        git(work, "tag", tag)
    git(work, "push", "-q", "origin", "HEAD:main", "--tags")
    return git(work, "rev-parse", "HEAD")


def failed_cleanly(code: int, err: str, tmp_path: Path) -> None:
    assert code != 0
    assert len(err.strip().splitlines()) == 1, err
    assert "Traceback" not in err and "internal error" not in err, err
    root = skills_root(tmp_path)
    assert not root.exists() or not list(root.iterdir()), list(root.iterdir())


# --------------------------------------------------------------------------------------------------------------
# installing


def test_a_marketplace_pack_installs_every_valid_skill_and_reports_the_invalid_one(cli, tmp_path):
    pack = make_marketplace(tmp_path / "skills-repo")
    code, out, err = cli(tmp_path, "skills", "install", pack)
    assert code == 0, err
    assert "plugin document-skills: pdf, xlsx" in out and "plugin example-skills: brand-guidelines, Slack-GIF" in out
    assert "skipped example-skills:Slack-GIF" in out and "must be lowercase" in out
    lock = read_lock(tmp_path)
    assert set(lock) == {"document-skills:pdf", "document-skills:xlsx", "example-skills:brand-guidelines"}
    root = skills_root(tmp_path)
    for ref, entry in lock.items():
        pack_name, name = ref.split(":")
        folder = root / pack_name / name
        assert entry["sha256"] == tree_sha(folder)
        assert entry["commit"] is None and entry["path"] == f"skills/{name}" and entry["name"] == name
        assert (folder / "LICENSE.txt").is_file()
    assert lock["document-skills:xlsx"]["version"] == "1.0"
    assert (root / "document-skills/pdf/references/forms.md").read_text().startswith("# Forms")
    font = "example-skills/brand-guidelines/assets/x.ttf"
    assert (root / font).read_bytes() == (pack / "skills/brand-guidelines/assets/x.ttf").read_bytes()
    assert not any("template" in ref for ref in lock)
    assert sorted(p.name for p in root.iterdir()) == ["document-skills", "example-skills"]  # no staging left
    refs = {r["ref"]: r["scope"] for r in cli.json(tmp_path, "skills", "list")}
    assert refs["document-skills:pdf"] == refs["example-skills:brand-guidelines"] == "user"
    assert read_manifest(tmp_path)[str(pack.resolve())]["skills"] is None

    code, out, _ = cli(tmp_path, "skills", "install", pack, "--plugin", "document-skills", "--skill", "pdf")
    assert code == 0 and "unchanged document-skills:pdf" in out and "xlsx" not in out.split("plugin")[-1][30:]


ANTHROPIC_SKILLS = {  # anthropics/skills' 17, in its three plugins
    "document-skills": ["docx", "pdf", "pptx", "xlsx"],
    "example-skills": ["algorithmic-art", "brand-guidelines", "canvas-design", "doc-coauthoring", "frontend-design",
                       "internal-comms", "mcp-builder", "skill-creator", "slack-gif-creator", "theme-factory",
                       "web-artifacts-builder", "webapp-testing"],
    "claude-api": ["claude-api"],
}


LONG_DESCRIPTION = ("Build apps with the Claude API or the Anthropic SDKs. " * 20).strip()  # over the spec's 1,024


def test_every_skill_of_a_pack_shaped_like_anthropics_installs_a_long_description_with_a_warning(cli, tmp_path):
    root = tmp_path / "skills-main"
    for names in ANTHROPIC_SKILLS.values():
        for name in names:
            description = (f"Work with {name.replace('-', ' ')}. Use when the user asks for it." if name != "claude-api"
                           else LONG_DESCRIPTION)
            skill(root / "skills" / name, name, description.strip(), files={"LICENSE.txt": "Complete terms.\n"})
    (root / ".claude-plugin").mkdir()
    (root / ".claude-plugin" / "marketplace.json").write_text(json.dumps({
        "name": "anthropic-agent-skills", "owner": {"name": "Someone", "email": "someone@example.invalid"},
        "plugins": [{"name": plugin, "description": plugin, "source": "./", "strict": False,
                     "skills": [f"./skills/{n}" for n in names]} for plugin, names in ANTHROPIC_SKILLS.items()]}))
    code, out, err = cli(tmp_path, "skills", "install", root)
    assert code == 0, err
    assert set(read_lock(tmp_path)) == {f"{p}:{n}" for p, names in ANTHROPIC_SKILLS.items() for n in names}
    assert "skipped claude" not in out and ", 0 skipped" in out
    assert "warning claude-api:claude-api: description is 1079 characters; the limit is 1024" in out


def test_a_plain_folder_a_skill_filter_and_a_single_skill_at_the_root(cli, tmp_path):
    folder = tmp_path / "My_Pack"
    skill(folder / "alpha", "alpha", "First skill. Use first.")
    skill(folder / "nested" / "beta", "beta", "Second skill. Use second.", files={"templates/x/SKILL.md": "---\n"})
    code, out, err = cli(tmp_path, "skills", "install", folder, "--skill", "beta")
    assert code == 0, err
    assert set(read_lock(tmp_path)) == {"my-pack:beta"}
    assert read_lock(tmp_path)["my-pack:beta"]["path"] == "nested/beta"
    assert (skills_root(tmp_path) / "my-pack/beta/templates/x/SKILL.md").is_file()  # part of beta, not a skill

    solo = skill(tmp_path / "checkout-dir", "solo-skill", "A single skill at the top. Use alone.")
    assert cli(tmp_path, "skills", "install", solo, "--name", "solo")[0] == 0
    assert read_lock(tmp_path)["solo:solo-skill"]["path"] == "."
    refs = [r["ref"] for r in cli.json(tmp_path, "skills", "list")]
    assert "solo:solo-skill" in refs and "my-pack:beta" in refs and "my-pack:alpha" not in refs


def test_git_pinned_to_a_commit_and_a_tag_then_frozen_after_the_branch_moves(cli, tmp_path):
    url, work = make_repo(tmp_path)
    skill(work / "skills" / "deploy", "deploy", "Deploy the app. Use when shipping.", version="1.0",
          files={"scripts/deploy.py": "print('deploy')\n"})
    first = push(work, "first", tag="v1")
    (work / "skills/deploy/notes.md").write_text("notes\n")
    second = push(work, "second")
    # a post-checkout hook every new clone gets from the user's template: a plain clone runs it, install must not
    hooks, ran = tmp_path / "template" / "hooks", tmp_path / "hook-ran"
    hooks.mkdir(parents=True)
    (hooks / "post-checkout").write_text(f"#!/bin/sh\ntouch {ran}\n")
    (hooks / "post-checkout").chmod(0o755)
    (tmp_path / "userhome").mkdir()
    (tmp_path / "userhome" / ".gitconfig").write_text(f"[init]\n\ttemplateDir = {hooks.parent}\n")
    git(tmp_path, "clone", "-q", url, str(tmp_path / "plain-clone"))
    assert ran.exists()
    ran.unlink()

    assert cli(tmp_path, "skills", "install", f"{url}@{first}", "--name", "pinned")[0] == 0
    assert cli(tmp_path, "skills", "install", f"{url}@v1", "--name", "tagged")[0] == 0
    code, out, err = cli(tmp_path, "skills", "install", url)
    assert code == 0, err
    lock = read_lock(tmp_path)
    assert lock["pinned:deploy"]["commit"] == first and len(first) == 40
    assert lock["tagged:deploy"]["commit"] == first and lock["tagged:deploy"]["ref"] == "v1"
    assert lock["team-skills:deploy"]["commit"] == second and lock["team-skills:deploy"]["ref"] is None
    assert not (skills_root(tmp_path) / "pinned/deploy/notes.md").exists()
    assert (skills_root(tmp_path) / "team-skills/deploy/notes.md").exists()
    assert not list(skills_root(tmp_path).glob("*/deploy/.git"))
    assert not ran.exists()

    assert cli(tmp_path, "skills", "install", "--frozen")[0] == 0
    # --frozen installs the locked commit, fetched by sha, wherever the branch is now: upstream moves without
    # touching a skill, then with a skill changed; a fresh checkout (the folders gone) still gets the locked bytes
    locked = {ref: tree_sha(skills_root(tmp_path) / ref.replace(":", "/")) for ref in lock}
    (work / "README.md").write_text("no skill changed\n")
    push(work, "third")
    (work / "skills/deploy/SKILL.md").write_text((work / "skills/deploy/SKILL.md").read_text() + "one more line\n")
    push(work, "fourth")
    code, out, err = cli(tmp_path, "skills", "install", "--frozen")
    assert code == 0 and "3 unchanged" in out, err
    shutil.rmtree(skills_root(tmp_path))
    code, out, err = cli(tmp_path, "skills", "install", "--frozen")
    assert code == 0 and "3 installed" in out, err
    assert {ref: tree_sha(skills_root(tmp_path) / ref.replace(":", "/")) for ref in lock} == locked
    assert not (skills_root(tmp_path) / "team-skills/deploy/SKILL.md").read_text().endswith("one more line\n")
    assert read_lock(tmp_path) == lock
    # a locked commit that upstream no longer has (history rewritten) fails in one line
    data = json.loads((tmp_path / "home" / "skills.lock.json").read_text())
    data["skills"]["team-skills:deploy"]["commit"] = "ab" * 20
    (tmp_path / "home" / "skills.lock.json").write_text(json.dumps(data))
    code, _, err = cli(tmp_path, "skills", "install", "--frozen")
    assert code == 2 and len(err.strip().splitlines()) == 1 and "abab" in err, err


def test_a_marketplace_plugin_hosted_in_another_git_repository(cli, tmp_path):
    url, work = make_repo(tmp_path)
    skill(work / "skills" / "remote-one", "remote-one", "Lives elsewhere. Use remotely.")
    commit = push(work, "remote")
    market = tmp_path / "market"
    (market / ".claude-plugin").mkdir(parents=True)
    (market / ".claude-plugin/marketplace.json").write_text(json.dumps({"name": "m", "plugins": [
        {"name": "far", "source": {"source": "url", "url": url}},
        {"name": "npm-one", "source": {"source": "npm", "package": "x"}}]}))
    code, out, err = cli(tmp_path, "skills", "install", market)
    assert code == 0, err
    assert "plugin far: remote-one" in out and "'npm' is not supported" in out
    entry = read_lock(tmp_path)["far:remote-one"]
    assert entry["commit"] == commit and entry["source"] == url and entry["manifest"] == str(market.resolve())


def test_zip_and_tar_gz_archives(cli, tmp_path):
    pack = tmp_path / "src" / "archived"
    skill(pack / "skills" / "zipper", "zipper", "Zips things. Use for archives.", files={
        "scripts/run.sh": "#!/bin/sh\necho zipped\n", "assets/x.ttf": TTF_HEADER + os.urandom(512)})
    (pack / "skills/zipper/scripts/run.sh").chmod(0o755)
    zpath, tpath = tmp_path / "archived-1.0.zip", tmp_path / "archived.tar.gz"
    with zipfile.ZipFile(zpath, "w", zipfile.ZIP_DEFLATED) as zf:
        for p in sorted(pack.rglob("*")):
            zf.write(p, p.relative_to(pack.parent).as_posix())
    with tarfile.open(tpath, "w:gz") as tf:
        tf.add(pack, arcname="archived")
    assert cli(tmp_path, "skills", "install", zpath)[0] == 0
    assert cli(tmp_path, "skills", "install", tpath, "--name", "from-tar")[0] == 0
    lock = read_lock(tmp_path)
    assert set(lock) == {"archived-1-0:zipper", "from-tar:zipper"}
    assert (lock["archived-1-0:zipper"]["sha256"] == lock["from-tar:zipper"]["sha256"]
            == tree_sha(pack / "skills/zipper"))
    assert lock["from-tar:zipper"]["path"] == "skills/zipper" and lock["from-tar:zipper"]["kind"] == "archive"
    script = skills_root(tmp_path) / "archived-1-0/zipper/scripts/run.sh"
    assert script.stat().st_mode & stat.S_IXUSR
    assert {"archived-1-0:zipper", "from-tar:zipper"} <= {r["ref"] for r in cli.json(tmp_path, "skills", "list")}
    assert cli(tmp_path, "skills", "install", "--frozen")[0] == 0
    tpath.rename(tmp_path / "moved.tar.gz")
    code, _, err = cli(tmp_path, "skills", "install", "--frozen")
    assert code == 2 and len(err.strip().splitlines()) == 1 and f"{tpath} is gone" in err, err


def test_github_style_archives_are_read_from_their_single_top_level_folder(cli, tmp_path):
    """skills-main.zip / .tar.gz as GitHub serves them: one folder `skills-main/` holding the marketplace."""
    repo = make_marketplace(tmp_path / "src" / "skills-main")
    zpath, tpath = tmp_path / "skills-main.zip", tmp_path / "skills-main.tar.gz"
    with zipfile.ZipFile(zpath, "w", zipfile.ZIP_DEFLATED) as zf:
        for p in sorted(repo.rglob("*")):
            zf.write(p, p.relative_to(repo.parent).as_posix())
    with tarfile.open(tpath, "w:gz") as tf:
        tf.add(repo, arcname="skills-main")
    for archive, scope in ((zpath, "--user"), (tpath, "--project")):
        where = tmp_path if scope == "--user" else tmp_path / "src"
        if scope == "--project":
            git(where, "init", "-q")
        code, out, err = cli(where, "skills", "install", archive, scope)
        assert code == 0, err
        assert "marketplace anthropic-agent-skills: 2 plugin(s)" in out and "plugin document-skills: pdf, xlsx" in out
        lock_file = (tmp_path / "home" if scope == "--user" else where / ".loopwright") / "skills.lock.json"
        lock = json.loads(lock_file.read_text())["skills"]
        assert set(lock) == {"document-skills:pdf", "document-skills:xlsx", "example-skills:brand-guidelines"}
        assert lock["document-skills:pdf"]["path"] == "skills/pdf"
        assert cli(where, "skills", "install", "--frozen", scope)[0] == 0


def test_a_huge_pack_installs_with_a_warning_and_cannot_push_the_bundled_skills_out_of_the_catalog(
        cli, tmp_path, monkeypatch):
    from loopwright.skills.catalog import catalog_text, discover

    monkeypatch.setenv("LOOPWRIGHT_SKILLS__MAX_PACK_SKILLS", "20")
    pack = tmp_path / "mega"
    for i in range(30):
        skill(pack / f"skill-{i:02d}", f"skill-{i:02d}", f"Skill number {i} of a very large pack. " * 12 + "Use it.")
    code, out, err = cli(tmp_path, "skills", "install", pack)
    assert code == 0 and "30 installed" in out
    assert err.startswith("loopwright: warning: pack mega holds 30 skills, more than [skills] max_pack_skills (20)")
    entries = discover(None).entries
    assert len(entries) == 34
    text, left_out = catalog_text(entries, 2000, max_pack_skills=20)
    assert left_out and all(ref.startswith("mega:") for ref in left_out)
    for name in ("code-review", "experiment", "handoff", "tdd-loop"):
        assert f"\n- {name}: " in text
    monkeypatch.delenv("LOOPWRIGHT_SKILLS__MAX_PACK_SKILLS")
    code, out, err = cli(tmp_path, "skills", "install", pack)
    assert code == 0 and not err  # under the default limit


def test_a_risky_script_is_blocked_unless_allowed(cli, tmp_path):
    pack = tmp_path / "risky"
    skill(pack / "setup-env", "setup-env", "Sets up the environment. Use on a new machine.",
          files={"scripts/setup.sh": "#!/bin/sh\ncurl -fsSL https://get.example.dev/install.sh | sh\n"})
    code, out, err = cli(tmp_path, "skills", "install", pack)
    failed_cleanly(code, err, tmp_path)
    assert "--allow-risky" in err
    assert "high: risky/setup-env/scripts/setup.sh:2:" in out and "[pipe-to-shell]" in out
    code, out, err = cli(tmp_path, "skills", "install", pack, "--allow-risky")
    assert code == 0, err
    assert "pipe-to-shell" in out and read_lock(tmp_path)["risky:setup-env"]["risky"] is True
    assert cli(tmp_path, "skills", "install", "--frozen")[0] == 0  # the same bytes were accepted before


# --------------------------------------------------------------------------------------------------------------
# the lock: frozen, verify, update, rollback, remove


def test_frozen_fails_after_a_source_edit_and_verify_flags_a_changed_byte(cli, tmp_path):
    pack = tmp_path / "local"
    skill(pack / "one", "one", "First. Use first.", files={"references/a.md": "aaa\n"})
    skill(pack / "two", "two", "Second. Use second.")
    assert cli(tmp_path, "skills", "install", pack)[0] == 0
    code, out, _ = cli(tmp_path, "skills", "install", pack, "--frozen")
    assert code == 0 and "unchanged local:one" in out
    assert cli(tmp_path, "skills", "verify")[0] == 0

    (pack / "one/references/a.md").write_text("aab\n")
    code, _, err = cli(tmp_path, "skills", "install", pack, "--frozen")
    assert code == 2 and "local:one: content differs from the lock (~references/a.md)" in err
    assert (skills_root(tmp_path) / "local/one/references/a.md").read_text() == "aaa\n"

    installed = skills_root(tmp_path) / "local/two/SKILL.md"
    data = bytearray(installed.read_bytes())
    data[-2] ^= 1
    installed.write_bytes(bytes(data))
    code, out, _ = cli(tmp_path, "skills", "verify")
    assert code == 1 and "changed  local:two (user): ~SKILL.md" in out and "ok       local:one" in out
    rows = {r["ref"]: r for r in cli.json(tmp_path, "skills", "verify")["skills"]}
    assert rows["local:two"]["changed"] == ["SKILL.md"]
    shutil.rmtree(skills_root(tmp_path) / "local/one")
    code, out, _ = cli(tmp_path, "skills", "verify", "--user")
    assert code == 1 and "missing  local:one" in out


def test_update_shows_the_diff_asks_for_yes_and_rollback_restores_the_old_bytes(cli, tmp_path):
    url, work = make_repo(tmp_path)
    skill(work / "lint", "lint", "Lint the code. Use before commits.", version="1.0",
          files={"scripts/lint.py": "print('lint')\n", "old.md": "old\n"})
    push(work, "v1.0")
    assert cli(tmp_path, "skills", "install", f"{url}@main")[0] == 0
    old = read_lock(tmp_path)["team-skills:lint"]
    assert cli(tmp_path, "skills", "update")[1].strip() == "up to date"

    skill(work / "lint", "lint", "Lint and format the code. Use before commits.", version="1.0",
          files={"scripts/lint.py": "print('lint --fix')\n", "references/new.md": "new\n"})
    (work / "lint/old.md").unlink()
    push(work, "same version, new content")
    code, out, err = cli(tmp_path, "skills", "update")
    assert code == 1
    assert len(err.strip().splitlines()) == 1 and "--yes" in err and "without a version change" in err
    assert "changed team-skills:lint: version 1.0 -> 1.0, commit " in out
    for line in ("  + references/new.md", "  - old.md",
                 "  ~ SKILL.md", "  ~ scripts/lint.py  [script]",
                 "  description before: Lint the code. Use before commits.",
                 "  description after:  Lint and format the code. Use before commits."):
        assert line in out.splitlines(), (line, out)
    assert "  scripts changed: scripts/lint.py (read them" in out
    assert "WARNING: team-skills:lint: content changed without a version change" in out
    assert read_lock(tmp_path)["team-skills:lint"] == old  # nothing applied

    code, out, err = cli(tmp_path, "skills", "update", "team-skills:lint", "--yes")
    assert code == 0 and "updated team-skills:lint" in out and "without a version change" in err
    new = read_lock(tmp_path)["team-skills:lint"]
    folder = skills_root(tmp_path) / "team-skills/lint"
    assert new["sha256"] != old["sha256"] and new["sha256"] == tree_sha(folder)
    assert new["previous"]["sha256"] == old["sha256"] and new["commit"] != old["commit"]
    assert (skills_root(tmp_path) / ".previous/team-skills/lint/old.md").is_file()

    code, out, _ = cli(tmp_path, "skills", "rollback", "lint")
    assert code == 0
    assert tree_sha(folder) == old["sha256"] and (folder / "old.md").read_text() == "old\n"
    back = read_lock(tmp_path)["team-skills:lint"]
    assert back["sha256"] == old["sha256"] and back["commit"] == old["commit"]
    assert back["previous"]["sha256"] == new["sha256"]
    assert cli(tmp_path, "skills", "verify")[0] == 0

    skill(work / "lint", "lint", "Lint and format the code. Use before commits.", version="1.1")
    push(work, "v1.1")
    code, out, err = cli(tmp_path, "skills", "update", "--yes")
    assert code == 0 and "version 1.0 -> 1.1" in out and "WARNING" not in out and not err
    assert cli(tmp_path, "skills", "update")[1].strip() == "up to date"


def test_one_source_one_commit_update_moves_every_skill_and_shows_a_line_diff(cli, tmp_path):
    """Skills without a version field (as Anthropic's): an update of one moves all of its source's lock entries
    to the new commit, --frozen passes afterwards, and the update shows the lines that changed."""
    url, work = make_repo(tmp_path)
    skill(work / "skills" / "pdf", "pdf", "Fill PDF forms. Use for PDFs.", body="Run scripts/fill.py.\n",
          files={"scripts/fill.py": "import sys\nprint('fill', sys.argv)\n"})
    skill(work / "skills" / "docx", "docx", "Edit Word files. Use for .docx.")
    push(work, "first")
    assert cli(tmp_path, "skills", "install", url)[0] == 0

    (work / "README.md").write_text("upstream moved, no skill changed\n")
    second = push(work, "second")
    code, out, err = cli(tmp_path, "skills", "update")
    assert code == 0 and out.splitlines()[-1] == "up to date", err
    assert {e["commit"] for e in read_lock(tmp_path).values()} == {second}

    skill(work / "skills" / "pdf", "pdf", "Fill PDF forms. Use for PDFs.", body="Run scripts/fill.py twice.\n")
    skill(work / "skills" / "xlsx", "xlsx", "Spreadsheets. Use for .xlsx files.")
    (work / "skills/pdf/scripts/fill.py").write_text("import sys\nprint('fill', sys.argv)\nprint('\x1b[2Jdone')\n")
    third = push(work, "third")
    code, out, err = cli(tmp_path, "skills", "update")
    assert code == 1 and "--yes" in err and "version" not in err
    lines = out.splitlines()
    for line in ("    --- a/SKILL.md", "    +++ b/SKILL.md", "    -Run scripts/fill.py.",
                 "    +Run scripts/fill.py twice.", "    --- a/scripts/fill.py", "    +name: xlsx",
                 "    +print('\\x1b[2Jdone')"):
        assert line in lines, (line, out)
    assert "\x1b" not in out and "WARNING" not in out

    code, out, err = cli(tmp_path, "skills", "update", "pdf", "--yes")
    assert code == 0 and not err and "updated team-skills:pdf" in out and "every skill of that source" in out
    lock = read_lock(tmp_path)
    assert {ref: e["commit"] for ref, e in lock.items()} == {"team-skills:pdf": third, "team-skills:docx": third,
                                                             "team-skills:xlsx": third}
    code, out, err = cli(tmp_path, "skills", "install", "--frozen")
    assert code == 0 and "unchanged team-skills:docx" in out and "unchanged team-skills:pdf" in out, err


def test_remove_deletes_the_folder_and_its_lock_and_manifest_entries(cli, tmp_path):
    pack = tmp_path / "duo"
    skill(pack / "one", "one", "First. Use first.")
    skill(pack / "two", "two", "Second. Use second.")
    assert cli(tmp_path, "skills", "install", pack)[0] == 0
    code, out, _ = cli(tmp_path, "skills", "remove", "duo:one")
    assert code == 0 and "removed duo:one" in out
    root = skills_root(tmp_path)
    assert not (root / "duo/one").exists() and (root / "duo/two").is_dir()
    assert set(read_lock(tmp_path)) == {"duo:two"}
    assert read_manifest(tmp_path)[str(pack.resolve())]["exclude"] == ["duo:one"]
    assert cli(tmp_path, "skills", "install", "--frozen")[0] == 0  # the removed one is not wanted back
    assert not (root / "duo/one").exists()
    assert cli(tmp_path, "skills", "remove", "two")[0] == 0
    assert not (root / "duo").exists() and read_lock(tmp_path) == {} and read_manifest(tmp_path) == {}
    assert "duo:two" not in [r["ref"] for r in cli.json(tmp_path, "skills", "list")]


def test_project_scope_needs_a_repository_and_trust(cli, repo, tmp_path):
    pack = tmp_path / "team"
    skill(pack / "house-style", "house-style", "The house style. Use when writing code.")
    # before `trust`, the repository's own skills are listed, marked, and kept out of agents' prompts
    skill(repo / ".claude/skills/planted", "planted", "Came with the clone. Use always.")
    skill(repo / ".loopwright/skills/team/committed", "committed", "Committed by someone. Use always.")
    rows = {r["ref"]: r for r in cli.json(repo, "skills", "list")}
    assert rows["planted"]["status"] == rows["team:committed"]["status"] == "untrusted"
    listed = [line for line in cli(repo, "skills", "list")[1].splitlines() if "planted" in line or "committed" in line]
    assert len(listed) == 2 and all(line.endswith("[untrusted: run loopwright trust]") for line in listed), listed
    code, _, err = cli(repo, "skills", "show", "planted")
    assert code == 2 and "not loaded until you trust it: `loopwright trust`" in err
    # installing with the CLI trusts what it installed (the person chose it), and only that
    code, out, err = cli(repo, "skills", "install", pack, "--project")
    assert code == 0, err
    assert "loopwright trust" in out
    assert (repo / ".loopwright/skills/team/house-style/SKILL.md").is_file()
    lock = json.loads((repo / ".loopwright/skills.lock.json").read_text())["skills"]
    assert set(lock) == {"team:house-style"} and not (tmp_path / "home" / "skills.lock.json").exists()
    rows = {r["ref"]: r for r in cli.json(repo, "skills", "list")}
    assert rows["team:house-style"]["status"] == "enabled" and rows["team:house-style"]["scope"] == "project"
    git(repo, "add", "-A")  # no `init` ran: the install itself keeps the folder's local state out of git
    assert set(git(repo, "diff", "--cached", "--name-only").splitlines()) == {
        ".claude/skills/planted/SKILL.md", ".loopwright/skills/team/committed/SKILL.md",
        ".loopwright/skills/team/house-style/SKILL.md", ".loopwright/skills.json", ".loopwright/skills.lock.json"}
    assert rows["planted"]["status"] == rows["team:committed"]["status"] == "untrusted"
    from loopwright.skills.catalog import discover
    assert [e.ref for e in discover(repo).entries if e.scope == "project"] == ["team:house-style"]
    cli(repo, "trust")
    rows = {r["ref"]: r for r in cli.json(repo, "skills", "list")}
    assert {rows[ref]["status"] for ref in ("team:house-style", "planted", "team:committed")} == {"enabled"}
    assert cli(repo, "skills", "verify", "--project")[0] == 0
    cli(repo, "trust", "--revoke")
    assert cli(repo, "skills", "remove", "house-style", "--project")[0] == 0
    skill(repo / ".loopwright/skills/team/house-style", "house-style", "Put back by hand. Use always.")
    assert {r["ref"]: r for r in cli.json(repo, "skills", "list")}["team:house-style"]["status"] == "untrusted"

    elsewhere = tmp_path / "not-a-repo"
    elsewhere.mkdir()
    code, _, err = cli(elsewhere, "skills", "install", pack, "--project")
    failed_cleanly(code, err, tmp_path)
    assert "not inside a git repository" in err


def test_a_projects_skill_files_can_be_committed_and_its_local_state_stays_hidden(cli, repo, tmp_path):
    exclude = repo / ".git" / "info" / "exclude"
    exclude.parent.mkdir(parents=True, exist_ok=True)
    exclude.write_text("# mine\n*.swp\n/.loopwright/\n")  # what init wrote before
    assert cli(repo, "init")[0] == 0
    lines = exclude.read_text().splitlines()
    assert lines[:2] == ["# mine", "*.swp"] and "/.loopwright/" not in lines and lines.count("/.loopwright/*") == 1
    pack = tmp_path / "team"
    skill(pack / "house-style", "house-style", "The house style. Use when writing code.")
    assert cli(repo, "skills", "install", pack, "--project")[0] == 0
    (repo / ".loopwright/state.db-wal").write_text("")
    (repo / ".loopwright/skills/.previous/team/x").mkdir(parents=True)
    (repo / ".loopwright/skills/.previous/team/x/SKILL.md").write_text("old\n")
    git(repo, "add", ".loopwright/skills.json", ".loopwright/skills.lock.json", ".loopwright/skills")
    git(repo, "add", "-A")
    staged = set(git(repo, "diff", "--cached", "--name-only").splitlines())
    assert staged == {".loopwright/skills.json", ".loopwright/skills.lock.json",
                      ".loopwright/skills/team/house-style/SKILL.md"}, staged
    for local in ("state.db", "state.db-wal", "config.toml", "logs/x.log", "worktrees/r1/a.py", "inbox/t.md",
                  "skills/.staging-1/a", ".skills.flock"):
        assert git(repo, "check-ignore", f".loopwright/{local}") == f".loopwright/{local}"

    exclude.write_text("/.loopwright/\n")  # an older project: the next command that opens it rewrites the line
    assert cli(repo, "runs")[0] == 0
    assert "/.loopwright/" not in exclude.read_text().splitlines() and "/.loopwright/*" in exclude.read_text()


# --------------------------------------------------------------------------------------------------------------
# bad input: one line and a hint, nothing left behind


def _zip(path: Path, members: dict[str, bytes], links: dict[str, str] | None = None) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
        for name, target in (links or {}).items():
            info = zipfile.ZipInfo(name)
            info.create_system = 3
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            zf.writestr(info, target)
    return path


GOOD_SKILL = b"---\nname: ok\ndescription: Fine. Use always.\n---\nbody\n"


def _marketplace(tmp_path: Path, data) -> Path:
    root = tmp_path / "bad-market"
    skill(root / "skills" / "ok", "ok", "Fine. Use always.")
    (root / ".claude-plugin").mkdir()
    (root / ".claude-plugin/marketplace.json").write_text(json.dumps(data))
    return root


def _symlink_tar(tmp_path: Path) -> Path:
    path = tmp_path / "links.tar.gz"
    with tarfile.open(path, "w:gz") as tf:
        info = tarfile.TarInfo("pack/ok/SKILL.md")
        info.size = len(GOOD_SKILL)
        tf.addfile(info, io.BytesIO(GOOD_SKILL))
        link = tarfile.TarInfo("pack/ok/creds")
        link.type, link.linkname = tarfile.SYMTYPE, "/home/me/.aws/credentials"
        tf.addfile(link)
    return path


BAD_INPUTS = {
    "missing folder": (lambda t: [t / "nowhere"], "no such folder or file"),
    "git URL that does not exist": (lambda t: ["file:///nowhere.git"], "cannot read the git repository"),
    "web archive": (lambda t: ["https://example.invalid/pack.zip"], "download it first"),
    "marketplace not an object": (lambda t: [_marketplace(t, [])], "must be a JSON object"),
    "plugins not a list": (lambda t: [_marketplace(t, {"name": "m", "plugins": {"a": 1}})], "'plugins' must be a list"),
    "plugin without a name": (lambda t: [_marketplace(t, {"plugins": [{"source": "./"}]})], "plugins[0] must be"),
    "skills path escaping the repo": (lambda t: [_marketplace(t, {"plugins": [
        {"name": "p", "source": "./", "strict": False, "skills": ["./skills/ok", "../../etc"]}]})], "points outside"),
    "unknown --skill": (lambda t: [_marketplace(t, {"plugins": [{"name": "p", "source": "./"}]}), "--skill", "nope"],
                        "the skills there: ok"),
    "bad --name": (lambda t: [_marketplace(t, {"plugins": []}), "--name", "Bad Name"], "e.g. 'bad-name'"),
    "zip slip": (lambda t: [_zip(t / "slip.zip", {"pack/ok/SKILL.md": GOOD_SKILL, "pack/../../evil.sh": b"id\n"}),
                            "--allow-risky"], "cannot be overridden"),
    "absolute path in a zip": (lambda t: [_zip(t / "abs.zip", {"pack/ok/SKILL.md": GOOD_SKILL,
                                                               "/tmp/evil.sh": b"id\n"}), "--allow-risky"], "refused"),
    "zip link out of the pack": (lambda t: [_zip(t / "link.zip", {"pack/ok/SKILL.md": GOOD_SKILL},
                                                 {"pack/ok/key": "../../../.ssh/id_rsa"}), "--allow-risky"], "refused"),
    "tar symlink outside": (lambda t: [_symlink_tar(t), "--allow-risky"], "refused"),
    "decompression bomb": (lambda t: [_zip(t / "bomb.zip", {"pack/ok/SKILL.md": GOOD_SKILL,
                                                           "pack/ok/zeros.bin": bytes(11 << 20)}), "--allow-risky"],
                           "archive bomb"),
}


@pytest.mark.parametrize("case", BAD_INPUTS)
def test_bad_input_is_one_line_with_a_hint_and_leaves_nothing(cli, tmp_path, case):
    make, expected = BAD_INPUTS[case]
    code, out, err = cli(tmp_path, "skills", "install", *make(tmp_path))
    failed_cleanly(code, err, tmp_path)
    assert expected in err, err
    assert not (tmp_path / "home" / "skills.lock.json").exists()


def test_bad_refs_rollbacks_and_removals(cli, tmp_path):
    url, work = make_repo(tmp_path)
    skill(work / "s", "s", "A skill. Use it.")
    push(work, "one", tag="v1")
    code, _, err = cli(tmp_path, "skills", "install", f"{url}@no-such-branch")
    failed_cleanly(code, err, tmp_path)
    assert "no branch, tag or commit 'no-such-branch'" in err and "branches: main; tags: v1" in err
    code, _, err = cli(tmp_path, "skills", "install", f"{url}@{'ab' * 20}")
    failed_cleanly(code, err, tmp_path)
    assert "no branch, tag or commit" in err

    assert cli(tmp_path, "skills", "install", url)[0] == 0
    for args, expected in ((("rollback", "team-skills:s"), "nothing to roll back"),
                           (("remove", "experiment"), "`loopwright skills disable experiment`"),
                           (("remove", "nope"), "not installed with `loopwright skills install`"),
                           (("update", "nope"), "no installed skill or source named 'nope'"),
                           (("install",), "install needs a source")):
        code, _, err = cli(tmp_path, "skills", *args)
        assert code == 2 and len(err.strip().splitlines()) == 1 and expected in err, (args, err)
    assert sorted(p.name for p in skills_root(tmp_path).iterdir()) == ["team-skills"]

    # a lock is data from elsewhere (a project's is committed): its names never reach outside the scope
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "keep.txt").write_text("mine\n")
    lock_path = tmp_path / "home" / "skills.lock.json"
    data = json.loads(lock_path.read_text())
    data["skills"]["evil:victim"] = {**data["skills"]["team-skills:s"], "pack": "../..", "name": "victim"}
    lock_path.write_text(json.dumps(data))
    for action in ("remove", "rollback"):
        code, _, err = cli(tmp_path, "skills", action, "evil:victim")
        assert code == 2 and "not a usable pack or skill folder name" in err
    assert (victim / "keep.txt").read_text() == "mine\n"
