"""Sandbox side of the self-play gates: run hidden tests and collect outputs, in a child process.

Executed as a script (`python -s -B -c SOURCE`, its source after _clock.py's), never imported by loopwright:
it reads one JSON job on stdin and writes one JSON line after the marker on
stdout. A job is `{"limit": seconds, "runs": [...]}`; each run is
`{"label", "code", "name", "tests"?, "inputs"?}` (with `code` null the tests
exercise the project in `path`, which goes first on sys.path). For a run with `tests` the
tests module is executed with the function bound to its name (and importable
as `from solution import <name>`), then every `test*` callable is called; with
`inputs` (literal sources `"((args...), {kwargs})"`) the function's outputs
are returned as scrubbed reprs (or `raise:<Type>`). Each run has its own time
limit (an interval timer); a run that exceeds it reports `timeout`.

Trivial exploits are caught (`arm`, for jobs that run code, not the repo
domain's project tests): every value the function returns (and every argument
it was given, after the call) is searched for an object whose class, not one
of Python's, the standard library's or the tests' own, defines how it compares or hashes
(`__eq__` returning True passed every test); an audit hook ends the process,
naming what was done, when the code opens a file outside the Python
installation, reads the environment (`os.environ` is a trap; the real one is
emptied), the stack frames (`sys._getframe`, `tb_frame`, `gi_frame`, ...), the
interpreter's objects (`gc`), traces, starts a process, or uses sockets or
ctypes. The report line carries a nonce the code never sees, so a forged one
is ignored. Not stopped: code that goes after the harness's own functions
(their `__globals__` and `__closure__`, which Python does not audit).
"""

import ast
import builtins
import copy
import io
import json
import re
import signal
import sys
import types

MARKER = "@@loopwright-selfplay@@"
FORBIDDEN = "@@loopwright-forbidden@@"  # on stderr, before the process ends: what the code did
ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")
COMPARING = ("__eq__", "__ne__", "__hash__", "__lt__", "__le__", "__gt__", "__ge__", "__bool__", "__len__",
             "__class__", "__instancecheck__")
HEAPTYPE = 1 << 9  # Py_TPFLAGS_HEAPTYPE: a class made by Python code, not by C
FRAME_ATTRIBUTES = {"tb_frame", "gi_frame", "cr_frame", "ag_frame", "f_back"}
PROCESS_EVENTS = {"os.system", "os.exec", "os.posix_spawn", "os.spawn", "os.fork", "os.forkpty", "os.kill",
                  "os.killpg", "subprocess.Popen", "pty.spawn", "os.putenv", "os.unsetenv"}
WATCHED = {}  # set by arm: the guard of returned values and the builtins as they were
FUNCTION = types.FunctionType


def _restore():
    """Builtins back as they were before the code under test ran (it may have changed them)."""
    if "builtins" in WATCHED:
        vars(builtins).update(WATCHED["builtins"])


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
    guard = WATCHED.get("guard")
    if guard is not None:
        fn = mod.__dict__[name] = guard(fn)
    _restore()
    return fn


def _tests(fn, name, tests):
    ns = {"__name__": "hidden_tests"}
    if "builtins" in WATCHED:  # the tests' own builtins: the code cannot change what they call
        ns["__builtins__"] = dict(WATCHED["builtins"])
    if fn is not None:
        ns[name] = fn
    results, error = {}, None
    try:
        exec(compile(tests, "<hidden_tests>", "exec"), ns)
    except Timeout:
        raise
    except BaseException as e:  # noqa: BLE001 — a module-level assert failing is a failed test
        _restore()
        return {"<module>": False}, f"{type(e).__name__}: {e}"[:300]
    _restore()
    if "trusted" in WATCHED:  # the tests' own classes may compare as they like
        WATCHED["trusted"].update(v for v in ns.values() if isinstance(v, type))
    results["<module>"] = True
    for key, value in list(ns.items()):
        if key.startswith("test") and isinstance(value, FUNCTION):
            try:
                value()
                results[key] = True
            except Timeout:
                raise
            except BaseException as e:  # noqa: BLE001
                results[key] = False
                error = error or f"{key}: {type(e).__name__}: {e}"[:300]
            _restore()
    return results, error


def _output(fn, src):
    args, kwargs = ast.literal_eval(src)
    try:
        value = fn(*copy.deepcopy(args), **copy.deepcopy(kwargs))
    except Timeout:
        raise
    except BaseException as e:  # noqa: BLE001
        _restore()
        return f"raise:{type(e).__name__}"
    _restore()
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


