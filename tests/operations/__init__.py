"""Tests of metrics, logs, health and the deployment files."""
