"""The chat API over HTTP (`loopwright serve --http`): JSON routes, people's tokens, and a live stream of changes."""