def arm():
    """Install the traps of the module's docstring; from here on the process runs code under test."""
    import collections
    import collections.abc
    import enum
    import fractions
    import functools
    import os
    import posix
    import typing

    audit, write, exit_, realpath = sys.audit, os.write, os._exit, os.path.realpath
    roots = tuple(sorted({realpath(p) + os.sep for p in (sys.prefix, sys.base_prefix, sys.exec_prefix)}))
    trusted = {c for m in (collections, fractions, enum, typing) for c in vars(m).values() if isinstance(c, type)}
    frame_callers = {f.__code__ for f in (collections.namedtuple, getattr(typing, "_caller", None),
                                          getattr(enum.EnumMeta, "_create_", None)) if hasattr(f, "__code__")}
    busy = []

    def forbidden(what):
        write(2, f"{FORBIDDEN}{what}\n".encode())
        exit_(86)

    def allowed_path(path, mode="r"):
        if not isinstance(path, str) or any(c in str(mode) for c in "wax+"):
            return False
        return (realpath(path) + os.sep).startswith(roots)

    def hook(event, args):
        if busy:
            return
        busy.append(1)
        try:
            if event == "open" and not allowed_path(args[0], args[1] or "r"):
                forbidden(f"the code opened {args[0]!r}: solutions may not read files")
            elif event in ("os.listdir", "os.scandir") and not allowed_path(args[0] or "."):
                forbidden(f"the code listed {args[0]!r}: solutions may not read files")
            elif event == "sys._getframe" and sys._getframe(1).f_code not in frame_callers:
                forbidden("the code read the stack frames (sys._getframe)")
            elif event == "object.__getattr__" and args[1] in FRAME_ATTRIBUTES:
                forbidden(f"the code read the stack frames (.{args[1]})")
            elif event == "object.__setattr__" and isinstance(args[0], type) and args[1] in COMPARING + ("__code__",):
                forbidden(f"the code changed {args[0].__name__}.{args[1]}")
            elif event in ("sys._current_frames", "sys._current_exceptions", "sys.settrace", "sys.setprofile") \
                    or event.startswith("gc.get_"):
                forbidden(f"the code inspected the interpreter ({event})")
            elif event in PROCESS_EVENTS or event.startswith(("socket.", "ctypes.")):
                forbidden(f"the code used {event}")
            elif event == "loopwright.environ":
                forbidden("the code read the environment (os.environ)")
            elif event == "loopwright.cheat":
                forbidden(args[0])
        finally:
            busy.clear()

    left = [0]  # objects a check may still look at

    def suspicious(value, depth=0):
        left[0] -= 1
        if depth > 50 or left[0] < 0:
            return None
        for cls in type(value).__mro__:
            if cls.__flags__ & HEAPTYPE and cls not in trusted and any(n in cls.__dict__ for n in COMPARING):
                return cls
        if type(value) in (list, tuple, set, frozenset):
            return next((c for v in value if (c := suspicious(v, depth + 1)) is not None), None)
        if type(value) is dict:
            return next((c for kv in value.items() for v in kv if (c := suspicious(v, depth + 1)) is not None), None)
        return None

    def guard(fn):
        @functools.wraps(fn)
        def guarded(*args, **kwargs):
            result = fn(*args, **kwargs)
            left[0] = 10_000
            cls = suspicious((result, args, kwargs))
            if cls is not None:
                audit("loopwright.cheat", f"the function returned (or left in its arguments) a {cls.__name__} "
                                          f"object, whose class defines how it compares: only plain values count")
            return result
        return guarded

    class Environ(collections.abc.MutableMapping):
        """os.environ for code under test: any use ends the process."""

        def __getitem__(self, key):
            audit("loopwright.environ")
            raise KeyError(key)

        __setitem__ = __delitem__ = __getitem__

        def __iter__(self):
            audit("loopwright.environ")
            return iter(())

        def __len__(self):
            audit("loopwright.environ")
            return 0

    posix.environ.clear()
    os.environ, os.environb = Environ(), Environ()
    sys.path[:] = [p for p in sys.path if allowed_path(p)]
    sys.modules["__main__"] = types.ModuleType("__main__")  # not this harness
    WATCHED.update(guard=guard, builtins=dict(vars(builtins)), trusted=trusted)
    sys.addaudithook(hook)


def main():
    job = json.loads(sys.stdin.read())
    limit_resources(job.get("rlimits", {}))
    shift_clock(job.get("clock_days", 0))  # noqa: F821 — defined by _clock.py, which the executor puts first
    real_stdout, dumps, one, nonce = sys.stdout, json.dumps, run_one, job.get("nonce", "")
    if any(run.get("code") is not None for run in job["runs"]):
        arm()
    results = []
    for run in job["runs"]:
        sys.stdout = sys.stderr = io.StringIO()  # whatever the code prints stays out of the report
        try:
            results.append(one(run, float(run.get("limit", job["limit"]))))
        finally:
            sys.stdout, sys.stderr = real_stdout, sys.__stderr__
    real_stdout.write(MARKER + nonce + dumps(results) + "\n")
    real_stdout.flush()


if __name__ == "__main__":
    main()
