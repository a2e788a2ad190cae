"""Handler folders and helpers used by the runtime tests."""
