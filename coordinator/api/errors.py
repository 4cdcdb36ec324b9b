"""OpenAI-shaped errors: ``{"error": {"message", "type", "param", "code"}}`` with the right status.

Services raise their own typed errors; this module is the one place that turns them into HTTP.
"""

from __future__ import annotations

from typing import Any

from litestar import Request, Response
from litestar.exceptions import HTTPException

__all__ = ["ApiError", "api_error_response", "http_exception_handler", "unexpected_error_handler"]

_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "insufficient_quota",
    403: "permission_error",
    404: "invalid_request_error",
    405: "invalid_request_error",
    409: "invalid_request_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
    500: "server_error",
    502: "server_error",
    503: "server_error",
    504: "server_error",
}


class ApiError(Exception):
    """An error to show the caller, with its HTTP status and OpenAI error code."""

    def __init__(
        self, status: int, message: str, *, code: str | None = None, param: str | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.param = param


def error_body(status: int, message: str, code: str | None, param: str | None) -> dict[str, Any]:
    return {
        "error": {
            "message": message,
            "type": _TYPES.get(
                status, "server_error" if status >= 500 else "invalid_request_error"
            ),
            "param": param,
            "code": code,
        }
    }


def api_error_response(_: Request[Any, Any, Any], error: ApiError) -> Response[dict[str, Any]]:
    return Response(
        error_body(error.status, error.message, error.code, error.param), status_code=error.status
    )


def http_exception_handler(
    _: Request[Any, Any, Any], error: HTTPException
) -> Response[dict[str, Any]]:
    """Litestar's own errors (404 route, 405, 413 body too large, ...) in the OpenAI shape."""
    status = error.status_code
    codes = {404: "not_found", 405: "method_not_allowed", 413: "request_too_large"}
    message = str(error.detail) if error.detail else "request failed"
    if status == 413:
        message = "request body is too large"
    return Response(error_body(status, message, codes.get(status), None), status_code=status)


def unexpected_error_handler(
    request: Request[Any, Any, Any], error: Exception
) -> Response[dict[str, Any]]:
    request.logger.exception("unhandled error", exc_info=error)
    return Response(
        error_body(500, "internal error; the request id identifies it in the logs", None, None),
        status_code=500,
    )
