"""The HTTP server of the daemon."""
