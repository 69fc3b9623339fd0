"""See docs/internals.md for what this package owns."""
