"""`loopwright selfplay`: play rounds of self-play in a domain, or print the history (`selfplay report`).

    loopwright selfplay --domain python-functions --rounds 20 --k 8 --target 0.5 [--budget-usd 5]
    loopwright selfplay --simulate [static|learning|drifting] --rounds 50 [--sim-proposer blind|omniscient]
    loopwright selfplay report [--domain D | --simulate P] [--out DIR]     # history.json, rounds.csv, report.md
    loopwright selfplay verify TASK_ID     # a solver attempt's check, in its worktree (exit 0: solved)

State and history live in `.loopwright/selfplay/<domain>/` (simulations in
`.loopwright/selfplay/simulate-<population>/`, so they never mix with real
play); outside a project, `--dir` says where (a simulation defaults to a
temporary folder). The simulated population and scripted proposer come from
runtime/learning/selfplay/simulation.py and run only under `--simulate`; everything they print
says SIMULATION and names the proposer: `blind` (the default) decides from the
rates a model is shown, `omniscient` (a baseline) reads the examples' true
difficulty.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
from pathlib import Path

from loopwright.cli.common import project_root
from loopwright.runtime.learning.selfplay.domain import SelfPlayError
from loopwright.runtime.project import DIR

POPULATIONS = ("static", "learning", "drifting")


def _folder(args: argparse.Namespace, name: str) -> Path:
    """The state folder: --dir, else in the project; a simulation played outside one gets a temporary folder."""
    if args.dir:
        return Path(args.dir)
    root = project_root()
    if root is not None and (root / DIR).is_dir():
        return root / DIR / "selfplay" / name
    if args.simulate and args.action == "report":
        raise SelfPlayError("a simulation played outside a project keeps its state in the temporary folder its "
                            "first line named: report it with --dir FOLDER")
    if args.simulate:
        return Path(tempfile.mkdtemp(prefix=f"loopwright-selfplay-{name}-"))
    raise SelfPlayError("not inside a loopwright project (run `loopwright init`), and no --dir given")


def _config(args: argparse.Namespace):
    from loopwright.runtime.learning.selfplay.controller import ControllerConfig
    from loopwright.runtime.learning.selfplay.engine import SelfPlayConfig

    if not 0 < args.target < 1:
        raise SelfPlayError(f"--target must be between 0 and 1 (got {args.target})")
    if args.k < 1 or args.batch < 1 or args.rounds < 1 or args.waves < 1:
        raise SelfPlayError("--k, --batch, --waves and --rounds must be at least 1")
    return SelfPlayConfig(k=args.k, batch=args.batch, waves=args.waves, budget_usd=args.budget_usd, seed=args.seed,
                          controller=ControllerConfig(target=args.target))


def cmd_selfplay(args: argparse.Namespace) -> int:
    quiet = getattr(args, "json", False)
    say = (lambda s: None) if quiet else (lambda s: print(s, flush=True))
    if args.action == "report":
        return _report(args, quiet)
    if args.action == "verify":
        return _verify(args)
    return _play(args, quiet, say)


def _verify(args: argparse.Namespace) -> int:
    from loopwright.runtime.learning.selfplay.real import verify

    if not args.task:
        raise SelfPlayError("name the task: `loopwright selfplay verify TASK_ID` (its attempts' check says which)")
    ok, detail = verify(args.task, Path.cwd())
    print(detail)
    return 0 if ok else 1


def _name(args: argparse.Namespace) -> str:
    return f"simulate-{args.simulate}" if args.simulate else args.domain


def _play(args: argparse.Namespace, quiet: bool, say) -> int:
    from loopwright.runtime.learning.selfplay.engine import Engine
    from loopwright.runtime.learning.selfplay.report import SIMULATION_BANNER, summary, summary_lines, write_report

    cfg = _config(args)
    folder = _folder(args, _name(args))
    if args.simulate:
        from loopwright.runtime.learning.selfplay.simulation import Population, SimDomain, SimProposer, SimSolver

        say(f"{SIMULATION_BANNER}: population {args.simulate}, proposer {args.sim_proposer}, seed {args.seed}; "
            f"state in {folder}")
        engine = Engine(SimDomain(), SimProposer(args.sim_proposer, args.seed),
                        SimSolver(Population(args.simulate, args.seed)), cfg, folder=folder, simulated=True, say=say)
    else:
        from loopwright.runtime.learning.selfplay.real import build

        domain, proposer, solver, project = build(args.domain, provider=args.provider, model=args.model)
        say(f"self-play {domain.name}: {args.rounds} round(s), batch {cfg.batch}, k {cfg.k}, target "
            f"{cfg.controller.target}; {project.config.provider}/{project.config.model}; state in {folder}")
        engine = Engine(domain, proposer, solver, cfg, folder=folder, say=say)
    rounds = asyncio.run(engine.run(args.rounds))
    data = write_report(folder)
    if quiet:
        print(json.dumps({"meta": data["meta"], "summary": summary(rounds), "played": len(rounds),
                          "stopped": engine.stopped, "paths": data["paths"]}, indent=2, default=str))
    else:
        for line in summary_lines(summary(rounds)):
            say(line)
        say(f"report: {data['paths']['report']}")
    return 0


def _report(args: argparse.Namespace, quiet: bool) -> int:
    from loopwright.runtime.learning.selfplay.report import (
        SIMULATION_BANNER,
        history_table,
        summary_lines,
        write_report,
    )

    folder = _folder(args, _name(args))
    if not (folder / "rounds.jsonl").exists():
        raise SelfPlayError(f"no self-play history in {folder} ({_no_history_hint(args, folder)})")
    data = write_report(folder, Path(args.out) if args.out else None)
    if quiet:
        print(json.dumps(data, indent=2, default=str))
        return 0
    if data["meta"]["simulated"]:
        print(SIMULATION_BANNER)
    for line in summary_lines(data["summary"]):
        print(line)
    print(history_table(data["rounds"]))
    print(f"files: {data['paths']['json']}, {data['paths']['csv']}, {data['paths']['report']}")
    return 0


def _no_history_hint(args: argparse.Namespace, folder: Path) -> str:
    """Where the history asked for would come from; simulations played beside the folder are kept apart from it."""
    if args.simulate:
        return f"play a simulation first: `loopwright selfplay --simulate {args.simulate}`"
    simulated = sorted(p.parent.name.removeprefix("simulate-") for p in folder.parent.glob("simulate-*/rounds.jsonl"))
    if simulated and not args.dir:
        return ("simulations are reported apart from real play: "
                + " or ".join(f"`loopwright selfplay report --simulate {population}`" for population in simulated))
    return f"play rounds first: `loopwright selfplay --domain {args.domain}`"


def add_parsers(sub, add) -> None:
    """Register `selfplay` on the main parser (`add(name, func, help)` makes a subparser with --json)."""
    sp = add("selfplay", cmd_selfplay, "self-play: a proposer writes verifiable tasks for a solver near a target "
                                       "success rate; `selfplay report` prints the history")
    sp.add_argument("action", nargs="?", choices=["play", "report", "verify"], default="play",
                    help="play rounds (default), report the history, or verify a solver attempt (its check)")
    sp.add_argument("task", nargs="?", help="verify: the task id")
    sp.add_argument("--domain", default="python-functions", help="python-functions (default) or repo")
    sp.add_argument("--rounds", type=int, default=10)
    sp.add_argument("--k", type=int, default=8, help="solver attempts per task (default 8)")
    sp.add_argument("--target", type=float, default=0.5, help="target batch success rate (default 0.5)")
    sp.add_argument("--batch", type=int, default=16, help="tasks per round, new plus replayed (default 16)")
    sp.add_argument("--waves", type=int, default=4,
                    help="a round is asked for and solved in this many waves, each after the last one's outcomes "
                         "(default 4)")
    sp.add_argument("--budget-usd", dest="budget_usd", type=float, help="stop when this much is spent")
    sp.add_argument("--seed", type=int, default=0)
    sp.add_argument("--simulate", nargs="?", const="learning", choices=POPULATIONS,
                    help="run a SIMULATION (simulated solver population, scripted proposer; no model)")
    sp.add_argument("--sim-proposer", dest="sim_proposer", choices=("blind", "omniscient"), default="blind",
                    help="the simulation's proposer: blind (sees only the rates a model is shown; default) or "
                         "omniscient (reads the examples' true difficulty: a baseline)")
    sp.add_argument("--dir", help="the state folder (default .loopwright/selfplay/<domain>/)")
    sp.add_argument("--out", metavar="DIR", help="report: where history.json, rounds.csv, report.md go")
    sp.add_argument("--provider", help="the model for proposer and solver (default: the project's)")
    sp.add_argument("--model")
