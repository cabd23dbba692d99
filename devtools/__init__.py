"""Dev and operator tooling, kept apart from the domain: the `wabot` command, `make dev`'s embedded services
and runner, the Infobip sandbox and the local HTTP server the tests' fakes share."""
