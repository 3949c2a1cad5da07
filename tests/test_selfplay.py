"""Self-play (issue 8): the gates, the reward, ratings, controller and replay buffer, the engine and its report."""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

import pytest
from support import needs_bwrap

from loopwright.runtime.learning.selfplay.domain import Archive, ProposalError, ProposalRequest
from loopwright.runtime.learning.selfplay.gates import GateConfig, banned_apis, normalised
from loopwright.runtime.learning.selfplay.python_functions import (
    FunctionProposal,
    PythonFunctions,
    call_inputs,
    parse_proposals,
    trivial_answers,
)

RLE = '''def rle(s):
    out = []
    for c in s:
        if out and out[-1][0] == c:
            out[-1] = (c, out[-1][1] + 1)
        else:
            out.append((c, 1))
    return out
'''
RLE_TESTS = '''def test_basic():
    assert rle("aab") == [("a", 2), ("b", 1)]
    assert rle("") == []

def test_more():
    assert rle("abc") == [("a", 1), ("b", 1), ("c", 1)]
    assert rle("zzzz") == [("z", 4)]
'''
RLE_STATEMENT = "Return the run-length encoding of s as a list of (char, count) tuples, in order."


def rle_proposal(**kw) -> FunctionProposal:
    data = {"statement": RLE_STATEMENT, "function": "rle", "reference": RLE, "tests": RLE_TESTS, "kind": "strings"}
    return FunctionProposal(**(data | kw))


@pytest.fixture
def domain() -> PythonFunctions:
    return PythonFunctions(GateConfig(time_limit=2.0, trivial_limit=0.5))


def accepted(domain: PythonFunctions, *proposals: FunctionProposal) -> Archive:
    archive = Archive()
    for p in proposals:
        v = domain.validate(p, archive)
        assert v.ok, (v.reason, v.detail)
        archive.add(v.task)
    return archive


# -- gates ---------------------------------------------------------------------------------------


def test_a_valid_task_is_accepted_with_its_features(domain):
    v = domain.validate(rle_proposal(), Archive())
    assert v.ok, (v.reason, v.detail)
    t = v.task
    assert t.kind == "strings" and t.payload["signature"] == "def rle(s)"
    assert t.payload["inputs"] == ["(('aab',), {})", "(('',), {})", "(('abc',), {})", "(('zzzz',), {})"]
    assert t.length == t.statement_words + t.code_tokens > 0 and t.ast_hash and t.shingles


@pytest.mark.parametrize("text, why", [
    ("I would propose a task about strings.", "no JSON"),
    ('{"statement": "x", "function": "f"}', "reference"),
    ('{"statement": "x", "function": "not a name", "reference": "def f(): pass", "tests": "assert 1"}', "function"),
    ("[]", "empty"),
])
def test_a_proposal_that_does_not_parse_is_refused(text, why):
    with pytest.raises(ProposalError, match=why):
        parse_proposals(text)


def test_proposals_parse_from_fenced_json_lists_and_tasks_objects():
    one = json.dumps({"statement": "s", "function": "f", "reference": "def f(x):\n    return x", "tests": "assert 1",
                      "topic": "math"})
    assert parse_proposals(f"Here:\n```json\n{one}\n```\n")[0].kind == "math"
    assert len(parse_proposals(json.dumps({"tasks": [json.loads(one)] * 2}))) == 2


def test_unparseable_code_and_missing_functions_are_rejected(domain):
    assert domain.validate(rle_proposal(reference="def rle(s:\n  pass"), Archive()).reason == "unparseable"
    assert domain.validate(rle_proposal(tests="def test(:"), Archive()).reason == "unparseable"
    assert domain.validate(rle_proposal(function="encode"), Archive()).reason == "unparseable"
    assert domain.validate(rle_proposal(signature="def rle(text)"), Archive()).reason == "unparseable"
    assert domain.validate(rle_proposal(signature="def rle(s) -> list"), Archive()).ok


def test_a_reference_that_fails_its_own_tests_is_rejected(domain):
    v = domain.validate(rle_proposal(reference=RLE.replace("+ 1", "+ 2")), Archive())
    assert v.reason == "reference_fails" and "AssertionError" in v.detail


def test_tests_that_hang_are_rejected_as_timeout(domain):
    hang = RLE_TESTS + "\ndef test_forever():\n    while True:\n        pass\n"
    v = domain.validate(rle_proposal(tests=hang), Archive())
    assert v.reason == "timeout"


def test_a_non_deterministic_task_is_rejected(domain):
    p = FunctionProposal(statement="Return the distinct words of a list.", function="distinct",
                         reference="def distinct(ws):\n    return list(set(ws))\n",
                         tests=("def test_it():\n    assert sorted(distinct(['b', 'a', 'b'])) == ['a', 'b']\n"
                                "    assert len(distinct(list('abcdefghijklmnopqrstuvwxyz'))) == 26\n"))
    v = domain.validate(p, Archive())
    assert v.reason == "nondeterministic" and "hash seed" in v.detail


def seed_hash(seed: int, text: str = "x") -> int:
    import subprocess
    import sys

    return int(subprocess.run([sys.executable, "-c", f"print(hash({text!r}))"], env={"PYTHONHASHSEED": str(seed)},
                              capture_output=True, text=True, check=True).stdout)


def test_tests_that_probe_the_verifiers_hash_seed_are_rejected(domain):
    """The reproduction: gates ran seeds 1 and 2, verification seed 0, so tests that misbehave only under the
    verifier's seed were accepted. Now gates and verifier share SEEDS (0, 1, 2)."""
    probe = (f"def test_it():\n    if hash('x') == {seed_hash(0)}:\n        assert rle('a') == 'coin'\n"
             f"    assert rle('a') == [('a', 1)]\n")
    v = domain.validate(rle_proposal(tests=probe), Archive())
    assert v.reason == "nondeterministic" and "hash seed 0 and hash seed" in v.detail, v.detail


def nondeterministic(domain, reference: str, tests: str, function: str = "f") -> str:
    p = FunctionProposal(statement="A task whose reference reads what it must not.", function=function,
                         reference=reference, tests=tests)
    assert not banned_apis(reference) and not banned_apis(tests)  # the names pass the pre-filter
    v = domain.validate(p, Archive())
    assert not v.ok
    return f"{v.reason}: {v.detail}"


def test_the_clock_is_caught_by_running_not_by_name(domain):
    days = "def f(n):\n    from logging import time\n    return int(time.time() // 86400) + n\n"
    got = nondeterministic(domain, days, "def test_it():\n    assert f(1) > f(0)\n    assert f(5) - f(2) == 3\n")
    assert got.startswith("nondeterministic") and "the clock 40 days later" in got


def test_the_datetime_clock_is_shifted_too(domain):
    got = nondeterministic(domain, "def f(n):\n    import logging\n    return str(logging.sys.modules['datetime']"
                                   ".date.today())[:4 * n]\n",
                           "def test_it():\n    assert len(f(1)) == 4\n    assert f(0) == ''\n")
    assert got.startswith("nondeterministic") and "clock" in got


@pytest.mark.parametrize("reference", [
    "def f(x):\n    import statistics\n    return x + statistics.random.random() / 1e9\n",
    "def f(x):\n    r = __builtins__['__imp' + 'ort__']('random')\n    return x + r.random() / 1e9\n",
])
def test_randomness_is_caught_by_running_not_by_name(domain, reference):
    got = nondeterministic(domain, reference, "def test_it():\n    assert abs(f(1.0) - 1.0) < 1e-6\n"
                                              "    assert abs(f(2.0) - 2.0) < 1e-6\n    assert f(0.0) < 1\n")
    assert got.startswith("nondeterministic") and "outputs differ" in got


def test_the_environment_is_caught_by_running_not_by_name(domain):
    got = nondeterministic(domain, "def f(s):\n    import logging\n    return s + logging.os.environ.get('USER', '')\n",
                           "def test_it():\n    assert f('a').startswith('a')\n    assert f('')[:0] == ''\n"
                           "    assert f('bc')[:2] == 'bc'\n")
    assert got.startswith(("nondeterministic", "banned_api")), got


def test_tests_that_need_the_gates_hash_seeds_are_rejected(domain):
    """The reproduction: a test asserting PYTHONHASHSEED in ('1', '2') was accepted, then failed its reference."""
    tests = ("import logging\n\ndef test_it():\n    assert logging.os.environ['PYTHONHASHSEED'] in ('1', '2')\n"
             "    assert rle('a') == [('a', 1)]\n")
    v = domain.validate(rle_proposal(tests=tests), Archive())
    assert v.reason in ("nondeterministic", "banned_api"), (v.reason, v.detail)


def test_verification_runs_a_solution_under_the_gates_conditions(domain, tmp_path):
    from loopwright.runtime.learning.selfplay.python_functions import verify_solution

    task = domain.validate(rle_proposal(), Archive()).task
    (tmp_path / "solution.py").write_text(RLE + f"\nif hash('x') == {seed_hash(2)}:\n    rle = lambda s: []\n")
    ok, detail = verify_solution(task, tmp_path, 2.0)
    assert not ok and detail.endswith("under hash seed 2"), detail
    (tmp_path / "solution.py").write_text(RLE)
    assert verify_solution(task, tmp_path, 2.0) == (True, "hidden tests: 2 of 2 passed")


