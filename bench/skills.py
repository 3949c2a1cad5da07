"""Skills at scale: catalog build, search and catalog tokens for 1,000 installed skills, measured in one run.

A temporary `LOOPWRIGHT_HOME` (and `HOME`, so no real skills leak in) gets 1,000
generated skills in user scope, spread over 20 packs as `<pack>/<skill>/SKILL.md`:
descriptions of 100-600 characters drawn from each pack's own vocabulary plus a
shared one (so BM25 has something to rank), bodies of 50-400 lines, some skills
with `references/` and `scripts/` files, front matter with the optional keys
real packs use (descriptions mostly plain one-liners, some quoted, 10% folded
over lines, 3% with an unquoted ': ' that takes the loader's retry path). The
same seed gives the same skills.

Measured, each repeated: median and p90 of wall time, and median CPU time of
the measuring process (steadier when other work shares the machine), in ms:

- catalog build, cold: the parse cache (`skills.catalog._CACHE`) cleared, then
  `discover(None)`; and the first `discover` in a fresh Python process (imports
  done before the clock starts). The OS page cache is warm in both: dropping it
  needs root.
- catalog build, warm: the cache filled and the files unchanged, which is what
  a running daemon pays per run.
- the parts: the folder walk (`skill_folders`), parsing (`load_skill` per
  folder), the stat per folder that the warm path pays, and what is left of
  the cold build (the bundled skills, entries, precedence), by difference.
- search: `Catalog.search` over 200 varied queries (words, phrases, task
  titles with goals as `select = "auto"` sends, nonsense), p50/p90; the
  index is built on the first search of a catalog (once per run with
  `select = "auto"`), so its build is timed separately.
- catalog tokens: `catalog_text` for the first 50 skills, counted as the code
  counts (len/4) and by a rough word-piece estimate (no tokenizer dependency);
  and how many of the 1,000 fit in the default `skills.catalog_tokens` budget.

Goals (issue 4): build <= 200 ms for 1,000 skills; search <= 5 ms p50; tokens
for 50 skills reported. No assertions on the timings.

    python -m loopwright.bench.skills [--quick] [--skills 1000] [--keep]
"""

from __future__ import annotations

import argparse
import math
import os
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from loopwright.runtime.config import SkillsConfig
from loopwright.skills import catalog as cat_mod
from loopwright.skills.catalog import Catalog, SearchIndex, catalog_text, discover, skill_folders
from loopwright.skills.format import load_skill

