"""Named exceptions and the one place that maps them to HTTP responses.

    KangarooError               (server.contract, shared with finetune)
     ├── SettingsError          bad configuration; stops start-up (no HTTP)
     └── APIError               has an HTTP status and an OpenAI error type/code
          ├── InvalidRequestError   400 the request is wrong (names the field and value)
          │    └── InvalidJsonSchemaError  400 a schema the engine cannot enforce exactly
          ├── InvalidAdapterError   400 an adapter fails its checks or the engine refuses it
          ├── AuthenticationError   401 a key is needed and missing or wrong
          ├── PermissionDeniedError 403 the caller may not use this route
          ├── ModelNotFoundError    404 `model` is not served here (also adapters, versions)
          ├── NotFoundError         404 no such file, or not the caller's
          ├── RequestTimeoutError   408 a deadline passed (in the queue, or generating)
          ├── AdapterConflictError  409 an adapter was trained on another base model
          ├── RequestTooLargeError  413 the body (e.g. an adapter upload) is over its limit
          ├── RetryableError        carries Retry-After / retry-after-ms headers
          │    ├── RateLimitError   429 the key is over its requests or tokens per minute
          │    └── OverloadedError  429 the queue of waiting requests is full
          ├── EngineFailedError     500 the engine failed; a bug of ours or of the engine
          ├── EngineNotReadyError   503 the engine is still starting
          ├── ShuttingDownError     503 the server is draining before it exits
          └── EngineDeadError       503 the engine process died; the server is exiting

Anything else that escapes a handler is a bug: it becomes a 500 with a generic message and a log
entry. A `ValueError` is never taken to mean "the client's fault".
"""

import json
import logging
import math
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from server.contract import KangarooError

logger = logging.getLogger(__name__)


class APIError(KangarooError):
    """An error that is answered with an OpenAI-style error body."""

    status_code = 500
    error_type = "server_error"
    code: str | None = None

    def __init__(self, message: str, param: str | None = None):
        super().__init__(message)
        self.message = message
        self.param = param

    def headers(self) -> dict[str, str]:
        """Extra response headers (e.g. when to retry)."""
        return {}


class RetryableError(APIError):
    """An error the client may retry after `retry_after_s` seconds."""

    def __init__(self, message: str, retry_after_s: float, param: str | None = None):
        super().__init__(message, param)
        self.retry_after_s = retry_after_s

    def headers(self) -> dict[str, str]:
        """`Retry-After` in whole seconds (HTTP) and `retry-after-ms` (read by OpenAI clients)."""
        return {
            "retry-after": str(max(1, math.ceil(self.retry_after_s))),
            "retry-after-ms": str(max(1, math.ceil(self.retry_after_s * 1000))),
        }


class InvalidRequestError(APIError):
    """The request is malformed or asks for something impossible."""

    status_code = 400
    error_type = "invalid_request_error"


class InvalidJsonSchemaError(InvalidRequestError):
    """A JSON schema (response format, tool parameters) that cannot be enforced as written.

    `param` is where: the request field, then a JSON pointer into the schema.
    """

    code = "invalid_json_schema"


class InvalidAdapterError(APIError):
    """A LoRA adapter cannot be served; the message says why (from the engine or our checks)."""

    status_code = 400
    error_type = "invalid_request_error"
    code = "invalid_adapter"


class AuthenticationError(APIError):
    """No key, or a wrong one, where a key is required."""

    status_code = 401
    error_type = "invalid_request_error"
    code = "invalid_api_key"


class PermissionDeniedError(APIError):
    """The caller is known but may not use this route."""

    status_code = 403
    error_type = "invalid_request_error"
    code = "permission_denied"


class ModelNotFoundError(APIError):
    """The request names a model (or adapter, or adapter version) this server does not serve."""

    status_code = 404
    error_type = "invalid_request_error"
    code = "model_not_found"

    def __init__(self, model: str, why: str = "", param: str | None = "model"):
        super().__init__(f"The model '{model}' does not exist{why}.", param=param)


class NotFoundError(APIError):
    """The request names an object (a file) that does not exist, or that its key may not see:
    the same answer for both, so ids cannot be probed."""

    status_code = 404
    error_type = "invalid_request_error"
    code = "not_found"


class AdapterConflictError(APIError):
    """An adapter was made for another base model than the one served."""

    status_code = 409
    error_type = "invalid_request_error"
    code = "base_model_mismatch"


class RequestTimeoutError(APIError):
    """A deadline passed: the request waited too long for a slot, or generated too long."""

    status_code = 408
    error_type = "timeout_error"

    def __init__(self, message: str, code: str):
        super().__init__(message)
        self.code = code


class RequestTooLargeError(APIError):
    """The request body is over a configured limit."""

    status_code = 413
    error_type = "invalid_request_error"
    code = "request_too_large"


