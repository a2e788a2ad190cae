"""Recovery tools: list, show and replay dead letters, and redrive failed tasks."""