PACKS: dict[str, list[str]] = {
    "devops": ["pipeline", "deploy", "rollback", "artifact", "runner", "terraform", "ansible", "helm", "canary",
               "blue-green", "secrets", "vault", "jenkins", "github-actions", "buildkite", "cache", "matrix"],
    "frontend": ["react", "component", "hook", "css", "tailwind", "accessibility", "bundle", "webpack", "vite",
                 "hydration", "storybook", "layout", "animation", "form", "router", "state", "typescript"],
    "data": ["etl", "warehouse", "parquet", "schema", "airflow", "dbt", "partition", "spark", "ingestion",
             "dedupe", "lineage", "snapshot", "backfill", "csv", "pandas", "polars", "notebook"],
    "security": ["vulnerability", "cve", "dependency", "sast", "secret-scan", "oauth", "jwt", "csrf", "xss",
                 "sandbox", "threat-model", "audit", "permissions", "encryption", "tls", "certificate", "sbom"],
    "ml": ["training", "dataset", "checkpoint", "gpu", "embedding", "fine-tune", "evaluation", "inference",
           "tokenizer", "prompt", "hyperparameter", "drift", "feature-store", "quantization", "onnx", "metrics"],
    "docs": ["readme", "changelog", "docstring", "tutorial", "reference", "diagram", "mermaid", "markdown",
             "api-docs", "glossary", "style-guide", "release-notes", "adr", "runbook", "translation"],
    "testing": ["unit-test", "fixture", "mock", "flaky", "coverage", "property-based", "snapshot-test", "e2e",
                "playwright", "pytest", "jest", "mutation", "regression", "benchmark", "fuzzing", "contract"],
    "mobile": ["ios", "android", "swiftui", "kotlin", "gradle", "xcode", "push-notification", "deep-link",
               "app-store", "crash-report", "offline", "flutter", "react-native", "signing", "simulator"],
    "cloud": ["aws", "s3", "lambda", "iam", "vpc", "cloudformation", "gcp", "bigquery", "azure", "billing",
              "cost", "region", "autoscaling", "load-balancer", "dns", "cdn", "queue"],
    "databases": ["postgres", "migration", "index", "query-plan", "deadlock", "replication", "mysql", "sqlite",
                  "redis", "mongodb", "vacuum", "connection-pool", "transaction", "orm", "backup", "restore"],
    "observability": ["logging", "tracing", "opentelemetry", "prometheus", "grafana", "alert", "dashboard",
                      "slo", "latency", "error-budget", "incident", "on-call", "span", "sampling", "pager"],
    "payments": ["stripe", "invoice", "refund", "subscription", "webhook", "ledger", "reconciliation", "tax",
                 "currency", "chargeback", "checkout", "pricing", "dunning", "payout", "idempotency"],
    "design": ["figma", "design-token", "typography", "color", "icon", "spacing", "theme", "dark-mode",
               "mockup", "prototype", "wireframe", "brand", "illustration", "grid", "contrast"],
    "compliance": ["gdpr", "soc2", "hipaa", "retention", "consent", "privacy", "policy", "evidence",
                   "access-review", "pii", "redaction", "license-check", "export-control", "dpa", "risk"],
    "analytics": ["funnel", "cohort", "retention-curve", "event-tracking", "ab-test", "experiment", "kpi",
                  "attribution", "segment", "churn", "forecast", "sql-report", "metric-definition", "looker"],
    "kubernetes": ["pod", "deployment", "statefulset", "ingress", "configmap", "namespace", "operator", "crd",
                   "kubectl", "node-pool", "hpa", "probe", "service-mesh", "istio", "kustomize"],
    "api": ["rest", "graphql", "openapi", "grpc", "protobuf", "rate-limit", "pagination", "versioning",
            "endpoint", "client-sdk", "webhook-delivery", "auth-header", "retry", "timeout", "cors"],
    "release": ["semver", "tag", "release-branch", "hotfix", "feature-flag", "rollout", "changelog-entry",
                "version-bump", "package", "publish", "pypi", "npm", "crate", "docker-image", "signing-key"],
    "research": ["paper", "citation", "literature-review", "survey", "hypothesis", "arxiv", "bibtex", "latex",
                 "summary", "experiment-log", "dataset-card", "reproduction", "ablation", "figure", "table"],
    "support": ["ticket", "triage", "customer", "escalation", "macro", "faq", "knowledge-base", "sla",
                "sentiment", "bug-report", "reproduction-steps", "refund-request", "chat", "email", "handoff"],
}
VERBS = ["review", "write", "fix", "debug", "migrate", "refactor", "generate", "validate", "audit", "optimize",
         "document", "configure", "monitor", "test", "deploy", "analyze", "summarize", "convert", "clean",
         "upgrade", "profile", "scaffold", "lint", "format", "plan", "estimate", "explain", "compare", "triage",
         "automate"]
SHARED = ["team", "repository", "project", "service", "workflow", "checklist", "best practices", "edge cases",
          "production", "staging", "local development", "continuous integration", "code review", "pull request",
          "conventions", "templates", "examples", "errors", "warnings", "performance", "reliability", "security",
          "cost", "scripts", "configuration", "output", "report", "steps", "guidelines", "standards"]
OPENERS = ["{V}s {a} and {b} for {c}.", "Helps {v} {a}, {b} and {c} in a {s}.",
           "Step-by-step guide to {v} {a} with {b}.", "Checklist and scripts to {v} {a} safely.",
           "{V}s {a} setups ({b}, {c}) and the {s} around them.", "Toolkit for teams that {v} {a} every day."]
SENTENCES = ["Use when the user asks to {v} {a} or {b}.", "Use when working on {a}, {b} or {c}.",
             "Covers {a}, {b}, {c} and common {s}.", "Includes templates for {a} and a script that checks {b}.",
             "Also useful to {v} {a} before {s}.", "Not for {a} in {s}; use a {b} skill for that.",
             "Knows the usual pitfalls of {a} with {b}.", "Explains {s} for {a} and how they relate to {b}.",
             "Works with {a} and {b} out of the box.", "Prefer it over ad hoc commands when {a} touches {b}.",
             "Produces a short {s} with {a} findings.", "Trigger words are {a}, {b}, {c} and {v}."]


def _description(rng: random.Random, vocab: list[str]) -> str:
    """100-600 characters of pack-specific prose."""
    target = rng.randint(100, 600)

    def fill(tpl: str) -> str:
        v = rng.choice(VERBS)
        return tpl.format(V=v.capitalize(), v=v, a=rng.choice(vocab), b=rng.choice(vocab), c=rng.choice(vocab),
                          s=rng.choice(SHARED))

    text = fill(rng.choice(OPENERS))
    while len(text) < target:
        text += " " + fill(rng.choice(SENTENCES))
    if len(text) > 600:
        text = text[:600].rsplit(" ", 1)[0].rstrip(",;:") + "."
    return text


