"""Textual app that supervises a running daemon (see the TUI issue)."""
