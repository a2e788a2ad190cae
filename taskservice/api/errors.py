"""Errors of the HTTP API in the ExtraHorizon wire form `{code, name, message}`.

The official SDK picks its error class from `code` alone and copies `name` and
`message`, so every failure a client can cause maps to one catalogued code. Each class
sets the code, name and HTTP status; extra fields (`taskId`, `runtimeError`) go in
`fields`.
"""

from __future__ import annotations

from typing import Any, ClassVar


class ApiError(Exception):
    """Raised to answer a request with an ExtraHorizon error body; the root of API errors."""

    code: ClassVar[int | None] = 1
    name: ClassVar[str] = "SERVER_EXCEPTION"
    status: ClassVar[int] = 500

    def __init__(self, message: str, **fields: Any) -> None:
        super().__init__(message)
        self.message = message
        self.fields = fields

    def body(self) -> dict[str, Any]:
        """Build the JSON body: code (left out when None), name, message and extra fields."""
        body: dict[str, Any] = {"name": self.name, "message": self.message}
        if self.code is not None:
            body = {"code": self.code, **body}
        body.update(self.fields)
        return body


class ServerError(ApiError):
    """Raised for an unexpected failure of the service."""


class NoPermissionError(ApiError):
    """Raised when the caller lacks the permission an endpoint needs."""

    code, name, status = 10, "NO_PERMISSION_EXCEPTION", 401


class IdFormatError(ApiError):
    """Raised when a path or body id is not a 24-character hexadecimal ObjectId."""

    code, name, status = 12, "ID_FORMAT_EXCEPTION", 400


class EmptyBodyError(ApiError):
    """Raised when an endpoint needs a body and the request has none."""

    code, name, status = 13, "EMPTY_BODY_EXCEPTION", 400


class MissingRequiredFieldsError(ApiError):
    """Raised when a required body field is absent."""

    code, name, status = 14, "MISSING_REQUIRED_FIELDS_EXCEPTION", 400


class FieldFormatError(ApiError):
    """Raised when a body field has the wrong type or is out of range."""

    code, name, status = 15, "FIELD_FORMAT_EXCEPTION", 400


class ResourceUnknownError(ApiError):
    """Raised when an id or function name does not exist."""

    code, name, status = 16, "RESOURCE_UNKNOWN_EXCEPTION", 404


class ResourceAlreadyExistsError(ApiError):
    """Raised when a unique name is already taken."""

    code, name, status = 17, "RESOURCE_ALREADY_EXISTS_EXCEPTION", 400


class InvalidRqlError(ApiError):
    """Raised when RQL has bad syntax, an unknown field or an unsupported operator."""

    code, name, status = 19, "INVALID_RQL_EXCEPTION", 400


class EmptyRqlError(ApiError):
    """Raised when an endpoint needs RQL terms that the query lacks."""

    code, name, status = 20, "EMPTY_RQL_EXCEPTION", 400


class BodyFormatError(ApiError):
    """Raised when the body is not valid JSON or not a JSON object."""

    code, name, status = 22, "BODY_FORMAT_EXCEPTION", 400


class IllegalStateError(ApiError):
    """Raised when an operation does not fit the current state, e.g. cancelling a running task."""

    code, name, status = 27, "ILLEGAL_STATE_EXCEPTION", 400


class UserNotAuthenticatedError(ApiError):
    """Raised when a request without credentials reaches an endpoint that needs them."""

    code, name, status = 104, "USER_NOT_AUTHENTICATED_EXCEPTION", 401


class AccessTokenUnknownError(ApiError):
    """Raised when a bearer token is not known; the SDK refreshes its tokens on this code."""

    code, name, status = 117, "ACCESS_TOKEN_UNKNOWN_EXCEPTION", 401


class AccessTokenExpiredError(ApiError):
    """Raised when a bearer token has expired; the SDK refreshes its tokens on this code."""

    code, name, status = 118, "ACCESS_TOKEN_EXPIRED_EXCEPTION", 401


