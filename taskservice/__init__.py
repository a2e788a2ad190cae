"""Task Service: runs business-logic functions as tracked tasks triggered by Kafka events."""

__version__ = "0.1.0"
