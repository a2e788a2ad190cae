"""The service's exception hierarchy; retry loops read `retriable` instead of class lists."""

from __future__ import annotations


class ServiceError(Exception):
    """Raised for failures of the service itself; the root of every project error."""

    retriable = False


class ConfigurationError(ServiceError):
    """Raised when settings or definition files are invalid; the message names the value and the fix."""


class DatabaseUnavailableError(ServiceError):
    """Raised when PostgreSQL cannot be reached or a connection broke mid-statement."""

    retriable = True


class BrokerUnavailableError(ServiceError):
    """Raised when the Kafka broker cannot be reached or did not acknowledge in time."""

    retriable = True


class NotFoundError(ServiceError):
    """Raised when a named function, dispatcher or task does not exist."""


class AlreadyExistsError(ServiceError):
    """Raised when a name that must be unique is already taken."""


class InvalidDefinitionError(ServiceError):
    """Raised when a function or dispatcher definition fails validation."""
