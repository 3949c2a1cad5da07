"""Sandbox side of the self-play gates: run hidden tests and collect outputs, in a child process.

Executed as a script (`python -s -B _harness.py`), never imported by loopwright:
it reads one JSON job on stdin and writes one JSON line after the marker on
stdout. A job is `{"limit": seconds, "runs": [...]}`; each run is
`{"label", "code", "name", "tests"?, "inputs"?}` (with `code` null the tests
exercise the project in `path`, which goes first on sys.path). For a run with `tests` the
tests module is executed with the function bound to its name (and importable
as `from solution import <name>`), then every `test*` callable is called; with
`inputs` (literal sources `"((args...), {kwargs})"`) the function's outputs
are returned as scrubbed reprs (or `raise:<Type>`). Each run has its own time
limit (an interval timer); a run that exceeds it reports `timeout`.
"""

import ast
import copy
import io
import json
import re
import signal
import sys
import types

MARKER = "@@loopwright-selfplay@@"
ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")


class Timeout(BaseException):
    """Raised by the interval timer; a BaseException so `except Exception` in a test does not swallow it."""


def _alarm(signum, frame):
    raise Timeout()


def _load(code, name):
    mod = types.ModuleType("solution")
    sys.modules["solution"] = mod
    exec(compile(code, "<solution>", "exec"), mod.__dict__)
    fn = mod.__dict__.get(name)
    if not callable(fn):
        raise NameError(f"the solution defines no function {name!r}")
    return fn


def _tests(fn, name, tests):
    ns = {"__name__": "hidden_tests"}
    if fn is not None:
        ns[name] = fn
    results, error = {}, None
    try:
        exec(compile(tests, "<hidden_tests>", "exec"), ns)
    except Timeout:
        raise
    except BaseException as e:  # noqa: BLE001 — a module-level assert failing is a failed test
        return {"<module>": False}, f"{type(e).__name__}: {e}"[:300]
    results["<module>"] = True
    for key, value in list(ns.items()):
        if key.startswith("test") and isinstance(value, types.FunctionType):
            try:
                value()
                results[key] = True
            except Timeout:
                raise
            except BaseException as e:  # noqa: BLE001
                results[key] = False
                error = error or f"{key}: {type(e).__name__}: {e}"[:300]
    return results, error


def _output(fn, src):
    args, kwargs = ast.literal_eval(src)
    try:
        value = fn(*copy.deepcopy(args), **copy.deepcopy(kwargs))
    except Timeout:
        raise
    except BaseException as e:  # noqa: BLE001
        return f"raise:{type(e).__name__}"
    try:
        return ADDRESS.sub("", repr(value))[:2000]
    except BaseException as e:  # noqa: BLE001
        return f"unrepr:{type(e).__name__}"


def run_one(run, limit):
    out = {"label": run["label"]}
    signal.signal(signal.SIGALRM, _alarm)
    signal.setitimer(signal.ITIMER_REAL, limit)
    try:
        if run.get("code") is None:  # tests of the project in the current folder (the repo domain)
            if run.get("path") and run["path"] not in sys.path:
                sys.path.insert(0, run["path"])
            fn = None
        else:
            fn = _load(run["code"], run["name"])
        if run.get("tests") is not None:
            results, error = _tests(fn, run["name"], run["tests"])
            count = sum(1 for k in results if k != "<module>") + sum(
                1 for n in ast.parse(run["tests"]).body if isinstance(n, ast.Assert))
            out.update(results=results, error=error, count=count,
                       passed=bool(count) and all(results.values()))
        if run.get("inputs") is not None:
            out["outputs"] = [_output(fn, src) for src in run["inputs"]]
    except Timeout:
        out.update(timeout=True, passed=False, error="timeout")
    except BaseException as e:  # noqa: BLE001 — a solution that does not even load
        out.update(passed=False, error=f"{type(e).__name__}: {e}"[:300], broken=True)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
    return out


def limit_resources(rlimits):
    try:
        import resource
    except ImportError:  # not on this platform
        return
    for what, value in ((resource.RLIMIT_CPU, rlimits.get("cpu", 60)),
                        (resource.RLIMIT_AS, rlimits.get("memory_mb", 1024) * 2**20),
                        (resource.RLIMIT_FSIZE, 2**20), (resource.RLIMIT_CORE, 0)):
        try:
            resource.setrlimit(what, (value, value))
        except (ValueError, OSError):
            pass


def shift_clock(days):
    """Every clock the code can read, `days` later (0: the same clocks, through the same classes): the executor runs
    the hidden tests under two clocks, and a difference makes the task nondeterministic."""
    import datetime as dt
    import time

    delta = days * 86400
    real_time, real_ns, localtime, gmtime, ctime, asctime, strftime = (
        time.time, time.time_ns, time.localtime, time.gmtime, time.ctime, time.asctime, time.strftime)

    def now():
        return real_time() + delta

    time.time, time.time_ns = now, lambda: real_ns() + delta * 10**9
    time.localtime = lambda secs=None: localtime(now() if secs is None else secs)
    time.gmtime = lambda secs=None: gmtime(now() if secs is None else secs)
    time.ctime = lambda secs=None: ctime(now() if secs is None else secs)
    time.asctime = lambda t=None: asctime(localtime(now()) if t is None else t)
    time.strftime = lambda fmt, t=None: strftime(fmt, localtime(now()) if t is None else t)

    class date(dt.date):
        __slots__ = ()

        @classmethod
        def today(cls):
            return cls.fromtimestamp(now())

    class datetime(dt.datetime, date):
        __slots__ = ()

        @classmethod
        def now(cls, tz=None):
            return cls.fromtimestamp(now(), tz)

        @classmethod
        def utcnow(cls):
            return cls.utcfromtimestamp(now())

        @classmethod
        def today(cls):
            return cls.fromtimestamp(now())

    for cls in (date, datetime):
        cls.__module__ = "datetime"
    dt.date, dt.datetime = date, datetime


def main():
    job = json.loads(sys.stdin.read())
    limit_resources(job.get("rlimits", {}))
    shift_clock(job.get("clock_days", 0))
    real_stdout = sys.stdout
    results = []
    for run in job["runs"]:
        sys.stdout = sys.stderr = io.StringIO()  # whatever the code prints stays out of the report
        try:
            results.append(run_one(run, float(run.get("limit", job["limit"]))))
        finally:
            sys.stdout, sys.stderr = real_stdout, sys.__stderr__
    real_stdout.write(MARKER + job.get("nonce", "") + json.dumps(results) + "\n")
    real_stdout.flush()


if __name__ == "__main__":
    main()
