"""The clock of code the self-play executor runs, `days` later than the real one (sandbox.py).

Not imported by loopwright: its source goes first in the harness's, and is the
`sitecustomize` of other processes the executor starts (a skill's verifier),
which then call `shift_clock(days)`. With 0 the clocks are the real ones but
read through the same classes, so the only difference between two runs is the
time.
"""


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
