"""A user's data on request: export, erasure (by an operator, the CLI or the user's own message)."""
