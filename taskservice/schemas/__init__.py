"""Pydantic models of every message the service reads or writes on Kafka."""
