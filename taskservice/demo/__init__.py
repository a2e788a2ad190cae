"""The demo: real blood-pressure data replayed through the whole pipeline."""
