"""`loopwright eval SUITE`: run a task suite under the memory arms and print the comparison
(runtime/learning/evaluate.py runs it, eval_results.py writes the report)."""

from __future__ import annotations

import argparse
import json
import sys

from loopwright.runtime.config import PROVIDERS
from loopwright.runtime.learning.eval_results import headlines, summary_table
from loopwright.runtime.learning.evaluate import ARMS, run_eval


def cmd_eval(args: argparse.Namespace) -> int:
    quiet = getattr(args, "json", False)
    say = (lambda s: None) if quiet else (lambda s: print(s, file=sys.stderr, flush=True))
    overrides = {"provider": args.provider, "model": args.model, "base_url": args.base_url}
    results = run_eval(args.suite, arms=args.arms, seeds=args.seeds, orders=args.orders, out=args.out,
                       overrides=overrides, keep=args.keep, say=say)
    if quiet:
        print(json.dumps({"meta": results["meta"], "summary": results["summary"], "paths": results["paths"]},
                         indent=2, default=str))
    else:
        print(summary_table(results))
        for line in headlines(results):
            print(line)
        print(f"report: {results['paths']['report']}")
    return 0


def add_parsers(sub, add) -> None:
    """Register `eval` on the main parser (`add(name, func, help)` makes a subparser with --json)."""
    sp = add("eval", cmd_eval, "measure whether memory helps: run a task suite with memory off, placebo, frozen "
                               "and online, and report success, tokens and cost with paired confidence intervals")
    sp.add_argument("suite", help="the suite folder (suite.toml, tasks/<id>/task.toml + repo/ [+ script.json])")
    sp.add_argument("--arms", default=",".join(ARMS), help=f"comma-separated, from {', '.join(ARMS)} (default: all)")
    sp.add_argument("--seeds", type=int, default=3, help="repetitions of every stream (default 3)")
    sp.add_argument("--orders", type=int, default=1,
                    help="stream orders: 1 is suite order, more add shuffles by seed (default 1)")
    sp.add_argument("--out", metavar="DIR", help="where results go (default: .loopwright/eval/<suite>-<time>/ inside "
                                                 "a project, else a temporary folder)")
    sp.add_argument("--provider", choices=list(PROVIDERS), help="scripted: each task's script.json, no API key")
    sp.add_argument("--model", help="model name (prices and window from the config)")
    sp.add_argument("--base-url", dest="base_url", help="API base URL, e.g. a local OpenAI-compatible server")
    sp.add_argument("--keep", action="store_true", help="keep every stream's repository and store in "
                                                        "DIR/streams/<arm>-s<seed>-o<order>/")
