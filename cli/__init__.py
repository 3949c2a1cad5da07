"""The command line: the top layer beside the TUI. Parsers, `cmd_*` functions and their output live here; the
packages below return data and raise `LoopwrightError`s. `main` is the `loopwright` entry point."""