@pytest.mark.parametrize("solution, caught", [
    ("class Yes:\n    def __eq__(self, other):\n        return True\n\ndef rle(s):\n    return Yes()\n",
     "returned (or left in its arguments) a Yes object"),
    ("class L(list):\n    def __eq__(self, other):\n        return True\n\ndef rle(s):\n    return [L()]\n",
     "a L object"),
    ("class H(str):\n    def __hash__(self):\n        return 0\n\n"
     "def rle(s):\n    return [(H(c), n) for c, n in rle_ok(s)]\n", "a H object"),
    ("def rle(s):\n    open('/etc/hostname').read()\n    return rle_ok(s)\n", "may not read files"),
    ("import os\n\ndef rle(s):\n    os.environ.get('PYTHONHASHSEED')\n    return rle_ok(s)\n", "environment"),
    ("import sys\n\ndef rle(s):\n    sys._getframe(1).f_locals\n    return rle_ok(s)\n", "stack frames"),
    ("def rle(s):\n    try:\n        1 / 0\n    except ZeroDivisionError as e:\n        e.__traceback__.tb_frame\n"
     "    return rle_ok(s)\n", "stack frames"),
    ("import gc\n\ndef rle(s):\n    gc.get_objects()\n    return rle_ok(s)\n", "inspected the interpreter"),
])
def test_solutions_that_cheat_do_not_count(domain, tmp_path, solution, caught):
    from loopwright.runtime.learning.selfplay.python_functions import verify_solution

    task = domain.validate(rle_proposal(), Archive()).task
    honest = RLE.replace("def rle(", "def rle_ok(")
    (tmp_path / "solution.py").write_text(honest + "\n" + solution)
    ok, detail = verify_solution(task, tmp_path, 2.0)
    assert not ok and detail.startswith("not counted:") and caught in detail, detail
    (tmp_path / "solution.py").write_text(honest + "\nimport collections\nP = collections.namedtuple('P', 'c n')\n"
                                          "\ndef rle(s):\n    return rle_ok(s)\n")
    assert verify_solution(task, tmp_path, 2.0)[0]  # a namedtuple at module level is not reading frames


def test_classes_of_the_tests_may_define_how_they_compare(domain, tmp_path):
    from loopwright.runtime.learning.selfplay.python_functions import verify_solution

    tests = ("class P:\n    def __init__(self, v):\n        self.v = v\n\n    def __eq__(self, other):\n"
             "        return isinstance(other, P) and other.v == self.v\n\n    __hash__ = None\n\n"
             "def test_it():\n    assert first([P(1), P(2)]) == P(1)\n    assert first([3]) == 3\n"
             "    assert first(['a', 'b']) == 'a'\n")
    v = domain.validate(FunctionProposal(statement="Return the first item of xs.", function="first",
                                         reference="def first(xs):\n    return xs[0]\n", tests=tests), Archive())
    assert v.ok, v.detail
    (tmp_path / "solution.py").write_text("def first(xs):\n    for x in xs:\n        return x\n")
    assert verify_solution(v.task, tmp_path, 2.0)[0]


@pytest.mark.parametrize("solution", [
    # a report line of its own, then out before the harness writes the real one
    "import os\nos.write(1, b'@@loopwright-selfplay@@[{\"label\": \"solution\", \"passed\": true, \"results\": "
    "{\"test_basic\": true}}]\\n')\nos._exit(0)\ndef rle(s):\n    return None\n",
    # builtins the harness itself counts with
    "import builtins\n\ndef rle(s):\n    builtins.all = lambda *a: True\n    return None\n",
])
def test_solutions_that_go_after_the_harness_do_not_pass(domain, tmp_path, solution):
    from loopwright.runtime.learning.selfplay.python_functions import verify_solution

    task = domain.validate(rle_proposal(), Archive()).task
    (tmp_path / "solution.py").write_text(solution)
    ok, detail = verify_solution(task, tmp_path, 2.0)
    assert not ok, detail


JAIL_TESTS = """import os, socket

def test_no_network():
    assert [name for _, name in socket.if_nameindex()] == ['lo']

def test_private_tmp():
    open('/tmp/lw-selfplay-marker', 'w').write('x')
"""


@needs_bwrap
def test_the_executor_jails_with_the_network_off_and_a_private_tmp(tmp_path):
    from loopwright.harness.sandbox import Sandbox, SandboxPolicy
    from loopwright.runtime.learning.selfplay.sandbox import run_job

    box = Sandbox.for_policy(SandboxPolicy(network="on"))  # the executor turns it off whatever the policy says
    result = run_job([{"label": "t", "code": None, "name": "", "tests": JAIL_TESTS}], limit=10, cwd=tmp_path,
                     sandbox=box)
    assert result.by_label()["t"]["results"] == {"<module>": True, "test_no_network": True, "test_private_tmp": True}
    assert not Path("/tmp/lw-selfplay-marker").exists()


@pytest.mark.parametrize("tests, answer", [
    ("def test_it():\n    assert rle('a') is None or True\n", "empty body"),
    ("def test_it():\n    assert rle('') == []\n    assert rle('') is not None\n", "return constant []"),
    ("def test_it():\n    assert rle('aab') != 5\n    assert len(rle('ab')) == 2\n", "return s unchanged"),
    ("def test_it():\n    assert rle('zz') == [('z', 2)]\n", "return constant [('z', 2)]"),
])
def test_tests_that_pass_for_a_trivial_answer_are_rejected(domain, tests, answer):
    v = domain.validate(rle_proposal(tests=tests), Archive())
    assert v.reason == "trivial" and answer in v.detail, v.detail


def test_trivial_answers_come_from_the_signature_and_the_tests():
    labels = [label for label, _ in trivial_answers("def f(a, b=2, *rest):\n    return a\n", "f",
                                                    "assert f(1) == 42\nassert f(2, b=3) == 'x'\n")]
    assert labels[:5] == ["empty body", "return None", "return a unchanged", "return b unchanged",
                          "return rest unchanged"]
    assert "return constant 42" in labels and "return constant 'x'" in labels and "raise ValueError" in labels
    assert call_inputs("assert f(1) == 42\nassert f(2, b=3) == 'x'\nassert f(g(1))\n", "f") == [
        "((1,), {})", "((2,), {'b': 3})"]


@pytest.mark.parametrize("code, hit", [
    ("import random\nassert rle('a') == [('a', 1)]", "import random"),
    ("from time import time\nassert rle('a')", "from time import ..."),
    ("import urllib.request\nassert rle('a')", "import urllib.request"),
    ("assert open('x') and rle('a')", "open()"),
    ("assert ().__class__.__bases__", ".__bases__"),
])
def test_banned_apis_in_tests_are_rejected(domain, code, hit):
    assert hit in banned_apis(code)
    v = domain.validate(rle_proposal(tests=code), Archive())
    assert v.reason == "banned_api" and hit in v.detail


def test_a_domain_may_allow_a_module():
    assert banned_apis("import datetime\n", {"datetime"}) == []
    assert banned_apis("import math, itertools\nfrom collections import Counter\n") == []


def test_size_caps_and_tests_that_test_nothing(domain):
    assert domain.validate(rle_proposal(statement="x" * 2001), Archive()).reason == "too_long"
    assert domain.validate(rle_proposal(tests="def helper():\n    return 1\n"), Archive()).reason == "no_tests"


def test_a_near_duplicate_is_rejected(domain):
    archive = accepted(domain, rle_proposal())
    renamed = """def encode(text: str) -> list:
    \"\"\"Run-length encoding.\"\"\"
    acc = []
    for ch in text:
        if acc and acc[-1][0] == ch:
            acc[-1] = (ch, acc[-1][1] + 1)
        else:
            acc.append((ch, 1))
    return acc
"""
    near = FunctionProposal(statement="Return the run-length encoding of s as a list of (char, count) pairs.",
                            function="encode", reference=renamed, tests=RLE_TESTS.replace("rle", "encode"),
                            kind="strings")
    v = domain.validate(near, archive)
    assert v.reason == "duplicate" and archive.tasks[0].id in v.detail
    assert normalised(renamed)[0] == normalised(RLE)[0]


def test_a_padded_statement_is_rejected(domain):
    archive = accepted(domain, rle_proposal())
    padding = (" Consider carefully every character of the input, the order in which the characters appear, "
               "and remember that the output must list the runs in the order in which they occur in s.") * 2
    v = domain.validate(rle_proposal(statement=RLE_STATEMENT + padding), archive)
    assert v.reason == "padded", v.detail


def test_padded_code_with_the_same_behaviour_is_rejected(domain):
    archive = accepted(domain, rle_proposal())
    longer_code = '''def runs(text):
    """Walk the text once."""
    result = []
    index = 0
    while index < len(text):
        start = index
        while index < len(text) and text[index] == text[start]:
            index = index + 1
        length = index - start
        assert length > 0
        result.append((text[start], length))
    checked = [pair for pair in result if pair[1] > 0]
    return checked
'''
    tests = ("def test_runs():\n    assert runs('xxy') == [('x', 2), ('y', 1)]\n    assert runs('q') == [('q', 1)]\n"
             "    assert runs('mmnnn') == [('m', 2), ('n', 3)]\n")
    p = FunctionProposal(statement="Group equal neighbouring letters of text: a list of (letter, run length).",
                         function="runs", reference=longer_code, tests=tests, kind="strings")
    v = domain.validate(p, archive)
    assert v.reason == "padded" and "behaves as task" in v.detail, v.detail


RLE_PADDED = '''def rle(s, sep=None):
    """Run-length encoding of s."""
    width = 0
    label = "runs"
    out = []
    for c in s:
        if out and out[-1][0] == c:
            out[-1] = (c, out[-1][1] + 1)
        else:
            out.append((c, 1))
    total = len(out) + width
    return out
'''


