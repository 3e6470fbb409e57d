"""Errors as the hub answers them: `ApiError` raised by routes and dependencies, and the
handlers that turn it (and FastAPI's, Starlette's and SQLite's errors, and bugs) into the JSON
body {"error": {"code", "message", ...}} with its status and headers."""

from __future__ import annotations

import logging
import sqlite3
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from orbit_fast.hub.guards import error_body

log = logging.getLogger("orbit_fast.hub")


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, **details: Any) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.details = status, code, message, details


async def on_api_error(request: Request, exc: ApiError) -> JSONResponse:
    headers = {}
    if exc.status == 429 and "retry_after_s" in exc.details:
        headers["Retry-After"] = str(int(exc.details["retry_after_s"]) + 1)
    if exc.status == 401:
        headers["WWW-Authenticate"] = "Bearer"
    return JSONResponse(error_body(exc.code, exc.message, **exc.details), exc.status,
                        headers=headers)  # fmt: skip


async def on_invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
    details = [{"field": ".".join(str(x) for x in e.get("loc", ())), "problem": e.get("msg")}
               for e in exc.errors()]  # fmt: skip
    first = details[0] if details else {"field": "", "problem": "invalid"}
    return JSONResponse(error_body("invalid_request",
                                   f"{first['field']}: {first['problem']}", fields=details),
                        422)  # fmt: skip


async def on_http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
    # Starlette's 405 carries Allow in its headers (RFC 9110 requires it).
    return JSONResponse(error_body(code, str(exc.detail)), exc.status_code,
                        headers=exc.headers)  # fmt: skip


async def on_db(request: Request, exc: sqlite3.OperationalError) -> JSONResponse:
    # The hub's own disk is full or failing: the request was fine, the hub is not (the
    # health check says the same). Nothing was changed: every write is one transaction.
    log.error("jobs DB error on %s %s: %s", request.method, request.url.path, exc)
    return JSONResponse(error_body("hub_storage", "the hub could not write its jobs DB "
                                   f"({exc}); free space on its data disk (see "
                                   "/api/health) and try again"), 503,
                        headers={"Retry-After": "30"})  # fmt: skip


async def on_bug(request: Request, exc: Exception) -> JSONResponse:
    log.exception("internal error on %s %s", request.method, request.url.path)
    return JSONResponse(error_body("internal", "internal error; the hub log has details"),
                        500)  # fmt: skip


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(ApiError, on_api_error)  # type: ignore[arg-type]
    app.add_exception_handler(RequestValidationError, on_invalid)  # type: ignore[arg-type]
    app.add_exception_handler(StarletteHTTPException, on_http)  # type: ignore[arg-type]
    app.add_exception_handler(sqlite3.OperationalError, on_db)  # type: ignore[arg-type]
    app.add_exception_handler(Exception, on_bug)
