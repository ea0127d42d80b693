"""One error shape for every failure: {"error": {"code", "message"}} (+ "request_id"), 4xx for client faults,
and a catch-all that logs the traceback with the request id and gives the client a 500 with no internals."""
from __future__ import annotations

import json
import logging
import re
import uuid
from typing import Any

import redis
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger("facetrail.api")

_RID_OK = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")


class ApiError(Exception):
    """Raise from any route: becomes a JSON error with this status and a stable machine-readable code."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers


class BodyTooLarge(Exception):
    pass


_STATUS_CODES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
                 405: "method_not_allowed", 406: "not_acceptable", 409: "conflict", 413: "payload_too_large",
                 415: "unsupported_media_type", 422: "invalid_request", 429: "too_many_requests",
                 503: "unavailable"}


def request_id(request: Request) -> str:
    return request.scope.get("state", {}).get("request_id", "-")


def error_body(status: int, code: str, message: str, rid: str, details: Any = None) -> dict:
    err: dict[str, Any] = {"code": code, "message": message}
    if details is not None:
        err["details"] = details
    return {"error": err, "request_id": rid}


def error_response(request: Request, status: int, code: str, message: str, details: Any = None,
                   headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(error_body(status, code, message, request_id(request), details), status_code=status,
                        headers=headers)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError):
        return error_response(request, exc.status, exc.code, exc.message, headers=exc.headers)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException):
        if isinstance(exc.__cause__, BodyTooLarge):  # FastAPI wraps body-read errors in a 400
            return error_response(request, 413, "payload_too_large", str(exc.__cause__))
        code = _STATUS_CODES.get(exc.status_code, "error" if exc.status_code >= 500 else "bad_request")
        msg = exc.detail if isinstance(exc.detail, str) else code.replace("_", " ")
        if exc.status_code == 404 and msg == "Not Found":
            msg = f"no route {request.url.path}"
        return error_response(request, exc.status_code, code, msg, headers=getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError):
        details = []
        for e in exc.errors()[:20]:
            loc = ".".join(str(p) for p in e.get("loc", ()))
            details.append({"field": loc, "reason": str(e.get("msg", "invalid"))[:200]})
        first = details[0] if details else {"field": "", "reason": "invalid request"}
        msg = f"{first['field']}: {first['reason']}" if first["field"] else first["reason"]
        return error_response(request, 422, "invalid_request", msg, details=details)

    async def _redis_down(request: Request, exc: Exception):
        log.warning("redis error request_id=%s %s %s: %s", request_id(request), request.method, request.url.path,
                    exc)
        return error_response(request, 503, "unavailable", "the backend store (Redis) is unavailable; retry later",
                              headers={"Retry-After": "5"})

    app.add_exception_handler(redis.ConnectionError, _redis_down)
    app.add_exception_handler(redis.TimeoutError, _redis_down)

    @app.exception_handler(BodyTooLarge)
    async def _too_large(request: Request, exc: BodyTooLarge):
        return error_response(request, 413, "payload_too_large", str(exc))


class RequestContextMiddleware:
    """Outermost app middleware: assigns a request id (X-Request-ID), caps the request body, and turns any
    exception that escaped the handlers into a logged 500 JSON reply with no traceback."""

    def __init__(self, app: ASGIApp, max_body: int):
        self.app = app
        self.max_body = max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = ""
        for k, v in scope.get("headers", ()):
            if k == b"x-request-id":
                cand = v.decode("latin-1")
                rid = cand if _RID_OK.match(cand) else ""
                break
        rid = rid or uuid.uuid4().hex[:16]
        scope.setdefault("state", {})["request_id"] = rid
        started = False
        limit = self.max_body

        declared = None
        for k, v in scope.get("headers", ()):
            if k == b"content-length":
                try:
                    declared = int(v)
                except ValueError:
                    declared = -1
        if declared is not None and (declared < 0 or declared > limit):
            status = 413 if declared > limit else 400
            msg = (f"request body is {declared} bytes; the limit is {limit}" if status == 413
                   else "bad Content-Length header")
            await self._send_json(send, status, error_body(status, _STATUS_CODES[status], msg, rid), rid)
            return

        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            msg = await receive()
            if msg["type"] == "http.request":
                received += len(msg.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(f"request body exceeds the limit of {limit} bytes")
            return msg

        async def send_with_id(msg: Message) -> None:
            nonlocal started
            if msg["type"] == "http.response.start":
                started = True
                msg.setdefault("headers", [])
                msg["headers"] = list(msg["headers"]) + [(b"x-request-id", rid.encode()),
                                                         (b"x-content-type-options", b"nosniff")]
            await send(msg)

        try:
            await self.app(scope, limited_receive, send_with_id)
        except BodyTooLarge as e:
            if not started:
                await self._send_json(send, 413, error_body(413, "payload_too_large", str(e), rid), rid)
        except Exception:  # noqa: BLE001 - the last line of defence: log it, never show it
            log.exception("unhandled error request_id=%s %s %s", rid, scope.get("method"), scope.get("path"))
            if not started:
                await self._send_json(send, 500, error_body(500, "internal_error",
                                                            f"internal error (request id {rid})", rid), rid)

    @staticmethod
    async def _send_json(send: Send, status: int, body: dict, rid: str) -> None:
        raw = json.dumps(body).encode()
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(raw)).encode()),
                                (b"x-request-id", rid.encode())]})
        await send({"type": "http.response.body", "body": raw})