def test_an_extra_parameter_and_filler_do_not_make_a_task_new(domain):
    """The reproduction: an accepted task again with an unused parameter, dead stores and a longer statement.
    Names were canonicalised in order of declaration (the parameter shifted every other name) and behaviour was
    compared only between functions of the same parameter count."""
    archive = accepted(domain, rle_proposal())
    statement = RLE_STATEMENT + " Take care to handle every character of s; sep is optional and may be ignored."
    v = domain.validate(rle_proposal(reference=RLE_PADDED, statement=statement), archive)
    assert v.reason == "padded", v.detail
    assert normalised(RLE_PADDED)[0] == normalised(RLE)[0]
    assert normalised(RLE_PADDED, strip=False)[0] != normalised(RLE)[0]


def test_tuples_instead_of_lists_do_not_make_a_task_new(domain):
    archive = accepted(domain, rle_proposal())
    lists = RLE.replace("(c, out[-1][1] + 1)", "[c, out[-1][1] + 1]").replace("(c, 1)", "[c, 1]")
    tests = RLE_TESTS.replace("(", "[").replace(")", "]").replace("rle[", "rle(").replace("\"]", "\")")
    tests = tests.replace("def test_basic[]", "def test_basic()").replace("def test_more[]", "def test_more()")
    assert "rle(\"aab\") == [[\"a\", 2], [\"b\", 1]]" in tests
    v = domain.validate(rle_proposal(reference=lists, tests=tests,
                                     statement="Return the run-length encoding of s as [char, count] lists."), archive)
    assert v.reason == "duplicate", v.detail


def test_behaviour_is_compared_across_signatures_and_modulo_list_and_tuple(domain):
    """Other code, an extra parameter that the tests never pass, lists for tuples: the same behaviour on every
    input both functions take."""
    archive = accepted(domain, rle_proposal())
    code = '''def runs(text, sep=None):
    if sep is not None:
        text = text.replace(sep, "")
    result = []
    index = 0
    while index < len(text):
        start = index
        while index < len(text) and text[index] == text[start]:
            index += 1
        result.append([text[start], index - start])
    return result
'''
    tests = ("def test_runs():\n    assert runs('xxy') == [['x', 2], ['y', 1]]\n    assert runs('q') == [['q', 1]]\n"
             "    assert runs('mmnnn') == [['m', 2], ['n', 3]]\n")
    p = FunctionProposal(statement="Group equal neighbouring letters of text into [letter, run length] lists.",
                         function="runs", reference=code, tests=tests, kind="strings")
    v = domain.validate(p, archive)
    assert v.reason in ("duplicate", "padded") and "behaves as task" in v.detail, (v.reason, v.detail)


def test_a_different_task_of_the_same_arity_is_accepted_next_to_it(domain):
    archive = accepted(domain, rle_proposal())
    p = FunctionProposal(statement="Return s with its vowels removed.", function="devowel",
                         reference="def devowel(s):\n    return ''.join(c for c in s if c not in 'aeiouAEIOU')\n",
                         tests="def test_it():\n    assert devowel('banana') == 'bnn'\n    assert devowel('') == ''\n"
                               "    assert devowel('AEx') == 'x'\n", kind="strings")
    assert domain.validate(p, archive).ok


# -- reward ----------------------------------------------------------------------------------------

from loopwright.runtime.learning.selfplay.controller import Controller, ControllerConfig  # noqa: E402
from loopwright.runtime.learning.selfplay.ratings import Ratings, sigmoid  # noqa: E402
from loopwright.runtime.learning.selfplay.replay import ReplayBuffer  # noqa: E402
from loopwright.runtime.learning.selfplay.reward import (  # noqa: E402
    LengthStats,
    RewardConfig,
    batch_rewards,
    clusters,
    learnability,
    total_reward,
)


def test_learnability_peaks_at_one_half_and_is_zero_at_the_edges():
    assert learnability(0, 8) == 0 and learnability(8, 8) == 0 and learnability(0, 0) == 0
    assert learnability(4, 8) == 1.0
    assert learnability(1, 8) == pytest.approx(4 * (1 / 8) * (7 / 8))
    assert learnability(2, 8) == learnability(6, 8) < learnability(3, 8)
    assert learnability(3, 6) == 1.0  # two truncated attempts: p̂ over the valid ones


def test_the_total_is_zero_at_the_edges_whatever_the_bonus_and_penalty():
    cfg = RewardConfig()
    assert total_reward(0.0, excess=0, novelty=1.0, cluster_share=0.0, cfg=cfg)["total"] == 0.0
    full = total_reward(1.0, excess=0, novelty=1.0, cluster_share=0.0, cfg=cfg)
    assert full["total"] == pytest.approx(1.0 + cfg.novelty_cap)  # the bonus is capped
    long = total_reward(1.0, excess=2.0, novelty=0.0, cluster_share=0.0, cfg=cfg)
    assert long["total"] == pytest.approx(pytest.importorskip("math").exp(-1.0))
    assert total_reward(0.5, excess=0, novelty=0.0, cluster_share=1.0, cfg=cfg)["total"] == 0.0  # clipped at 0


def test_length_excess_is_measured_in_mads_above_the_kind_median():
    stats = LengthStats()
    for n in (100, 110, 90, 105, 95):
        stats.add("strings", n)
    assert stats.median("strings") == 100
    assert stats.excess("strings", 100) == 0 and stats.excess("strings", 50) == 0
    assert stats.excess("strings", 120) == pytest.approx(20 / 5)  # MAD 5
    assert stats.excess("math", 10_000) == 0  # a kind with fewer than 5 tasks: no penalty yet


def test_the_batch_shares_clusters():
    a = frozenset({"x", "y", "z"})
    assert clusters([a, a | {"w"}, frozenset({"q"}), frozenset()], 0.5) == [0, 0, 1, 2]
    items = [{"passes": 4, "valid": 8, "kind": "k", "length": 10, "shingles": sorted(a)}] * 2 + [
        {"passes": 4, "valid": 8, "kind": "k", "length": 10, "shingles": ["other"]},
        {"passes": 8, "valid": 8, "kind": "k", "length": 10, "shingles": ["more"]}]
    r = batch_rewards(items, LengthStats(), RewardConfig(novelty_weight=0))
    assert [x["total"] for x in r] == [pytest.approx(0.5), pytest.approx(0.5), pytest.approx(0.75), 0.0]


# -- ratings, controller, replay ------------------------------------------------------------------------


def test_ratings_rate_a_new_task_from_its_measurement_and_move_on_a_replay():
    r = Ratings()
    assert r.predict("t", "k") is None
    r.observe("t", "k", 4, 8)
    assert r.predict("t", "k") == pytest.approx(4.5 / 9)
    r.observe("hard", "k", 0, 8)
    assert r.predict("hard", "k") == pytest.approx(0.5 / 9)
    before = r.ability("k")
    assert r.observe("t", "k", 8, 8) > 0  # solved more often than predicted: the solver improved
    assert r.ability("k") > before and r.predict("hard", "k") > 0.5 / 9
    assert sigmoid(r.ability("k") - r.difficulty_for("k", 0.3)) == pytest.approx(0.3)
    assert Ratings.from_state(json.loads(json.dumps(r.state()))).state() == r.state()


def test_ratings_follow_a_solver_that_learns_from_practice():
    """A solver gaining 0.002 logits per attempt on a kind (0.1 a round): the practice term γ is learned from the
    replays, and the predictions keep up (a random walk, or fixed Elo gains, lags such a trend)."""
    import random

    rng = random.Random(0)
    r, skill, true_b, errors = Ratings(), 0.0, {}, []
    for round_no in range(40):
        new = [f"t{round_no}.{i}" for i in range(3)]
        true_b |= {t: skill + rng.gauss(0.0, 0.5) for t in new}
        replayed = rng.sample(sorted(t for t in true_b if t not in new)[-12:], 3) if round_no else []
        for t in new + replayed:
            if t in replayed and round_no >= 20:
                errors.append((r.ability("k") - r.b[t]) - (skill - true_b[t]))
            r.observe(t, "k", sum(rng.random() < sigmoid(skill - true_b[t]) for _ in range(8)), 8)
        skill += 0.002 * 48
        r.advance({"k": 48})
    assert 0.001 < r.gain < 0.003
    assert abs(statistics.mean(errors)) < 0.1  # no lag


def test_a_new_task_asked_against_rated_examples_informs_the_solver_rating():
    r = Ratings()
    for t in ("a", "b"):
        r.observe(t, "k", 4, 8)
    before = r.ability("k")
    alone = Ratings.from_state(json.loads(json.dumps(r.state())))
    r.observe("new", "k", 8, 8, prior=r.request("k", 0.5, ["a", "b"]))  # asked at 0.5 next to a and b: solved 8/8
    alone.observe("new", "k", 8, 8, prior=alone.request("k", 0.5))  # no examples of its kind shown
    assert r.ability("k") > before and r.b["a"] < alone.b["a"]  # the solver underrated, or its examples overrated
    assert alone.ability("k") == before and alone.predict("new", "k") > 0.5
    assert Ratings.from_state(json.loads(json.dumps(r.state()))).state() == r.state()
    elo = {"global_theta": 0.4, "theta": {"k": 0.1}, "b": {"a": 0.2}}  # a state of the first (Elo) version
    assert Ratings.from_state(elo).predict("a", "k") == pytest.approx(sigmoid(0.3))