def _body(rng: random.Random, name: str, vocab: list[str], refs: list[str], scripts: list[str]) -> str:
    """50-400 lines of headings, prose, lists and code blocks."""
    lines = [f"# {name.replace('-', ' ').title()}", ""]
    target = rng.randint(50, 400)
    step = 1
    while len(lines) < target:
        kind = rng.random()
        if kind < 0.15:
            lines += ["", f"## {rng.choice(VERBS).capitalize()} the {rng.choice(vocab)}", ""]
        elif kind < 0.45:
            lines += [f"{step}. {rng.choice(VERBS).capitalize()} the {rng.choice(vocab)} and check the "
                      f"{rng.choice(SHARED)} before moving on." for _ in range(rng.randint(2, 6))]
            step += 1
        elif kind < 0.6:
            lines += ["```bash", f"{rng.choice(['make', 'npm run', 'uv run', 'kubectl', 'git'])} "
                                 f"{rng.choice(VERBS)} --{rng.choice(vocab)}", "```"]
        elif kind < 0.7 and (refs or scripts):
            f = rng.choice(refs + scripts)
            lines.append(f"See [{f}]({f}) for the details." if f.startswith("references/")
                         else f"Run `python {f}` to {rng.choice(VERBS)} the {rng.choice(vocab)}.")
        else:
            words = [rng.choice(vocab + SHARED + VERBS) for _ in range(rng.randint(8, 30))]
            lines.append(" ".join(words).capitalize() + ".")
    return "\n".join(lines) + "\n"


def make_skills(root: Path, count: int, seed: int = 4) -> int:
    """`count` skills under `root` as <pack>/<skill>/SKILL.md; returns the total bytes of the SKILL.md files."""
    rng = random.Random(seed)
    packs = list(PACKS)
    names: set[str] = set()
    total = 0
    for i in range(count):
        pack = packs[i % len(packs)]
        vocab = PACKS[pack]
        while True:
            parts = [rng.choice(VERBS), rng.choice(vocab)] + ([rng.choice(vocab)] if rng.random() < 0.4 else [])
            name = "-".join(parts)
            if name not in names and len(name) <= 64:
                break
        names.add(name)
        folder = root / pack / name
        folder.mkdir(parents=True)
        refs, scripts = [], []
        if rng.random() < 0.35:
            (folder / "references").mkdir()
            for j in range(rng.randint(1, 4)):
                refs.append(f"references/{rng.choice(vocab)}-{j}.md")
                (folder / refs[-1]).write_text(f"# {refs[-1]}\n\n" + "Reference material.\n" * rng.randint(5, 50))
        if rng.random() < 0.25:
            (folder / "scripts").mkdir()
            for j in range(rng.randint(1, 3)):
                scripts.append(f"scripts/{rng.choice(VERBS)}_{j}.py")
                (folder / scripts[-1]).write_text("import sys\n\nprint(sys.argv)\n")
        desc = _description(rng, vocab)
        roll = rng.random()
        if roll < 0.03:  # an unquoted ': ', which the loader reads on its retry
            front = [f"name: {name}", f"description: Use when: {desc[:590].rsplit(' ', 1)[0]}"]
        elif roll < 0.13:  # folded over several lines
            words, folded, cur = desc.split(), [], ""
            for w in words:
                if cur and len(cur) + len(w) > 76:
                    folded.append(cur)
                    cur = ""
                cur = f"{cur} {w}".strip()
            folded.append(cur)
            front = [f"name: {name}", "description: >"] + [f"  {ln}" for ln in folded]
        elif roll < 0.25:
            front = [f"name: {name}", 'description: "' + desc.replace('"', "'") + '"']
        elif roll < 0.3:
            front = [f"name: {name}", "description: '" + desc.replace("'", "''") + "'"]
        else:  # plain, as most packs write it
            front = [f"name: {name}", f"description: {desc}"]
        if rng.random() < 0.5:
            front.append(rng.choice(["license: MIT", "license: Apache-2.0", "license: Proprietary"]))
        if rng.random() < 0.4:
            front += ["metadata:", f"  author: {pack}-team", f"  version: \"{rng.randint(0, 3)}.{rng.randint(0, 9)}\""]
        if rng.random() < 0.2:
            front.append("allowed-tools: Read Grep Bash(git:*)")
        if rng.random() < 0.1:
            front.append(f"compatibility: Requires {rng.choice(vocab)} and network access")
        text = "---\n" + "\n".join(front) + "\n---\n\n" + _body(rng, name, vocab, refs, scripts)
        (folder / "SKILL.md").write_text(text)
        total += len(text.encode())
    return total


