"""What every route shares: the Hub it serves (app.state.hub, set by create_app), who is
asking (a bearer token or a session cookie with its CSRF header) and the role dependencies
(`viewer`, `operator`, `admin`) that document_errors reads, and the 404 for a missing job.

Deny by default: every route names the least role it needs; only health, login, register and
the dashboard's files are open.
"""

from __future__ import annotations

import hmac
import logging
import time
from collections.abc import Callable
from typing import Annotated, Any

from fastapi import Path, Request

from orbit_fast.hub import auth
from orbit_fast.hub.core import Hub
from orbit_fast.hub.routes.errors import ApiError

log = logging.getLogger("orbit_fast.hub")

SESSION_COOKIE = "orbit_session"
CSRF_COOKIE = "orbit_csrf"
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")
# Row ids in paths: SQLite integers are 64-bit; larger numbers are a 422, not an overflow.
RowId = Annotated[int, Path(ge=1, le=2**63 - 1)]


def hub_of(request: Request) -> Hub:
    """The Hub behind the app that got `request` (an attribute read: no dependency to solve)."""
    hub: Hub = request.app.state.hub
    return hub


def principal(request: Request) -> auth.Principal | None:
    """Who sent `request`: None without a token or session; ApiError 401/403 for a bad one."""
    hub = hub_of(request)
    settings = hub.settings
    if not settings.auth_enabled:
        return auth.Principal(0, "anonymous", "admin", "anonymous")
    header = request.headers.get("authorization", "")
    token, via = "", "token"
    if header[:7].lower() == "bearer ":
        token = header[7:].strip()
    elif SESSION_COOKIE in request.cookies:
        token, via = request.cookies[SESSION_COOKIE], "session"
    if not token:
        return None
    row = hub.store.token(auth.token_hash(settings.auth_secret, token))
    if row is None:
        raise ApiError(401, "invalid_token", "the token or session is not valid; log in")
    token_id, kind, csrf, expires_at, revoked, user_id, username, role, generation = row
    if revoked:
        raise ApiError(401, "token_revoked", "the token or session was revoked; log in")
    if expires_at < time.time():
        raise ApiError(401, "token_expired", "the token or session expired; log in again")
    if via == "session" and request.method not in SAFE_METHODS:
        sent = request.headers.get("x-csrf-token", "")
        if not hmac.compare_digest(sent.encode(), csrf.encode()):
            raise ApiError(403, "csrf", "missing or wrong X-CSRF-Token header (the dashboard"
                           " sends the orbit_csrf cookie's value)")  # fmt: skip
    return auth.Principal(user_id, username, role, via, token_id, csrf, generation)


def need(role: str) -> Callable[[Request], auth.Principal]:
    """A dependency: the caller, who must have `role` (401 without a valid token)."""

    def dep(request: Request) -> auth.Principal:
        who = principal(request)
        if who is None:
            raise ApiError(401, "unauthorized", "log in (POST /api/auth/login) or send "
                           "Authorization: Bearer <token>")  # fmt: skip
        if not who.may(role):
            log.warning("authz_fail:%s,%s %s", who.username, request.method, request.url.path)
            raise ApiError(403, "forbidden", f"this needs the {role} role; you are "
                           f"{who.role}")  # fmt: skip
        return who

    dep.role = role  # type: ignore[attr-defined]  # read by openapi.route_errors()
    return dep


viewer, operator, admin = need("viewer"), need("operator"), need("admin")


def job_or_404(hub: Hub, job_id: int) -> dict[str, Any]:
    job = hub.store.job(job_id)
    if job is None:
        raise ApiError(404, "job_not_found", f"no job {job_id}")
    return job