def test_the_mix_moves_with_the_batch_rate_and_backs_off_when_tasks_are_too_hard():
    ctl = Controller(ControllerConfig(target=0.5, eta=0.5, kappa=0.5))
    ctl.update(0.7, (45, 64))
    assert ctl.c == pytest.approx(0.6) and 0.35 < ctl.request_success() < 0.45  # too easy: harder ones asked
    for _ in range(20):  # impossible tasks: the batch fails
        ctl.update(0.0, (0, 64))
    assert ctl.c == ctl.cfg.c_min and ctl.request_success() == 0.8  # mostly replays, and the easiest request
    assert ctl.plan(8, replayable=10) == (1, 7) and ctl.plan(8, replayable=2) == (6, 2)
    ctl.update(1.0, None)
    assert ctl.c == pytest.approx(0.375)
    assert Controller.from_state(json.loads(json.dumps(ctl.state()))).state() == ctl.state()
    fresh = Controller()
    assert fresh.request_success([0.5, 0.5], 2) == pytest.approx(0.5)
    assert fresh.request_success([0.7, 0.7], 2) == pytest.approx(0.3)  # feed-forward: easy replays, harder new
    assert fresh.request_success([0.95] * 6, 2) == 0.2  # within [0.2, 0.8]
    for _ in range(40):
        fresh.update(0.9, (58, 64))
    assert fresh.c == fresh.cfg.c_max == 0.75  # a quarter is always replayed


def test_examples_bracket_the_requested_success():
    r = Ratings()
    for tid, passes in (("a", 1), ("b", 3), ("c", 5), ("d", 7), ("e", 8)):
        r.observe(tid, "k", passes, 8)
    shown = Controller(ControllerConfig(examples=2)).examples([(t, "k", {"statement": t}) for t in "abcde"], r)
    assert [x["id"] for x in shown] == ["c", "b"]  # one just above 0.5, one just below
    assert shown[0]["predicted"] > 0.5 > shown[1]["predicted"]


def test_replay_admits_by_score_samples_by_rank_and_staleness_and_evicts_extremes():
    import random

    buf = ReplayBuffer(capacity=3)
    assert not buf.offer("zero", "k", 0, 8, 0) and not buf.offer("all", "k", 8, 8, 0)
    assert buf.offer("mid", "k", 4, 8, 0) and buf.offer("low", "k", 1, 8, 0) and buf.offer("ok", "k", 3, 8, 0)
    assert not buf.offer("lower", "k", 1, 16, 1)  # full and below the minimum
    assert buf.offer("better", "k", 2, 8, 1) and "low" not in buf and buf.evicted == ["low"]
    probs = buf.probabilities(now=5)
    assert sum(probs.values()) == pytest.approx(1.0) and max(probs, key=probs.get) == "mid"
    rng = random.Random(0)
    counts = {t: 0 for t in probs}
    for _ in range(2000):
        counts[buf.sample(1, 5, rng)[0]] += 1
    assert counts["mid"] > counts["ok"] > 0 and counts["better"] > 0
    assert sorted(buf.sample(10, 5, rng)) == sorted(probs)  # without replacement, at most all
    twins = ReplayBuffer(rho=0.9)
    twins.offer("new", "k", 4, 8, 9)  # ranked first on a tie
    twins.offer("old", "k", 4, 8, 0)
    p = twins.probabilities(10)
    assert p["old"] > p["new"]  # same score: the staler one is drawn more
    assert not buf.reestimate("mid", 8, 8, 6) and buf.entries["mid"].extremes == 1
    assert not buf.reestimate("mid", 4, 8, 7) and buf.entries["mid"].extremes == 0  # a mid estimate resets it
    assert not buf.reestimate("mid", 0, 8, 8)
    assert buf.reestimate("mid", 0, 8, 9) and "mid" not in buf  # two in a row at 0 or n: evicted
    assert ReplayBuffer.from_state(json.loads(json.dumps(buf.state()))).state() == buf.state()


# -- the engine ------------------------------------------------------------------------------------

import asyncio  # noqa: E402
import csv  # noqa: E402

from selfplay_sim import (  # noqa: E402
    Population,
    ScriptedProposer,
    ScriptedSolver,
    SimDomain,
    SimProposer,
    SimSolver,
    function_task,
    sim_engine_parts,
)

from loopwright.runtime.learning.selfplay.domain import Attempt  # noqa: E402
from loopwright.runtime.learning.selfplay.engine import Engine, SelfPlayConfig  # noqa: E402
from loopwright.runtime.learning.selfplay.report import load_rounds, rounds_to_band, summary, write_report  # noqa: E402

DEVOWEL = function_task("devowel", "Return s without its vowels (aeiou, either case).",
                        "def devowel(s):\n    return ''.join(c for c in s if c.lower() not in 'aeiou')\n",
                        "def test_it():\n    assert devowel('banana') == 'bnn'\n    assert devowel('') == ''\n"
                        "    assert devowel('AEx') == 'x'\n", "strings")
SQUARES = function_task("squares", "Return the squares of the even numbers in xs, in order.",
                        "def squares(xs):\n    return [x * x for x in xs if x % 2 == 0]\n",
                        "def test_it():\n    assert squares([1, 2, 3, 4]) == [4, 16]\n    assert squares([]) == []\n"
                        "    assert squares([5]) == []\n", "lists")


def run(engine: Engine, rounds: int) -> list[dict]:
    return asyncio.run(engine.run(rounds))


def test_a_round_gates_measures_rewards_and_stores_its_report(tmp_path):
    rle = rle_proposal().model_dump()
    bad = [
        "not json at all",
        rle | {"reference": RLE.replace("+ 1", "+ 2")},  # fails its own tests
        rle | {"tests": "def test_it():\n    assert rle('') == []\n"},  # trivial
        rle | {"tests": "import random\n" + RLE_TESTS},  # banned
    ]
    dup = rle | {"statement": RLE_STATEMENT + "   "}  # checked after rle entered the archive
    proposer = ScriptedProposer([[*bad, rle, DEVOWEL, SQUARES, dup], [SQUARES]])
    solver = ScriptedSolver({"rle": 4, "devowel": 8, "squares": 0})
    cfg = SelfPlayConfig(batch=3, heldout_size=0, proposer_calls=2, waves=1)  # the batch in one request
    engine = Engine(PythonFunctions(GateConfig(time_limit=2.0, trivial_limit=0.5)), proposer, solver, cfg,
                    folder=tmp_path / "sp")
    [r] = run(engine, 1)
    assert r["proposals"] == 8 and r["accepted"] == 3 and r["replayed"] == 0
    assert r["rejected"] == {"unparseable": 1, "banned_api": 1, "reference_fails": 1, "trivial": 1, "duplicate": 1}
    assert r["s_bar"] == pytest.approx(12 / 24) and r["gap"] == pytest.approx(0.0)
    assert r["wasted"] == 16 and r["wasted_share"] == pytest.approx(16 / 24)  # devowel at k, squares at 0
    assert r["histogram"]["0"] == 1 and r["histogram"]["1"] == 1 and r["histogram"]["(.4,.6]"] == 1
    rows = [json.loads(x) for x in (tmp_path / "sp" / "measurements.jsonl").read_text().splitlines()]
    rewards = {row["task"]: row["reward"] for row in rows}
    by_name = {t.payload["function"]: t.id for t in engine.archive.tasks}
    assert rewards[by_name["devowel"]] == 0 and rewards[by_name["squares"]] == 0
    assert rewards[by_name["rle"]] > 0.5  # p̂ = 0.5: 1, less its cluster share, plus novelty
    assert list(engine.buffer.entries) == [by_name["rle"]]  # only a task with something to teach is replayed
    assert len(engine.archive) == 3 and (tmp_path / "sp" / "state.json").exists()
    assert "about 50%" in proposer.prompts[0]
    again = Engine(PythonFunctions(), ScriptedProposer([]), solver, cfg, folder=tmp_path / "sp")
    assert again.round_no == 1 and len(again.archive) == 3 and len(again.buffer) == 1  # state survives


class AlwaysPasses:
    """A solver that passes every attempt (its rating can only go up)."""

    async def attempts(self, domain, task, k: int, *, learn: bool = True) -> list[Attempt]:
        return [Attempt(passed=True, tokens=1) for _ in range(k)]


def test_a_later_wave_is_asked_for_after_the_earlier_waves_outcomes(tmp_path):
    """Two waves of two tasks: the second wave's request shows the first wave's tasks with their measured rates
    (round 1: before them there was nothing to show), and once the solver passes everything its rating has moved
    up between the waves of a round, so the second wave is asked for harder tasks than the first."""
    proposer = SimProposer("blind", 0, bad={})
    engine = Engine(SimDomain(), proposer, AlwaysPasses(), SelfPlayConfig(batch=4, waves=2, heldout_size=0),
                    folder=tmp_path / "sp")
    [first] = run(engine, 1)
    assert [r.count for r in proposer.requests] == [2, 2] and first["accepted"] == 4
    rows = [json.loads(x) for x in (tmp_path / "sp" / "measurements.jsonl").read_text().splitlines()]
    wave1 = {row["task"] for row in rows if row["wave"] == 1}
    assert len(wave1) == 2 and proposer.requests[0].examples == []
    shown = proposer.requests[1].examples
    assert shown and {e["id"] for e in shown} <= wave1 and all(e["measured"] == 1.0 for e in shown)
    run(engine, 1)
    a, b = proposer.requests[2:4]
    assert a.round == b.round == 2 and a.target == b.target
    assert b.difficulty > a.difficulty + 0.1  # wave 1 of round 2 passed 16 of 16: asked harder in wave 2
    one = SimProposer("blind", 0, bad={})
    run(Engine(SimDomain(), one, AlwaysPasses(), SelfPlayConfig(batch=4, waves=1, heldout_size=0)), 2)
    assert [r.count for r in one.requests] == [4, 4]  # one wave: the batch is asked for at once