class RateLimitError(RetryableError):
    """The caller's key is over its requests or tokens per minute."""

    status_code = 429
    code = "rate_limit_exceeded"

    def __init__(self, message: str, retry_after_s: float, limit: str):
        super().__init__(message, retry_after_s)
        self.error_type = limit  # OpenAI's type names the limit: "requests" or "tokens"


class OverloadedError(RetryableError):
    """Too many requests are already waiting for the engine."""

    status_code = 429
    error_type = "server_error"
    code = "server_overloaded"


class EngineNotReadyError(APIError):
    """The engine has not finished starting."""

    status_code = 503
    error_type = "server_error"
    code = "engine_not_ready"

    def __init__(self) -> None:
        super().__init__("The model is still loading; retry shortly.")


class EngineFailedError(APIError):
    """The engine failed while serving the request."""

    status_code = 500
    error_type = "server_error"
    code = "engine_error"


class ShuttingDownError(APIError):
    """The server is draining: it finishes what it has and takes nothing new."""

    status_code = 503
    error_type = "server_error"
    code = "server_shutting_down"


class EngineDeadError(APIError):
    """The engine's process died; this server process exits so that a supervisor restarts it."""

    status_code = 503
    error_type = "server_error"
    code = "engine_dead"

    def __init__(self) -> None:
        super().__init__("The engine has stopped; this server is restarting. Retry shortly.")


def error_body(
    message: str, error_type: str, param: str | None = None, code: str | None = None
) -> dict[str, Any]:
    """OpenAI's error envelope."""
    return {"error": {"message": message, "type": error_type, "param": param, "code": code}}


def api_error_body(exc: APIError) -> dict[str, Any]:
    """The envelope of an `APIError` (also sent as the error event inside a stream)."""
    return error_body(exc.message, exc.error_type, exc.param, exc.code)


def api_error_response(exc: APIError, headers: dict[str, str] | None = None) -> JSONResponse:
    """The HTTP response of an `APIError`: its status, body and headers."""
    return JSONResponse(
        api_error_body(exc), status_code=exc.status_code, headers=exc.headers() | (headers or {})
    )


def install_error_handlers(app: FastAPI) -> None:
    """Map every exception to its HTTP status and OpenAI error body. The only such mapping."""

    # Each handler leaves the error's code in the request state for the request log.
    @app.exception_handler(APIError)
    async def _api_error(request: Request, exc: APIError) -> JSONResponse:
        request.state.error = exc.code or exc.error_type
        return api_error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        err = validation_error(exc.errors())
        request.state.error = err.error_type
        return JSONResponse(api_error_body(err), status_code=err.status_code)

    @app.exception_handler(HTTPException)
    async def _http_error(request: Request, exc: HTTPException) -> JSONResponse:
        error_type = "invalid_request_error" if exc.status_code < 500 else "server_error"
        request.state.error = code = _http_code(exc.status_code)
        body = error_body(str(exc.detail), error_type, code=code)
        return JSONResponse(body, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        logger.exception("Unhandled error on %s %s", request.method, request.url.path)
        request.state.error = "internal_error"
        body = error_body("Internal server error.", "server_error", code="internal_error")
        return JSONResponse(body, status_code=500)


def validation_error(errors: Any) -> InvalidRequestError:
    """Turn pydantic's errors into one 400 naming the most specific bad field and its value."""
    located = [(_field_path(err["loc"]), err) for err in errors]
    path, err = max(located, key=lambda item: len(item[0]))
    param = ".".join(path) or None
    if err["type"] == "json_invalid":
        return InvalidRequestError(f"The request body is not valid JSON: {err['ctx']['error']}.")
    if err["type"] == "extra_forbidden":
        return InvalidRequestError(f"Unrecognized request argument supplied: {param}", param)
    if err["type"] == "missing":
        return InvalidRequestError(f"Missing required parameter: '{param}'.", param)
    if param is None:
        return InvalidRequestError(f"Invalid request body: {err['msg']}.")
    value = _short(err.get("input"))
    return InvalidRequestError(f"Invalid value for '{param}': {value}. {err['msg']}.", param)


def _field_path(loc: tuple[Any, ...]) -> list[str]:
    if loc[:1] == ("header",):  # a header's name as sent ("Last-Event-ID")
        return [str(part) for part in loc[1:]]
    # Drop "body" and the union-member tags pydantic puts in locations ("str", "list[int]",
    # a model's class name: API field names are snake_case, never capitalised).
    return [str(part) for part in loc if part != "body" and not _is_union_tag(part)]


def _is_union_tag(part: Any) -> bool:
    return isinstance(part, str) and ("[" in part or part in _TYPE_TAGS or part[:1].isupper())


_TYPE_TAGS = {"str", "int", "float", "bool", "none"}


def _short(value: Any, limit: int = 200) -> str:
    text = json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= limit else text[:limit] + "..."


def _http_code(status: int) -> str:
    codes = {404: "not_found", 405: "method_not_allowed", 413: "request_too_large"}
    return codes.get(status, f"http_{status}")