class InvalidFunctionCodeError(ApiError):
    """Raised when function code is not base64 of a valid, non-empty, safe zip archive."""

    code, name, status = 1401, "INVALID_FUNCTION_CODE_EXCEPTION", 400


class InvalidFunctionConfigurationError(ApiError):
    """Raised when a function setting is invalid: runtime, entry point, limits, environment."""

    code, name, status = 1402, "INVALID_FUNCTION_CONFIGURATION_EXCEPTION", 400


class ConcurrentExecutionLimitError(ApiError):
    """Raised when the cap on direct executions running at once is reached."""

    code, name, status = 1403, "CONCURRENT_EXECUTION_LIMIT_EXCEPTION", 400


class DirectExecutionTimeLimitError(ApiError):
    """Raised when a function whose timeLimit exceeds the direct-execution maximum is executed."""

    code, name, status = 1404, "TIME_LIMIT_EXCEEDS_DIRECT_EXECUTION_MAXIMUM_EXCEPTION", 400


class LambdaInvocationError(ApiError):
    """Raised when a function could not be started (import error, missing handler, no code)."""

    code, name, status = 1405, "LAMBDA_INVOCATION_EXCEPTION", 400


class LambdaRuntimeError(ApiError):
    """Raised when a directly executed function failed while running; adds taskId and runtimeError."""

    code, name, status = 1406, "LAMBDA_RUNTIME_EXCEPTION", 400


class InvalidFunctionNameError(ApiError):
    """Raised when a function name is not 1 to 64 letters, digits or '-'."""

    code, name, status = 1407, "INVALID_FUNCTION_NAME_EXCEPTION", 400


class NoTaskLogsFoundError(ApiError):
    """Raised when a task ran but none of its log lines are stored yet."""

    code, name, status = 1408, "NO_TASK_LOGS_FOUND", 400


class InvalidApiFunctionResultError(ApiError):
    """Raised when an API function returns an object that is not a valid HTTP response."""

    code, name, status = 1409, "INVALID_API_FUNCTION_RESULT", 400


class ApiFunctionTimeLimitError(ApiError):
    """Raised when an API function's timeLimit exceeds the API-function maximum."""

    code, name, status = 1411, "TIME_LIMIT_EXCEEDS_API_FUNCTION_MAXIMUM_EXCEPTION", 400


class ConcurrentApiFunctionLimitError(ApiError):
    """Raised when the cap on API-function calls running at once is reached."""

    code, name, status = 1412, "CONCURRENT_API_FUNCTION_LIMIT_EXCEPTION", 400


class NoApiRequestLogsFoundError(ApiError):
    """Raised when an API request has no stored log lines yet."""

    code, name, status = 1413, "NO_API_REQUEST_LOGS_FOUND", 400


class EndpointError(ApiError):
    """Raised for an HTTP method that an /api/ path or another route does not support."""

    code, name, status = None, "ENDPOINT_EXCEPTION", 405


class OAuth2Error(Exception):
    """Raised by the token endpoint; answered in the RFC 6749 form `{error, error_description}`."""

    def __init__(self, error: str, description: str, status: int = 400) -> None:
        super().__init__(description)
        self.error = error
        self.description = description
        self.status = status

    def body(self) -> dict[str, Any]:
        """Build the body; the SDK reads `error` for its class and `description` for the message."""
        return {"error": self.error, "error_description": self.description, "description": self.description}


def catalogue() -> list[type[ApiError]]:
    """Return every concrete error class, in code order, the one without a code last."""
    classes: list[type[ApiError]] = []
    pending = list(ApiError.__subclasses__())
    while pending:
        cls = pending.pop()
        classes.append(cls)
        pending.extend(cls.__subclasses__())
    return sorted(classes, key=lambda cls: (cls.code is None, cls.code or 0))