def test_the_blind_proposer_decides_from_the_rates_it_is_shown_only():
    """Its tasks' difficulty depends on the examples' rates (and on the text it imitates), never on a difficulty
    number: examples whose meta says anything, and any request.difficulty, give the same tasks; an easier example
    (higher rate) gives a harder task."""
    def tasks(meta_delta: float, difficulty: float, predicted: float) -> list[float]:
        proposer = SimProposer("blind", 5, bad={})
        first = asyncio.run(proposer.propose(ProposalRequest(domain="d", target=0.5, count=1), ""))
        shown = json.loads(first[0])
        example = {"id": "x", "kind": shown["kind"], "statement": shown["statement"], "measured": predicted,
                   "predicted": predicted, "meta": {"delta": meta_delta, "topic": shown["kind"]}}
        request = ProposalRequest(domain="d", target=0.5, count=4, examples=[example], difficulty=difficulty)
        return [json.loads(x)["sim"]["delta"] for x in asyncio.run(proposer.propose(request, ""))]

    assert tasks(-40.0, -9.0, 0.5) == tasks(40.0, 9.0, 0.5)
    assert all(a > b for a, b in zip(tasks(0.0, 0.0, 0.8), tasks(0.0, 0.0, 0.5)))


def test_a_later_wave_does_not_replay_what_an_earlier_one_did():
    import random

    buf = ReplayBuffer()
    for t in "abcdef":
        buf.offer(t, "k", 4, 8, 0)
    rng = random.Random(0)
    for _ in range(50):
        first = buf.sample(3, 1, rng)
        assert not set(buf.sample(3, 1, rng, exclude=set(first))) & set(first)
    assert sorted(first + buf.sample(9, 1, rng, exclude=set(first))) == list("abcdef")


def test_a_solver_that_always_times_out_makes_every_task_length_hard(tmp_path):
    proposer = ScriptedProposer([[DEVOWEL, SQUARES]])
    engine = Engine(PythonFunctions(), proposer, ScriptedSolver(truncate=True),
                    SelfPlayConfig(batch=2, heldout_size=0, proposer_calls=1, patience=2, waves=1),
                    folder=tmp_path / "sp")
    records = run(engine, 5)
    assert records[0]["rejected"] == {"length_hard": 2} and records[0]["accepted"] == 0
    assert records[0]["s_bar"] is None and records[0]["wasted_share"] == 1.0
    assert len(records) == 2 and "rounds in a row" in engine.stopped  # nothing worth solving: it stops
    assert not engine.buffer.entries and engine.ratings.b == {}


def test_a_proposer_of_impossible_tasks_makes_the_controller_back_off_and_stop():
    domain, _, solver = sim_engine_parts("static", 0)
    proposer = SimProposer("blind", 0, bad={}, impossible=True)
    engine = Engine(domain, proposer, solver, SelfPlayConfig(patience=6, heldout_size=0))
    records = run(engine, 100)
    assert len(records) == 6 and all(r["reward_mean"] == 0 for r in records)
    assert "without a new task worth solving" in engine.stopped
    assert engine.controller.c == engine.cfg.controller.c_min
    assert records[-1]["requested_success"] > records[0]["requested_success"]  # asks for easier tasks
    assert len(proposer.requests) <= 6 * engine.cfg.waves * engine.cfg.proposer_calls  # calls are per wave


def test_padded_and_duplicate_proposals_never_get_through_in_simulation():
    domain, proposer, solver = sim_engine_parts("learning", 1, bad={"padded": 0.2, "duplicate": 0.2})
    engine = Engine(domain, proposer, solver, SelfPlayConfig(seed=1))
    records = run(engine, 25)
    assert proposer.emitted["padded"] > 10 and proposer.emitted["duplicate"] > 10
    assert sum(r["bad_accepted"] for r in records) == 0
    rejected = summary(records)["rejected"]
    assert rejected.get("padded", 0) + rejected.get("duplicate", 0) >= proposer.emitted["padded"] + \
        proposer.emitted["duplicate"]


def test_the_controller_converges_on_a_simulated_population():
    """Static and learning populations at the default batch (16 x 8): s̄ stays near the target — within 0.054 on
    average over rounds 10-40 and four seeds of the static population (the binomial floor is 0.035; the Elo ratings
    and controller before the Kalman ratings scored 0.061 here, 0.082 on the learning one) — and fewer attempts are
    wasted than with tasks of random difficulty (the bench measures this over 5 seeds, three populations and three
    baselines)."""
    gaps: dict[str, list[float]] = {"static": [], "learning": []}
    for population, seeds in (("static", (3, 4, 5, 6)), ("learning", (3, 4))):
        for seed in seeds:
            domain, proposer, solver = sim_engine_parts(population, seed)
            s = summary(run(Engine(domain, proposer, solver, SelfPlayConfig(seed=seed)), 40), lo=10, hi=40)
            gaps[population].append(s["mean_gap"])
            assert s["rounds_to_band"] is not None and s["rounds_to_band"] <= 15, (population, seed, s)
            if seed == 3:
                domain, proposer, solver = sim_engine_parts(population, seed, "random")
                flags = {"replay": False, "examples": "none", "control": False}
                base = summary(run(Engine(domain, proposer, solver, SelfPlayConfig(seed=seed, **flags)), 20))
                assert s["wasted_share"] < base["wasted_share"] / 2, (population, s["wasted_share"], base)
    assert statistics.mean(gaps["static"]) < 0.054, gaps
    assert statistics.mean(gaps["learning"]) < 0.062, gaps


def test_heldout_tasks_are_set_aside_and_measured_without_learning():
    population = Population("learning", 2)
    proposer = SimProposer("blind", 2, bad={})
    engine = Engine(SimDomain(), proposer, SimSolver(population),
                    SelfPlayConfig(heldout_size=3, heldout_from=2, heldout_every=3, seed=2))
    records = run(engine, 6)
    held = engine.heldout()
    assert len(held) == 3 and all(t.id not in engine.buffer for t in held)
    assert [r["heldout_added"] for r in records] == [0, 1, 1, 1, 0, 0]  # one a round from round 2
    asked = [t.meta["asked"] for t in held]
    assert asked[0] > asked[1] > asked[2] and asked[2] < 0.15  # down the ladder, 0.35 → 0.02 (against the offset)
    assert not {t.id for t in held} & set(engine.measured)  # never practised (never in a batch)
    assert [r["heldout"] is not None for r in records] == [False, False, True, False, False, True]
    before = population.attempts
    asyncio.run(engine._measure(held, learn=False))
    assert population.attempts == before  # measuring held-out tasks teaches nothing


def test_the_budget_stops_the_run(tmp_path):
    proposer = ScriptedProposer([[DEVOWEL], [SQUARES], [rle_proposal().model_dump()]])
    engine = Engine(PythonFunctions(), proposer, ScriptedSolver({"devowel": 4, "squares": 4}),
                    SelfPlayConfig(batch=1, heldout_size=0, budget_usd=0.05, proposer_calls=1))
    records = run(engine, 3)
    assert len(records) == 1 and engine.stopped.startswith("budget spent")  # 8 attempts x $0.01


def test_rounds_to_band_needs_three_rounds_in_a_row():
    rs = [{"round": i + 1, "s_bar": s} for i, s in enumerate([0.1, 0.45, 0.55, 0.9, 0.5, 0.52, 0.41, 0.7])]
    assert rounds_to_band(rs, 0.5) == 5
    assert rounds_to_band(rs[:6], 0.5) is None


