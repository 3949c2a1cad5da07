"""The daemon's practice mode: one self-play round when the queue is idle, within budget.

The daemon calls `await practice_round(project, ...)` when it has nothing
queued and no run in flight (the lead wires it; see the report of issue 8).
It plays one round in the domain's folder (`.loopwright/selfplay/<domain>/`,
state carried from round to round) with a model proposer and the Runner as
solver, and returns the round's report — or None, with the reason in
`last_skip`, when the fleet budget or practice budget is spent or the
proposer has given up (`patience` quiet rounds).
"""

from __future__ import annotations

from loopwright.runtime.fleet.budget import FleetBudget
from loopwright.runtime.learning.selfplay.domain import Domain, Proposer
from loopwright.runtime.learning.selfplay.engine import Engine, SelfPlayConfig
from loopwright.runtime.project import Project

last_skip = ""


def practice_domain(project: Project, name: str) -> Domain:
    from loopwright.runtime.learning.selfplay.python_functions import NAME, PythonFunctions

    if name == NAME:
        return PythonFunctions()
    if name == "repo":
        from loopwright.runtime.learning.selfplay.repo import RepoDomain

        return RepoDomain(project.root, check=project.config.check)
    from loopwright.runtime.learning.selfplay.skills_domain import skill_domain

    found = skill_domain(project.root, name)
    if found is None:
        raise ValueError(f"unknown self-play domain {name!r}")
    return found


async def practice_round(project: Project, *, domain: str = "python-functions", budget_usd: float | None = None,
                         cfg: SelfPlayConfig | None = None, proposer: Proposer | None = None) -> dict | None:
    """Play one practice round (None when it may not: see `last_skip`)."""
    global last_skip
    from loopwright.runtime.learning.selfplay.real import ModelProposer, RunnerSolver

    if why := FleetBudget(project.store, project.config.fleet).exhausted():
        last_skip = f"fleet budget: {why}"
        return None
    cfg = (cfg or SelfPlayConfig()).model_copy(update={"budget_usd": budget_usd} if budget_usd else {})
    dom = practice_domain(project, domain)
    from loopwright.runtime.sandboxing import make_sandbox

    dom.sandbox = make_sandbox(project.config)  # references and hidden tests run in the runs' jail
    engine = Engine(dom, proposer or ModelProposer(project.config), RunnerSolver(project), cfg,
                    folder=project.dir / "selfplay" / dom.name)
    if cfg.budget_usd is not None and engine.spent_usd >= cfg.budget_usd:
        last_skip = f"practice budget spent (${engine.spent_usd:.2f} of ${cfg.budget_usd:.2f})"
        return None
    if engine.quiet_rounds >= cfg.patience:
        last_skip = (f"{engine.quiet_rounds} rounds in a row without a task worth solving; practice is paused "
                     f"(delete {engine.log.folder}/state.json to start over)")
        return None
    last_skip = ""
    return await engine.play_round()
