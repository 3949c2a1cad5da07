"""Self-play: a proposer writes verifiable tasks for a solver, kept near a target success rate (issue 8).

domain.py (the interface and records), gates.py and sandbox.py (validity),
python_functions.py (a domain), reward.py (the proposer's reward), ratings.py
and controller.py (difficulty held near the target), replay.py (the buffer),
engine.py (the loop), report.py (rounds and their files), commands.py (CLI).
"""