def test_report_files_and_the_cli_say_simulation(tmp_path, capsys):
    from loopwright.cli.main import main

    folder = tmp_path / "sim"

    def cli(*argv: str) -> tuple[int, str]:
        capsys.readouterr()
        code = main(list(argv))
        return code, capsys.readouterr().out

    code, out = cli("selfplay", "--simulate", "static", "--rounds", "12", "--dir", str(folder))
    assert code == 0 and out.startswith("SIMULATION") and "round  12 [simulation]" in out
    assert "proposer blind" in out.splitlines()[0]
    assert "mean abs(s̄ − target) over rounds 10-50" in out
    code, out = cli("selfplay", "report", "--dir", str(folder), "--out", str(tmp_path / "out"))
    assert code == 0 and out.startswith("SIMULATION") and "| 12 |" in out
    data = json.loads((tmp_path / "out" / "history.json").read_text())
    assert data["meta"]["simulated"] and len(data["rounds"]) == 12 and data["summary"]["rounds"] == 12
    with (tmp_path / "out" / "rounds.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 12 and {"s_bar", "gap", "wasted_share", "rejected_padded", "hist_0"} <= set(rows[0])
    assert "SIMULATION" in (tmp_path / "out" / "report.md").read_text()
    code, out = cli("selfplay", "report", "--dir", str(folder), "--json")
    assert code == 0 and json.loads(out)["summary"]["simulated"] is True
    assert len(load_rounds(folder)) == 12 == len(write_report(folder)["rounds"])
    code, _ = cli("selfplay", "--simulate", "--rounds", "2", "--dir", str(folder), "--target", "1.5")
    assert code == 2


def test_report_after_a_simulation_in_a_project_points_at_it(repo, cli):
    cli(repo, "init")
    code, out, _ = cli(repo, "selfplay", "--simulate", "static", "--rounds", "2")
    assert code == 0 and "selfplay/simulate-static" in out
    code, _, err = cli(repo, "selfplay", "report")  # the default domain: nothing played there
    assert code == 2 and err.count("\n") == 1 and "`loopwright selfplay report --simulate static`" in err
    code, out, _ = cli(repo, "selfplay", "report", "--simulate", "static")  # as the hint says
    assert code == 0 and out.startswith("SIMULATION") and "| 2 |" in out


def test_report_of_a_simulation_outside_a_project_asks_for_its_folder(tmp_path, cli, monkeypatch):
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    code, _, err = cli(tmp_path, "selfplay", "report", "--simulate")
    assert code == 2 and "--dir" in err and err.count("\n") == 1
    assert list((tmp_path / "tmp").iterdir()) == []  # no empty temporary folder made to look in


# -- the real solver: k loopwright runs through the Runner, the hidden tests outside the worktree ------

from support import call, git, needs_bwrap, turn, write_script  # noqa: E402

from loopwright.runtime.learning.selfplay.real import ModelProposer, RunnerSolver, hide  # noqa: E402
from loopwright.runtime.project import open_project  # noqa: E402

GOOD_DEVOWEL = "def devowel(s):\n    return ''.join(c for c in s if c.lower() not in 'aeiou')\n"


def devowel_task():
    v = PythonFunctions().validate(FunctionProposal(**DEVOWEL), Archive())
    assert v.ok, v.detail
    return v.task


def scripted_project(repo, tmp_path, solution: str, *, extra: list[dict] | None = None):
    script = write_script(tmp_path / "solver.json", [
        turn(call("write_file", path="solution.py", content=solution)),
        turn(call("finish", summary="implemented"), expect="solution.py"),
        *(extra or [])])
    return open_project(repo, create=True, overrides={"provider": "scripted", "script": str(script)})


def test_real_attempts_pass_through_the_runner_and_leave_nothing_behind(repo, tmp_path):
    project = scripted_project(repo, tmp_path, GOOD_DEVOWEL)
    solver = RunnerSolver(project, budget_tokens=100_000, parallel=2)
    attempts = asyncio.run(solver.attempts(PythonFunctions(), devowel_task(), 2))
    assert [(a.passed, a.truncated) for a in attempts] == [(True, False), (True, False)]
    runs = [project.store.run(a.run_id) for a in attempts]
    assert all(r.status == "succeeded" and r.merge_commit is None for r in runs)
    for r in runs:
        task = project.store.task(r.task_id)
        assert task.options["on_success"] == "keep" and task.options["selfplay"]["domain"] == "python-functions"
        assert task.check_cmd.endswith(f" -P -m loopwright selfplay verify {task.options['selfplay']['task']}")
        assert "json" not in task.check_cmd and "hidden" not in task.check_cmd  # opaque: it names no file
        assert not Path(r.worktree).exists()  # worktree and branch removed after measuring
        assert r.branch not in git(repo, "branch", "--list")
        assert "assert devowel" not in task.goal  # the solver never sees the tests
    assert not (repo / "solution.py").exists()  # nothing merged into main
    assert list((project.dir / "selfplay" / "hidden").iterdir()) == []  # the hidden tests went with the attempts


@needs_bwrap
def test_the_solver_cannot_find_the_reference_or_the_tests_from_its_jail(repo, tmp_path):
    task = devowel_task()
    look = (f"n=$(find / \\( -name task.json -o -name '*{task.id}*' \\) 2>/dev/null | wc -l); "
            f"m=$(grep -rlF \"devowel('AEx')\" /tmp . 2>/dev/null | wc -l); echo found $n $m")
    script = write_script(tmp_path / "solver.json", [
        turn(call("shell", command=look)),
        turn(call("write_file", path="solution.py", content=GOOD_DEVOWEL), expect="found 0 0"),
        turn(call("finish", summary="implemented"))])
    project = open_project(repo, create=True, overrides={"provider": "scripted", "script": str(script)})
    [attempt] = asyncio.run(RunnerSolver(project).attempts(PythonFunctions(), task, 1))
    assert attempt.outcome == "passed", attempt.detail  # the check found the hidden tests; the solver's shell did not


def test_verify_names_an_unknown_task_in_one_line(repo, cli):
    open_project(repo, create=True)
    code, out, err = cli(repo, "selfplay", "verify", "0123456789ab")
    assert code == 2 and "no self-play task 0123456789ab" in err and err.count("\n") == 1


WRONG_DEVOWEL = "def devowel(s):\n    return s\n"


def attempt_of(repo, tmp_path, turns: list[dict], *, budget_tokens: int = 100_000, **overrides):
    """One attempt at the devowel task through the real Runner, by a solver playing `turns`."""
    script = write_script(tmp_path / "solver.json", turns)
    project = open_project(repo, create=True, overrides={"provider": "scripted", "script": str(script), **overrides})
    [attempt] = asyncio.run(RunnerSolver(project, budget_tokens=budget_tokens).attempts(
        PythonFunctions(), devowel_task(), 1))
    return attempt, project


def test_a_wrong_solution_fails_at_its_last_check_try(repo, tmp_path):
    write = turn(call("write_file", path="solution.py", content=WRONG_DEVOWEL))
    attempt, project = attempt_of(repo, tmp_path, [write, turn(call("finish", summary="done")),
                                                   turn(call("finish", summary="done again"), expect="failed")])
    assert attempt.outcome == "failed" and not attempt.passed and not attempt.truncated
    run = project.store.run(attempt.run_id)
    assert run.status == "failed" and "last of 2 tries" in run.reason  # [selfplay] check_tries = 2 by default
    checks = project.store.events(attempt.run_id, types=("check_ran",))
    assert len(checks) == 2 and "hidden tests: 0 of 1 passed" in checks[-1][2].output_tail
    assert "assert" not in checks[-1][2].output_tail  # the feedback does not leak the tests


def test_a_budget_that_ends_after_a_failed_check_is_a_failure_not_a_truncation(repo, tmp_path):
    """The reproduction: a wrong solution under max_turns=3 came back truncated, leaving p̂'s denominator."""
    write = turn(call("write_file", path="solution.py", content=WRONG_DEVOWEL))
    attempt, _ = attempt_of(repo, tmp_path, [write, turn(call("finish", summary="done")), write],
                            budget={"max_turns": 3}, selfplay={"check_tries": 5})
    assert attempt.outcome == "failed"


def test_a_budget_that_ends_before_the_first_finish_is_truncated(repo, tmp_path):
    write = turn(call("write_file", path="solution.py", content=GOOD_DEVOWEL))
    attempt, _ = attempt_of(repo, tmp_path, [write, write, turn(call("finish", summary="done"))], budget_tokens=10)
    assert attempt.outcome == "truncated" and not attempt.passed


def test_a_model_that_fails_for_good_is_an_error_not_a_failure(repo, tmp_path):
    attempt, _ = attempt_of(repo, tmp_path, [])  # the scripted model has nothing to say: a FatalModelError
    assert attempt.outcome == "error" and not attempt.passed


class ErrorsFirst:
    """A solver whose first `errors` attempts fail on infrastructure; then it passes every other attempt."""

    def __init__(self, errors: int):
        self.errors, self.calls = errors, []

    async def attempts(self, domain, task, k, *, learn=True):
        self.calls.append(k)
        out = []
        for i in range(k):
            if self.errors:
                self.errors -= 1
                out.append(Attempt(passed=False, error=True, detail="model unavailable"))
            else:
                out.append(Attempt(passed=i % 2 == 0))
        return out


def test_errored_attempts_are_run_again_and_never_rated(tmp_path):
    solver = ErrorsFirst(3)
    engine = Engine(SimDomain(), SimProposer("omniscient", 1), solver,
                    SelfPlayConfig(k=4, batch=1, waves=1, heldout_size=0, replay=False), folder=tmp_path)
    [r] = run(engine, 1)
    assert solver.calls == [4, 3]  # 3 errors: 3 attempts more
    [row] = [json.loads(line) for line in (tmp_path / "measurements.jsonl").read_text().splitlines()]
    assert (row["errors"], row["valid"], row["passes"]) == (3, 4, 2)
    assert r["s_bar"] == 0.5


def test_practice_attempts_credit_their_lessons_once_per_task(repo, tmp_path):
    """Two practice attempts that both fail, shown a lesson about the task: credited per run (reflection), the
    lesson would have gone harmful 2 and retired; credited per task relative to the measured p̂ (0 here: no
    attempt did worse than the task), it keeps a clean record; then two that pass give it one helpful mark."""
    from loopwright.memory.lessons import Lessons

    project = scripted_project(repo, tmp_path, "def devowel(s):\n    return s\n")
    lessons = Lessons(project.store, project.config.memory)
    lesson, _ = lessons.project.add("To remove vowels from s, check each character in either case")
    attempts = asyncio.run(RunnerSolver(project).attempts(PythonFunctions(), devowel_task(), 2))
    assert [a.passed for a in attempts] == [False, False]
    assert all(lessons.shown(a.run_id) == [lesson.ref] for a in attempts)  # it was recalled by both
    got = lessons.project.get(lesson.id)
    assert (got.status, got.helpful, got.harmful) == ("active", 0, 0)
    good = scripted_project(repo, tmp_path, GOOD_DEVOWEL)
    attempts = asyncio.run(RunnerSolver(good).attempts(PythonFunctions(), devowel_task(), 2))
    assert [a.passed for a in attempts] == [True, True]
    got = lessons.project.get(lesson.id)
    assert (got.helpful, got.harmful) == (1, 0)
    assert lessons.project.history(lesson.id)[-1].detail["evidence"] == devowel_task().id


def test_a_round_with_a_model_proposer_and_runner_solver(repo, tmp_path):
    from loopwright.harness.script import Script, ScriptTurn
    from loopwright.harness.scripted import ScriptedModel

    project = scripted_project(repo, tmp_path, GOOD_DEVOWEL)
    reply = json.dumps({"tasks": [DEVOWEL]})
    proposer = ModelProposer(project.config, lambda: ScriptedModel(Script(turns=[ScriptTurn(text=reply)])))
    engine = Engine(PythonFunctions(), proposer, RunnerSolver(project),
                    SelfPlayConfig(k=2, batch=1, heldout_size=0, proposer_calls=1),
                    folder=project.dir / "selfplay" / "pf")
    [r] = run(engine, 1)
    assert r["accepted"] == 1 and r["s_bar"] == 1.0 and r["wasted"] == 2 and proposer.calls == 1
    assert (project.dir / "selfplay" / "pf" / "rounds.jsonl").exists()


COUNT_WORDS = function_task("count_words", "Count the whitespace-separated words of a text.",
                            "def count_words(text):\n    return len(text.split())\n",
                            "def test_it():\n    assert count_words('a b') == 2\n    assert count_words('') == 0\n"
                            "    assert count_words('  x  ') == 1\n", "parsing")


def write_when(text: str | None, content: str, otherwise: dict | None = None) -> dict:
    """A scripted turn writing `content` as solution.py when `text` is in the request, else `otherwise`."""
    return turn(call("write_file", path="solution.py", content=content)) | {"when": text, "otherwise": otherwise}


def test_a_real_round_measures_what_was_computed_by_hand(repo, tmp_path):
    """Real mode end to end: the python-functions domain's gates, a scripted proposer (three tasks and a duplicate)
    and a scripted solver, through the Runner, whose answers depend on the task: always right for squares, always
    wrong for devowel, right on odd attempts for count_words. k = 4, one attempt to finish each."""
    from loopwright.harness.script import Script, ScriptTurn
    from loopwright.harness.scripted import ScriptedModel

    count_right, count_wrong = COUNT_WORDS["reference"], "def count_words(text):\n    return 0\n"
    count = write_when("#1\n", count_right, write_when("#3\n", count_right, write_when(None, count_wrong)))
    # the attempt's number is in its title ("... #3"); the third branch is reached only by count_words
    first = write_when(SQUARES["statement"], SQUARES["reference"],
                       write_when(DEVOWEL["statement"], WRONG_DEVOWEL, count))
    script = write_script(tmp_path / "solver.json", [first, turn(call("finish", summary="done"))])
    project = open_project(repo, create=True, overrides={"provider": "scripted", "script": str(script),
                                                         "selfplay": {"check_tries": 1}})
    reply = json.dumps({"tasks": [SQUARES, DEVOWEL, COUNT_WORDS, SQUARES | {"kind": "again"}]})
    proposer = ModelProposer(project.config, lambda: ScriptedModel(Script(turns=[ScriptTurn(text=reply)])))
    folder = project.dir / "selfplay" / "pf"
    engine = Engine(PythonFunctions(), proposer, RunnerSolver(project),
                    SelfPlayConfig(k=4, batch=3, waves=1, heldout_size=0, proposer_calls=1), folder=folder)
    [r] = run(engine, 1)
    assert r["proposals"] == 4 and r["rejected"] == {"duplicate": 1} and r["accepted"] == 3
    rows = {row["task"]: row for row in map(json.loads, (folder / "measurements.jsonl").read_text().splitlines())}
    by_function = {t.payload["function"]: rows[t.id] for t in engine.archive.tasks}
    got = {f: (row["passes"], row["valid"], row["truncated"], row["errors"]) for f, row in by_function.items()}
    assert got == {"squares": (4, 4, 0, 0), "devowel": (0, 4, 0, 0), "count_words": (2, 4, 0, 0)}
    assert r["s_bar"] == r["s_new"] == 6 / 12 and r["attempts"] == 12
    assert r["wasted"] == 8  # squares and devowel: all or nothing teaches the controller nothing
    assert by_function["squares"]["reward"] == by_function["devowel"]["reward"] == 0  # the edges
    count_task = next(t for t in engine.archive.tasks if t.payload["function"] == "count_words")
    assert count_task.meta["max_similarity"] <= 0.5  # so the novelty bonus is its cap, 0.1
    # 4·p̂(1−p̂) = 1 at p̂ = 1/2, no length penalty (fewer than 5 tasks of its kind), novelty bonus 0.1, and a
    # cluster of its own in a batch of 3
    assert by_function["count_words"]["reward"] == pytest.approx(1 + 0.1 - 1 / 3)
    assert r["reward_mean"] == pytest.approx((1 + 0.1 - 1 / 3) / 3)
    assert r["histogram"]["1"] == r["histogram"]["0"] == 1


# -- the repo domain: tasks grounded in the project --------------------------------------------------

from support import CHECK  # noqa: E402

from loopwright.runtime.learning.selfplay.repo import RepoDomain, RepoProposal, grounding  # noqa: E402

TRIPLE_TESTS = "from calc import triple\n\ndef test_triple():\n    assert triple(3) == 9\n    assert triple(-1) == -3\n"


def fixed_repo(repo: Path) -> Path:
    (repo / "calc.py").write_text((repo / "calc.py").read_text().replace("a - b", "a + b") + "\n# TODO: add triple\n")
    git(repo, "commit", "-qam", "fix add")
    return repo


def patch_of(repo: Path, path: str, text: str) -> str:
    before = (repo / path).read_text()
    (repo / path).write_text(text)
    diff = git(repo, "diff") + "\n"
    (repo / path).write_text(before)
    return diff


def test_repo_tasks_are_grounded_verified_by_hidden_tests_and_the_suite(repo, tmp_path, monkeypatch):
    import tempfile

    system_tmp = tmp_path / "system-tmp"  # the temp folder as the domain sees it: left as it was found
    system_tmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(system_tmp))
    fixed_repo(repo)
    domain = RepoDomain(repo, check=CHECK, gates=GateConfig(time_limit=10))
    calc = (repo / "calc.py").read_text()
    good = patch_of(repo, "calc.py", calc + "\n\ndef triple(x):\n    return 3 * x\n")
    shown = grounding(repo)
    assert "- calc.py" in shown and "TODO: add triple" in shown
    base = {"statement": "Add triple(x) to calc.py: three times x.", "cites": ["calc.py"], "tests": TRIPLE_TESTS,
            "reference_patch": good, "kind": "calc"}
    archive = Archive()
    v = domain.validate(RepoProposal(**base), archive)
    assert v.ok, v.detail
    archive.add(v.task)
    breaks = patch_of(repo, "calc.py", calc.replace("x * 2", "x * 3") + "\n\ndef triple(x):\n    return 3 * x\n")
    cases = {
        "ungrounded": base | {"cites": ["nowhere.py"]},
        "trivial": base | {"tests": "from calc import double\n\ndef test_double():\n    assert double(2) == 4\n",
                           "statement": "Make double work."},
        "reference_fails": base | {"reference_patch": "diff --git a/nope.py b/nope.py\n--- a/nope.py\n+++ b/nope.py\n"
                                                      "@@ -1 +1 @@\n-x\n+y\n", "statement": "Something else."},
        "banned_api": base | {"tests": "import random\n" + TRIPLE_TESTS},
        "duplicate": base,
    }
    for reason, proposal in cases.items():
        got = domain.validate(RepoProposal(**proposal), Archive() if reason != "duplicate" else archive)
        assert got.reason == reason, (reason, got.detail)
    suite = domain.validate(RepoProposal(**base | {"reference_patch": breaks}), Archive())
    assert suite.reason == "reference_fails" and "own suite" in suite.detail
    tree = repo  # the verifier: the hidden tests plus the project's suite, in a worktree with the work done
    (tree / "calc.py").write_text(calc + "\n\ndef triple(x):\n    return x + x + x\n")
    assert domain.verify(v.task, tree) == (True, "hidden tests: 1 of 1 passed; the project's suite passes")
    import subprocess

    hide(repo, domain, v.task)
    check = domain.check_command(v.task)
    assert subprocess.run(check, shell=True, cwd=tree, capture_output=True).returncode == 0
    (tree / "calc.py").write_text(calc)
    assert domain.verify(v.task, tree)[0] is False
    assert subprocess.run(check, shell=True, cwd=tree, capture_output=True).returncode == 1
    assert "calc.py" in domain.solver_goal(v.task) and "triple(3)" not in domain.solver_goal(v.task)
    assert "reference_patch" in domain.prompt(ProposalRequest(domain="repo", target=0.5, count=1))
    assert sorted(p.name for p in system_tmp.iterdir()) == []