def queries(rng: random.Random, n: int = 200) -> list[str]:
    """Varied queries: one word, a few words, task-like sentences, and some that match nothing."""
    everything = [w for ws in PACKS.values() for w in ws]
    out = []
    for i in range(n):
        kind = i % 5
        if kind == 0:
            out.append(rng.choice(everything))
        elif kind == 1:
            out.append(f"{rng.choice(VERBS)} {rng.choice(everything)}")
        elif kind == 2:
            pack = rng.choice(list(PACKS.values()))
            out.append(f"{rng.choice(VERBS)} the {rng.choice(pack)} and {rng.choice(pack)} for the "
                       f"{rng.choice(SHARED)}")
        elif kind == 3:  # a task title and goal, as `select = "auto"` searches
            pack = rng.choice(list(PACKS.values()))
            out.append(f"{rng.choice(VERBS).capitalize()} {rng.choice(pack)} in the {rng.choice(SHARED)}. The "
                       f"{rng.choice(pack)} {rng.choice(everything)} breaks when we {rng.choice(VERBS)} "
                       f"{rng.choice(pack)}; make the {rng.choice(SHARED)} pass and keep {rng.choice(SHARED)} green.")
        else:
            out.append(rng.choice(["zyzzyva quux", "lorem ipsum dolor", "banana", "how are you", "qwerty 12345",
                                   "the", "a an of", "x"]))
    return out


class Times:
    """Wall-clock and CPU milliseconds of repeated calls (CPU time says more when the machine is busy)."""

    def __init__(self) -> None:
        self.wall: list[float] = []
        self.cpu: list[float] = []

    def __call__(self, fn: Callable[[], object]) -> None:
        c0, t0 = time.process_time(), time.perf_counter()
        fn()
        self.wall.append((time.perf_counter() - t0) * 1000)
        self.cpu.append((time.process_time() - c0) * 1000)


def p90(xs: list[float]) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, math.ceil(0.9 * len(s)) - 1)]


def row(label: str, t: Times, goal: str = "") -> str:
    return (f"  {label:44} {statistics.median(t.wall):8.2f} {p90(t.wall):8.2f} {statistics.median(t.cpu):8.2f}"
            f"   {goal}")


_PIECE = re.compile(r"[A-Za-z]+|\d+|[^\sA-Za-z\d]")


