"""Getting better at a project: reflection after every run (lessons), `eval` (does memory help?) and self-play
(a proposer writes verifiable tasks for a solver, kept near 50% success)."""
