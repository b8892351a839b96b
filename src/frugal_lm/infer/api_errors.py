"""Errors in OpenAI's shape (`{"error": {"message", "type", "param", "code"}}`) and the app's handlers
that turn every exception into one.

Design choices:
- A handler raises `ApiError` wherever it finds a problem; one exception handler answers it.
- A rejected body (FastAPI's `RequestValidationError`) is answered as its first problem, one
  line naming the field as OpenAI names parameters (`messages[0].content`), never as
  FastAPI's list of every union member's mismatch.
- An exception nobody expected is a 500 in the same shape, so a client always gets JSON.
"""

from __future__ import annotations

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from frugal_lm.infer.http_limits import RequestRejected
from frugal_lm.infer.openai_schema import ErrorBody, ErrorDetail


class ApiError(Exception):
    """An error answered to the client in OpenAI's shape."""

    def __init__(
        self,
        status: int,
        message: str,
        param: str | None = None,
        code: str | None = None,
        kind: str = "invalid_request_error",
        headers: dict[str, str] | None = None,
    ):
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.kind = status, message, param, code, kind
        self.headers = headers

    def response(self) -> JSONResponse:
        body = ErrorBody(error=ErrorDetail(message=self.message, type=self.kind, param=self.param, code=self.code))
        return JSONResponse(body.model_dump(), status_code=self.status, headers=self.headers)


async def api_error(request: Request, error: ApiError) -> JSONResponse:
    return error.response()


async def invalid_body(request: Request, error: RequestValidationError) -> JSONResponse:
    return validation_error(error).response()


async def http_error(request: Request, error: StarletteHTTPException) -> JSONResponse:
    code = (
        error.code
        if isinstance(error, RequestRejected)
        else {404: "not_found", 405: "method_not_allowed"}.get(error.status_code)
    )
    return ApiError(error.status_code, str(error.detail), code=code, headers=error.headers).response()


async def internal_error(request: Request, error: Exception) -> JSONResponse:
    return ApiError(500, f"internal error: {type(error).__name__}: {error}", kind="server_error").response()


def validation_error(error: RequestValidationError) -> ApiError:
    """The first problem of a rejected body, as a one-line 400 naming the field."""
    problems = error.errors()
    if not problems:
        return ApiError(400, "invalid request body")
    # A union (`prompt`) reports every member's mismatch; our own validators' messages say more.
    first = next((problem for problem in problems if problem["type"] == "value_error"), problems[0])
    if first["type"] == "json_invalid":
        reason = first.get("ctx", {}).get("error", "not valid JSON")
        return ApiError(400, f"malformed JSON body: {reason}", code="invalid_json")
    location = [part for part in first["loc"] if part != "body"]
    # Union members add their type name to the location (e.g. 'str', 'list[str]'): drop it.
    location = [
        part
        for part in location
        if not (isinstance(part, str) and ("[" in part or part in ("str", "int", "float", "bool")))
    ]
    param = "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in location).lstrip(".")
    if first["type"] == "missing" and not param:
        return ApiError(400, "the request needs a JSON object body", code="invalid_json")
    if first["type"] == "model_attributes_type" and not param:
        return ApiError(
            400, "the request body must be a JSON object (Content-Type: application/json)", code="invalid_json"
        )
    message = first["msg"].removeprefix("Value error, ")
    return ApiError(400, f"{param or 'body'}: {message}", param or None, "invalid_value")


EXCEPTION_HANDLERS = (
    (ApiError, api_error),
    (RequestValidationError, invalid_body),
    (StarletteHTTPException, http_error),
    (Exception, internal_error),
)
"""(exception class, handler) pairs for `FastAPI.add_exception_handler`."""