def estimate_tokens(text: str) -> int:
    """A rough BPE-like count without a tokenizer: a run of letters is one token per 6 letters (rounded up),
    a run of digits or a punctuation mark is one."""
    return sum((len(p) + 5) // 6 if p[0].isalpha() else 1 for p in _PIECE.findall(text))


def first_build_in_new_process(home: Path, times: Times) -> None:
    """The first discover(None) in a fresh interpreter, imports excluded."""
    code = ("import time\nfrom loopwright.skills.catalog import discover\n"
            "c0, t0 = time.process_time(), time.perf_counter()\ncat = discover(None)\n"
            "print((time.perf_counter() - t0) * 1000, (time.process_time() - c0) * 1000)")
    env = dict(os.environ, LOOPWRIGHT_HOME=str(home), HOME=str(home))
    out = subprocess.run([sys.executable, "-c", code], env=env, check=True, capture_output=True, text=True).stdout
    wall, cpu = map(float, out.split())
    times.wall.append(wall)
    times.cpu.append(cpu)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer repetitions")
    ap.add_argument("--skills", type=int, default=1000)
    ap.add_argument("--keep", action="store_true", help="keep the generated skills and print where")
    args = ap.parse_args()
    reps = 5 if args.quick else 21
    top = Path(tempfile.mkdtemp(prefix="lw-bench-skills-"))
    saved = {k: os.environ.get(k) for k in ("LOOPWRIGHT_HOME", "HOME")}
    os.environ["LOOPWRIGHT_HOME"] = os.environ["HOME"] = str(top)
    try:
        root = cat_mod.loopwright_home() / "skills"
        t0 = time.perf_counter()
        size = make_skills(root, args.skills)
        print(f"{args.skills:,} skills in {len(PACKS)} packs under {root} "
              f"({size / 1e6:.1f} MB of SKILL.md; made in {time.perf_counter() - t0:.1f} s)")

        cold, warm, walk, parse, stat, fresh = Times(), Times(), Times(), Times(), Times(), Times()
        for _ in range(reps):
            cat_mod._CACHE.clear()
            cold(lambda: discover(None))
            warm(lambda: discover(None))
            folders: list[Path] = []
            walk(lambda: folders.extend(skill_folders(root)[0]))
            parse(lambda: [load_skill(f) for f in folders])
            stat(lambda: [os.stat(os.path.join(f, "SKILL.md")) for f in folders])
        for _ in range(3 if args.quick else 7):
            first_build_in_new_process(top, fresh)
        catalog: Catalog = discover(None)
        user = [e for e in catalog.entries if e.scope == "user"]
        if len(user) != args.skills or catalog.shadowed:
            print(f"warning: {len(user)} user skills loaded of {args.skills}, {len(catalog.shadowed)} shadowed")
        errors = [d for d in catalog.diagnostics if d.level == "error"]
        if errors:
            print(f"warning: {len(errors)} skills skipped, e.g. {errors[0]}")

        qs = queries(random.Random(7))
        index, first_search, per_query, task_like = Times(), Times(), Times(), Times()
        for _ in range(reps):
            index(lambda: SearchIndex(catalog.entries))
            fresh_cat = Catalog(entries=catalog.entries)
            first_search(lambda: fresh_cat.search(qs[3]))
        catalog.search("warm up")
        for _ in range(3):
            for i, q in enumerate(qs):
                per_query(lambda q=q: catalog.search(q))
                if i % 5 == 3:
                    task_like.wall.append(per_query.wall[-1])
                    task_like.cpu.append(per_query.cpu[-1])
        hits = [len(catalog.search(q)) for q in qs]

        budget = SkillsConfig().catalog_tokens
        text50, _ = catalog_text(user[:50], 10**9)
        head, _ = catalog_text(user[:1], 10**9)
        head_len = len(head.split("\n- ", 1)[0])
        counted50 = head_len // 4 + sum(len(ln) // 4 + 1 for ln in text50[head_len:].split("\n") if ln)
        text_all, left_out = catalog_text(user, budget)
        fit = len(user) - len(left_out)
        descs = [len(e.skill.description) for e in user]

        print(f"\nms, {reps} repetitions (page cache warm)      {'median':>8} {'p90':>8} {'CPU med':>8}   goal")
        print("catalog build, discover(None):")
        print(row(f"cold (parse cache cleared), {len(catalog.entries):,} skills", cold, "<= 200 ms"))
        print(row(f"first build in a new process (x{len(fresh.wall)})", fresh, "<= 200 ms"))
        print(row("warm (cache filled, files unchanged)", warm, "per run in a daemon"))
        print("  parts:")
        print(row("  folder walk (skill_folders)", walk))
        print(row(f"  parsing (load_skill x {args.skills:,})", parse))
        print(row("  stat per SKILL.md (the warm path's check)", stat))
        rest = Times()
        rest.wall = [statistics.median(cold.wall) - statistics.median(walk.wall) - statistics.median(parse.wall)]
        rest.cpu = [statistics.median(cold.cpu) - statistics.median(walk.cpu) - statistics.median(parse.cpu)]
        print(row("  the rest (bundled, entries; by difference)", rest))
        print("search, Catalog.search:")
        print(row(f"per query ({len(qs)} queries x 3)", per_query, "p50 <= 5 ms"))
        print(row("  task-like ones (title + goal, as auto)", task_like))
        print(row("index build (SearchIndex of the catalog)", index, "once per catalog"))
        print(row("first search of a catalog (index + query)", first_search))
        print(f"  {sum(1 for h in hits if h) } of {len(qs)} queries match something; "
              f"{sum(hits) / len(qs):.1f} results on average (limit 10)")
        print("catalog tokens (names and descriptions in the system prompt):")
        print(f"  50 skills: {len(text50):,} chars = {len(text50) // 4:,} tokens by len/4 "
              f"({counted50:,} as catalog_text counts its budget, per line); "
              f"word-piece estimate {estimate_tokens(text50):,}   (goal: reported)")
        print(f"  descriptions: {statistics.mean(descs):.0f} chars on average ({min(descs)}-{max(descs)})")
        print(f"  default budget skills.catalog_tokens = {budget:,}: {fit:,} of {len(user):,} skills fit "
              f"({len(text_all):,} chars); {len(left_out):,} left out")
        if args.keep:
            print(f"\nkept: LOOPWRIGHT_HOME={top}")
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        if not args.keep:
            shutil.rmtree(top, ignore_errors=True)


if __name__ == "__main__":
    main()