# -- domains added by skills -------------------------------------------------------------------------

VERIFY_ANSWER = '''import sys
from pathlib import Path
solution, tests = Path(sys.argv[1]), Path(sys.argv[2])
answer = solution / "answer.txt"
sys.exit(0 if answer.exists() and answer.read_text().strip() == tests.read_text().strip() else 1)
'''


def test_a_skill_can_add_a_domain_with_its_verifier(tmp_path, monkeypatch):
    import os

    from loopwright.runtime.learning.selfplay.skills_domain import SkillProposal, skill_domain, skill_domains

    folder = Path(os.environ["LOOPWRIGHT_HOME"]) / "skills" / "answers"
    (folder / "scripts").mkdir(parents=True)
    (folder / "SKILL.md").write_text("---\nname: answers\ndescription: Practice writing answers.\nmetadata:\n"
                                     "  selfplay-domain: answers\n  selfplay-verifier: scripts/verify.py\n---\nBody\n")
    (folder / "scripts" / "verify.py").write_text(VERIFY_ANSWER)
    monkeypatch.chdir(tmp_path)
    assert list(skill_domains(None)) == ["answers"]
    domain = skill_domain(None, "answers")
    good = {"statement": "Write 42 to answer.txt.", "files": {"answer.txt": "42\n"}, "tests": "42"}
    archive = Archive()
    v = domain.validate(SkillProposal(**good), archive)
    assert v.ok, v.detail
    archive.add(v.task)
    assert domain.validate(SkillProposal(**good | {"files": {"answer.txt": "41"}, "statement": "Other."}),
                           Archive()).reason == "reference_fails"
    assert domain.validate(SkillProposal(**good | {"tests": "   ", "files": {"answer.txt": " "}}),
                           Archive()).reason == "trivial"
    assert domain.validate(SkillProposal(**good | {"files": {"../x": "42"}}), Archive()).reason == "unparseable"
    assert domain.validate(SkillProposal(**good), archive).reason == "duplicate"
    (tmp_path / "answer.txt").write_text("42")
    assert domain.verify(v.task, tmp_path)[0] is True
    git(tmp_path, "init", "-q")
    hide(tmp_path, domain, v.task)
    check = domain.check_command(v.task)
    import subprocess

    assert subprocess.run(check, shell=True, cwd=tmp_path, capture_output=True).returncode == 0
    (tmp_path / "answer.txt").write_text("41")
    assert subprocess.run(check, shell=True, cwd=tmp_path, capture_output=True).returncode == 1


VERIFY_BY_THE_DAY = '''import sys, time
from pathlib import Path
print(int(time.time() // 86400))
sys.exit(0 if (Path(sys.argv[1]) / "answer.txt").exists() else 1)
'''


@pytest.mark.parametrize("jail", [False, pytest.param(True, marks=needs_bwrap)])
def test_a_skill_verifier_runs_under_the_gates_conditions(tmp_path, jail):
    from loopwright.harness.sandbox import Sandbox, SandboxPolicy
    from loopwright.runtime.learning.selfplay.skills_domain import SkillDomain, SkillProposal

    (tmp_path / "skill").mkdir()
    verifier = tmp_path / "skill" / "verify.py"
    verifier.write_text(VERIFY_ANSWER)
    domain = SkillDomain("answers", verifier, "answers")
    domain.sandbox = Sandbox.for_policy(SandboxPolicy()) if jail else None
    good = SkillProposal(statement="Write 42 to answer.txt.", files={"answer.txt": "42\n"}, tests="42")
    assert domain.validate(good, Archive()).ok
    verifier.write_text(VERIFY_BY_THE_DAY)  # its output depends on the clock
    v = domain.validate(good, Archive())
    assert v.reason == "nondeterministic" and "the clock 40 days later" in v.detail, v.detail


PRYING_VERIFIER = '''import sys
from pathlib import Path
outside = Path(OUTSIDE)
for attempt in (lambda: print("read:", (outside / "secret.txt").read_text()),
                lambda: (outside / "pwned.txt").write_text("written by the verifier")):
    try:
        attempt()
    except OSError as e:
        print("refused:", e)
solution, tests = Path(sys.argv[1]), Path(sys.argv[2])
answer = solution / "answer.txt"
sys.exit(0 if answer.exists() and answer.read_text().strip() == tests.read_text().strip() else 1)
'''


@pytest.mark.parametrize("mode", [pytest.param("bwrap", marks=needs_bwrap), "none"])
def test_a_skills_verifier_runs_jailed_seeing_only_its_skill_the_solution_and_the_tests(tmp_path, mode):
    import os

    from loopwright.harness.sandbox import Sandbox, SandboxPolicy
    from loopwright.runtime.learning.selfplay.skills_domain import SkillProposal, run_verifier, skill_domain

    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("the-secret-outside\n")
    folder = Path(os.environ["LOOPWRIGHT_HOME"]) / "skills" / "answers"
    (folder / "scripts").mkdir(parents=True)
    (folder / "SKILL.md").write_text("---\nname: answers\ndescription: Practice writing answers.\nmetadata:\n"
                                     "  selfplay-domain: answers\n  selfplay-verifier: scripts/verify.py\n---\nBody\n")
    (folder / "scripts" / "verify.py").write_text(PRYING_VERIFIER.replace("OUTSIDE", repr(str(outside))))
    domain = skill_domain(None, "answers")
    domain.sandbox = Sandbox.for_policy(SandboxPolicy(mode=mode))
    v = domain.validate(SkillProposal(statement="Write 42 to answer.txt.", files={"answer.txt": "42\n"}, tests="42"),
                        Archive())
    assert v.ok, v.detail  # the verifier works in the jail: its script, the solution and the tests are there
    work = tmp_path / "work"
    work.mkdir()
    (work / "answer.txt").write_text("42")
    assert domain.verify(v.task, work)[0] is True
    passed, output = run_verifier(domain.verifier, {"answer.txt": "42"}, "42", limit=30, sandbox=domain.sandbox)
    assert passed
    got_out = (outside / "pwned.txt").exists()
    if mode == "none":
        assert got_out and "read: the-secret-outside" in output
    else:
        assert not got_out and "the-secret-outside" not in output and output.count("refused:") == 2, output


def test_practice_round_for_the_daemon(repo, tmp_path):
    from loopwright.harness.script import Script, ScriptTurn
    from loopwright.harness.scripted import ScriptedModel
    from loopwright.runtime.learning.selfplay import practice

    project = scripted_project(repo, tmp_path, GOOD_DEVOWEL)
    proposer = ModelProposer(project.config, lambda: ScriptedModel(Script(turns=[ScriptTurn(
        text=json.dumps(DEVOWEL))])))
    cfg = SelfPlayConfig(k=2, batch=1, heldout_size=0, proposer_calls=1, patience=2)
    r = asyncio.run(practice.practice_round(project, cfg=cfg, proposer=proposer))
    assert r is not None and r["round"] == 1 and r["accepted"] == 1 and r["reward_mean"] == 0  # solved 2 of 2
    assert (project.dir / "selfplay" / "python-functions" / "state.json").exists()
    # the same task again: a duplicate; two quiet rounds in a row (patience 2) and practice pauses itself
    proposer = ModelProposer(project.config, lambda: ScriptedModel(Script(turns=[ScriptTurn(
        text=json.dumps(DEVOWEL))])))
    r = asyncio.run(practice.practice_round(project, cfg=cfg, proposer=proposer))
    assert r["round"] == 2 and r["rejected"] == {"duplicate": 1}
    assert asyncio.run(practice.practice_round(project, cfg=cfg, proposer=proposer)) is None
    assert "paused" in practice.last_skip


def test_the_daemon_practises_only_when_idle_and_one_round_at_a_time(repo, monkeypatch):
    """The daemon's practice mode: off by default; on, it waits for an empty queue and idle_seconds, and runs one
    round at a time (the round itself is tested above; here it is a stand-in that records the call)."""
    from loopwright.runtime.fleet import daemon as daemon_module
    from loopwright.runtime.learning.selfplay import practice
    from loopwright.runtime.project import open_project

    calls: list[dict] = []
    release = asyncio.Event()

    async def stand_in(project, **kw):
        calls.append(kw)
        await release.wait()
        return None

    monkeypatch.setattr(practice, "practice_round", stand_in)
    (repo / "loopwright.toml").write_text("[practice]\nenabled = true\nidle_seconds = 0\nbudget_usd = 2\n")
    project = open_project(repo, create=True)

    async def scenario():
        d = daemon_module.Daemon(project, log=open("/dev/null", "w"))
        project.store.create_task("queued work", check="true")
        d.practise()
        assert d._practice is None  # the queue is not empty
        project.store.set_task_status(1, "cancelled")
        d.practise()
        d.practise()  # a round is already going: no second one
        await asyncio.sleep(0)
        assert calls == [{"domain": "python-functions", "budget_usd": 2.0}]
        release.set()
        await d._practice
        d.practise()  # skipped (None): waits an hour before trying again
        assert len(calls) == 1

    asyncio.run(scenario())
    project.config.practice.enabled = False
    d = daemon_module.Daemon(project)
    d.practise()
    assert d._practice is None


# -- a CLI agent as the solver -----------------------------------------------------------------------

FAKE_SOLVER = f'''import pathlib, sys
prompt = sys.argv[1]
print("fake solver got:", prompt.splitlines()[0], flush=True)
if "devowel" in prompt:
    pathlib.Path("solution.py").write_text({GOOD_DEVOWEL!r})
    print("wrote solution.py", flush=True)
'''


def test_a_practice_round_with_a_command_agent_as_the_solver(repo, tmp_path, monkeypatch):
    """Self-play's solver is any agent backend: here a command template running a fake agent script; the hidden
    tests (through the opaque check) decide, nothing merges and the attempts leave nothing behind."""
    from loopwright.harness.script import Script, ScriptTurn
    from loopwright.harness.scripted import ScriptedModel

    folder = tmp_path / "agentbin"
    folder.mkdir()
    (folder / "fakesolver.py").write_text(FAKE_SOLVER)
    monkeypatch.setenv("LOOPWRIGHT_SANDBOX__READABLE", json.dumps([str(folder)]))
    project = open_project(repo, create=True, overrides={
        "agent": "command",
        "agent_command": f"{sys.executable} {folder / 'fakesolver.py'} {{prompt}}"})
    proposer = ModelProposer(project.config, lambda: ScriptedModel(Script(turns=[ScriptTurn(
        text=json.dumps({"tasks": [DEVOWEL]}))])))
    engine = Engine(PythonFunctions(), proposer, RunnerSolver(project),
                    SelfPlayConfig(k=2, batch=1, heldout_size=0, proposer_calls=1),
                    folder=project.dir / "selfplay" / "pf")
    [r] = run(engine, 1)
    assert r["accepted"] == 1 and r["attempts"] == 2 and r["s_bar"] == 1.0, r
    runs = project.store.runs()
    assert len(runs) == 2 and all(x.status == "succeeded" and x.agent == "command" for x in runs)
    assert all(not Path(x.worktree).exists() and x.merge_commit is None for x in runs)
    assert not (repo / "solution.py").exists()
    said = json.dumps([m.model_dump() for m in project.store.conversation(runs[0].id)])
    assert "wrote solution.py" in said and "assert devowel" not in said  # the solver never sees the tests


def test_selfplay_with_a_cli_agent_as_the_solver_checks_the_proposers_model_first(repo, cli):
    open_project(repo, create=True)
    (repo / "loopwright.toml").write_text('agent = "command"\nagent_command = "true {prompt}"\n')
    code, out, err = cli(repo, "selfplay", "--rounds", "1")
    assert code == 2 and "ANTHROPIC_API_KEY is not set" in err and err.count("\n") == 1
    assert out == ""  # said before anything starts
