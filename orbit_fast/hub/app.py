"""The hub's HTTP face (FastAPI): routes -> Hub calls, auth and roles on every route, errors as
JSON with a stable code, SSE progress, Prometheus metrics and the dashboard's static files.

Deny by default: every route names the least role it needs (`need("viewer")` ...); only
health, login, register and the dashboard's files are open.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import secrets
import sqlite3
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from importlib import resources
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import (
    FileResponse,
    JSONResponse,
    PlainTextResponse,
    Response,
    StreamingResponse,
)
from starlette.exceptions import HTTPException as StarletteHTTPException

from orbit_fast import __version__
from orbit_fast.errors import OrbitError
from orbit_fast.hub import auth, guards, models
from orbit_fast.hub.core import Hub
from orbit_fast.hub.guards import direct_loopback, error_body
from orbit_fast.hub.jobspec import check_job
from orbit_fast.hub.metrics import render_metrics

log = logging.getLogger("orbit_fast.hub")

SESSION_COOKIE = "orbit_session"
CSRF_COOKIE = "orbit_csrf"
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")
# Row ids in paths: SQLite integers are 64-bit; larger numbers are a 422, not an overflow.
RowId = Annotated[int, Path(ge=1, le=2**63 - 1)]


# What each status means, for the OpenAPI document.
STATUS_TEXT = {
    400: "The request is understood but cannot be done as given (see error.code).",
    401: "Not logged in, or the token or session is not valid.",
    403: "Logged in without the role this needs, a missing X-CSRF-Token, or a foreign Origin.",
    404: "No such object.",
    408: "The request body did not arrive in time.",
    409: "Conflicts with the object's current state.",
    413: "The request body is too large.",
    421: "The Host header names a host this hub does not answer to.",
    422: "The request does not match its schema (error.fields lists where).",
    429: "Too many failed logins: wait Retry-After seconds.",
    503: "The hub's own storage is failing (full disk): see /api/health.",
}
# Answers of each route beyond those document_errors() derives from its kind (421 for all;
# 401/403 by the role it needs; 408/413 with a body; 422 with input; 503 for writes).
ROUTE_ERRORS: dict[tuple[str, str], tuple[int, ...]] = {
    ("GET", "/api/health"): (503,),
    ("GET", "/api/list_jobs"): (401,),
    ("POST", "/api/jobs"): (400, 409),
    ("POST", "/api/create_job"): (400, 409),
    ("GET", "/api/jobs/{job_id}"): (404,),
    ("DELETE", "/api/jobs/{job_id}"): (404, 409),
    ("POST", "/api/jobs/{job_id}/run"): (404, 409),
    ("POST", "/api/jobs/{job_id}/cancel"): (404, 409),
    ("POST", "/api/jobs/{job_id}/pause"): (404, 409),
    ("POST", "/api/jobs/{job_id}/resume"): (404, 409),
    ("GET", "/api/jobs/{job_id}/runs"): (404,),
    ("GET", "/api/jobs/{job_id}/runs/{run_id}/errors"): (404,),
    ("GET", "/api/events"): (400,),
    ("GET", "/api/jobs/{job_id}/events"): (400, 404),
    ("POST", "/api/auth/register"): (400, 401, 403, 409),
    ("POST", "/api/auth/login"): (401, 429),
    ("POST", "/api/auth/tokens"): (400,),
    ("DELETE", "/api/auth/tokens/{token_id}"): (404,),
    ("POST", "/api/users"): (400, 409),
    ("PATCH", "/api/users/{user_id}"): (400, 404),
    ("DELETE", "/api/users/{user_id}"): (404, 409),
}


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, **details: Any) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.details = status, code, message, details


def create_app(hub: Hub) -> FastAPI:
    settings = hub.settings
    store = hub.store
    runner = hub.runner

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        hub.start()
        log.info("sys_startup: orbit-fast hub %s on %s:%s, jobs DB %s", __version__,
                 settings.host, settings.port, settings.db_path)  # fmt: skip
        try:
            yield
        finally:
            log.info("sys_shutdown: stopping; running jobs checkpoint and resume at next start")
            await asyncio.to_thread(hub.close)

    app = FastAPI(title="orbit-fast hub", version=__version__, lifespan=lifespan,
                  openapi_url="/api/openapi.json", docs_url="/api/docs",
                  redoc_url=None)  # fmt: skip
    # Added last, so run first: a foreign Host is refused before its body is even read.
    app.add_middleware(guards.BodyLimit, limit=settings.max_body_bytes,
                       timeout_s=settings.body_timeout_s)  # fmt: skip
    app.add_middleware(guards.HostGuard, names=settings.allowed_hosts,
                       public_url=settings.public_url)  # fmt: skip
    app.add_middleware(guards.SecurityHeaders)  # outermost: refusals carry the headers too

    # ---- errors ----------------------------------------------------------------------------

    @app.exception_handler(ApiError)
    async def on_api_error(request: Request, exc: ApiError) -> JSONResponse:
        headers = {}
        if exc.status == 429 and "retry_after_s" in exc.details:
            headers["Retry-After"] = str(int(exc.details["retry_after_s"]) + 1)
        if exc.status == 401:
            headers["WWW-Authenticate"] = "Bearer"
        return JSONResponse(error_body(exc.code, exc.message, **exc.details), exc.status,
                            headers=headers)  # fmt: skip

    @app.exception_handler(RequestValidationError)
    async def on_invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        details = [{"field": ".".join(str(x) for x in e.get("loc", ())), "problem": e.get("msg")}
                   for e in exc.errors()]  # fmt: skip
        first = details[0] if details else {"field": "", "problem": "invalid"}
        return JSONResponse(error_body("invalid_request",
                                       f"{first['field']}: {first['problem']}", fields=details),
                            422)  # fmt: skip

    @app.exception_handler(StarletteHTTPException)
    async def on_http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        # Starlette's 405 carries Allow in its headers (RFC 9110 requires it).
        return JSONResponse(error_body(code, str(exc.detail)), exc.status_code,
                            headers=exc.headers)  # fmt: skip

    @app.exception_handler(sqlite3.OperationalError)
    async def on_db(request: Request, exc: sqlite3.OperationalError) -> JSONResponse:
        # The hub's own disk is full or failing: the request was fine, the hub is not (the
        # health check says the same). Nothing was changed: every write is one transaction.
        log.error("jobs DB error on %s %s: %s", request.method, request.url.path, exc)
        return JSONResponse(error_body("hub_storage", "the hub could not write its jobs DB "
                                       f"({exc}); free space on its data disk (see "
                                       "/api/health) and try again"), 503,
                            headers={"Retry-After": "30"})  # fmt: skip

    @app.exception_handler(Exception)
    async def on_bug(request: Request, exc: Exception) -> JSONResponse:
        log.exception("internal error on %s %s", request.method, request.url.path)
        return JSONResponse(error_body("internal", "internal error; the hub log has details"),
                            500)  # fmt: skip

    # ---- who is asking -----------------------------------------------------------------------

    def principal(request: Request) -> auth.Principal | None:
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
        row = store.token(auth.token_hash(settings.auth_secret, token))
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

        dep.role = role  # type: ignore[attr-defined]  # read by document_errors()
        return dep

    viewer, operator, admin = need("viewer"), need("operator"), need("admin")

    def job_or_404(job_id: RowId) -> dict[str, Any]:
        job = store.job(job_id)
        if job is None:
            raise ApiError(404, "job_not_found", f"no job {job_id}")
        return job

    # ---- health and the guide's calls ---------------------------------------------------------

    @app.get("/api/health", tags=["hub"])
    async def health(request: Request) -> JSONResponse:
        """200 healthy, or 503 with the problems (paths only for a signed-in caller)."""
        status, body = hub.health()
        if status != 200:  # only then is there anything to hide; a healthy poll reads no DB
            try:
                detailed = principal(request) is not None
            except ApiError:  # a bad token still gets the anonymous answer, not a 401
                detailed = False
            status, body = hub.health(detailed=detailed)
        return JSONResponse(body, status)

    @app.get("/api/list_jobs", tags=["jobs"])
    async def list_jobs(request: Request) -> Response:
        """All jobs, as the guide's monitoring line reads them (`jq '.jobs | length'`). From
        the hub itself it needs no token (ORBIT_LOOPBACK_READS, on by default)."""
        if not (settings.loopback_reads and direct_loopback(request)):
            need("viewer")(request)
        return Response(store.jobs_json(), media_type="application/json")

    # ---- jobs ----------------------------------------------------------------------------

    @app.get("/api/jobs", tags=["jobs"])
    def jobs(state: str | None = Query(None, max_length=20),
             mode: str | None = Query(None, max_length=10),
             q: str | None = Query(None, max_length=200),
             name: str | None = Query(None, max_length=200),
             limit: int = Query(100, ge=1, le=1000), offset: int = Query(0, ge=0, le=10**9),
             who: auth.Principal = Depends(viewer)) -> dict[str, Any]:  # fmt: skip
        if name is not None:
            job = store.job_by_name(name)
            found = [job] if job else []
            return {"jobs": found, "total": len(found), "limit": limit, "offset": 0}
        rows, total = store.jobs(state, mode, q, limit, offset)
        return {"jobs": rows, "total": total, "limit": limit, "offset": offset}

    def create(body: models.JobCreate, who: auth.Principal) -> JSONResponse:
        from orbit_fast.hub.schedule import check, next_after

        fields = {"name": body.name, "mode": body.mode, "source": body.source,
                  "destination": body.destination,
                  "config": body.config.model_dump(exclude_none=True)}  # fmt: skip
        try:
            warnings = check_job(fields, settings.db_path, settings.universe_path,
                                 settings.allowed_roots)  # fmt: skip
            schedule = check(body.schedule) if body.schedule else None
        except OrbitError as exc:
            raise ApiError(400, "invalid_job", str(exc)) from None
        if store.job_by_name(body.name) is not None:
            raise ApiError(409, "job_exists", f"a job named {body.name!r} exists; pick another "
                           "name or delete it first")  # fmt: skip
        try:
            job = store.create_job({**fields, "schedule": schedule, "state": "created",
                                    "warnings": warnings, "created_by": who.username,
                                    "next_run_at": next_after(schedule, time.time())
                                    if schedule else None})  # fmt: skip
        except Exception as exc:
            if "UNIQUE" in str(exc):
                raise ApiError(409, "job_exists", f"a job named {body.name!r} exists") from None
            raise
        runner.event(job["id"], "created")
        return JSONResponse(job, 201)

    @app.post("/api/jobs", tags=["jobs"], status_code=201)
    def create_job(body: models.JobCreate,
                   who: auth.Principal = Depends(operator)) -> JSONResponse:  # fmt: skip
        """Create a job from the guide's body (name, source, destination, config) plus mode
        and schedule. It runs when asked (POST .../run) or when its schedule fires."""
        return create(body, who)

    @app.post("/api/create_job", tags=["jobs"], status_code=201)
    def create_job_alias(body: models.JobCreate,
                         who: auth.Principal = Depends(operator)) -> JSONResponse:  # fmt: skip
        """The same as POST /api/jobs, named like /api/list_jobs."""
        return create(body, who)

    @app.get("/api/jobs/{job_id}", tags=["jobs"])
    def get_job(job_id: RowId, who: auth.Principal = Depends(viewer)) -> dict[str, Any]:
        return job_or_404(job_id)

    @app.delete("/api/jobs/{job_id}", tags=["jobs"])
    def delete_job(job_id: RowId, who: auth.Principal = Depends(operator)) -> dict[str, Any]:
        job = job_or_404(job_id)
        if job["state"] in ("running", "pending", "retrying") or job_id in runner.active:
            raise ApiError(409, "job_active", f"job {job_id} is {job['state']}; cancel it first")
        store.delete_job(job_id)
        runner.event(job_id, "deleted")
        return {"deleted": job_id}

    def control(action: str, fn: Callable[[int], bool], doc: str) -> None:
        """POST /api/jobs/{id}/<action>: 202 with the job, or 409 when its state forbids it."""

        def endpoint(job_id: RowId, who: auth.Principal = Depends(operator)) -> JSONResponse:
            job = job_or_404(job_id)
            if not fn(job_id):
                raise ApiError(409, "bad_state", f"cannot {action} job {job_id} while it is "
                               f"{job['state']}")  # fmt: skip
            return JSONResponse(job_or_404(job_id), 202)

        app.post(f"/api/jobs/{{job_id}}/{action}", tags=["jobs"], status_code=202,
                 name=f"{action}_job", description=doc)(endpoint)  # fmt: skip

    control("run", runner.run, "Queue the job (from created, completed, partial, failed or "
            "cancelled); it starts when a slot and its destination are free.")
    control("cancel", runner.cancel, "Stop it: a running job checkpoints and ends cancelled.")
    control("pause", runner.pause, "Stop it for now; resume continues from the checkpoint.")
    control("resume", runner.resume, "Queue a paused job again.")

    @app.get("/api/jobs/{job_id}/runs", tags=["jobs"])
    def job_runs(job_id: RowId, limit: int = Query(50, ge=1, le=1000),
                 offset: int = Query(0, ge=0, le=10**9),
                 who: auth.Principal = Depends(viewer)) -> dict[str, Any]:  # fmt: skip
        job_or_404(job_id)
        return {"runs": store.runs(job_id, limit, offset)}

    @app.get("/api/jobs/{job_id}/runs/{run_id}/errors", tags=["jobs"])
    def run_errors(job_id: RowId, run_id: RowId,
                   who: auth.Principal = Depends(viewer)) -> dict[str, Any]:  # fmt: skip
        run = store.run(run_id)
        if run is None or run["job_id"] != job_id:
            raise ApiError(404, "run_not_found", f"job {job_id} has no run {run_id}")
        skipped = hub.engine.file_errors(run["engine_run_id"]) if run["engine_run_id"] else []
        errors = [{"path": e.path, "code": e.msgid, "message": e.message} for e in skipped]
        return {"run": run, "errors": errors}

    # ---- live progress (SSE) ------------------------------------------------------------------

    def last_event_id(request: Request) -> int | None:
        """Last-Event-ID (or ?last_event_id=): an event id, checked before the stream starts."""
        value = request.headers.get("last-event-id") or request.query_params.get("last_event_id")
        if not value:
            return None
        if not (value.isascii() and value.isdecimal() and len(value) <= 19
                and int(value) <= 2**63 - 1):  # fmt: skip
            raise ApiError(400, "invalid_last_event_id", "Last-Event-ID must be the id of an "
                           "event this hub sent (a whole number below 2^63)")  # fmt: skip
        return int(value)

    async def stream(request: Request, job_id: RowId | None,
                     last: int | None) -> AsyncIterator[str]:  # fmt: skip
        loop = asyncio.get_running_loop()
        flag = asyncio.Event()

        def wake() -> None:
            loop.call_soon_threadsafe(flag.set)

        store.listeners.append(wake)
        try:
            yield "retry: 2000\n\n"
            if last is None:  # a new client: the state now, then everything after it
                last = store.last_event_id()
                snap = json.dumps(job_or_404(job_id)) if job_id else store.jobs_json().decode()
                yield f"event: snapshot\ndata: {snap}\n\n"
            while not hub.closing.is_set():
                flag.clear()
                batch = store.recent_after(last, job_id)  # memory: no thread, no DB
                if batch is None:
                    batch = await asyncio.to_thread(store.events_after, last, job_id)
                for event_id, _, kind, data in batch:
                    yield f"id: {event_id}\nevent: {kind}\ndata: {data}\n\n"
                    last = event_id
                if len(batch) >= 500:
                    continue
                try:
                    await asyncio.wait_for(flag.wait(), 15.0)
                except TimeoutError:
                    yield ": keepalive\n\n"
        finally:
            store.listeners.remove(wake)

    sse_headers = {"Cache-Control": "no-store", "X-Accel-Buffering": "no"}

    @app.get("/api/events", tags=["events"])
    def events(request: Request, who: auth.Principal = Depends(viewer)) -> StreamingResponse:
        """Server-Sent Events for all jobs: `job` (state changes), `progress`, `warning`.
        Reconnect with Last-Event-ID to receive what was missed."""
        last = last_event_id(request)
        return StreamingResponse(stream(request, None, last), media_type="text/event-stream",
                                 headers=sse_headers)  # fmt: skip

    @app.get("/api/jobs/{job_id}/events", tags=["events"])
    def job_events(job_id: RowId, request: Request,
                   who: auth.Principal = Depends(viewer)) -> StreamingResponse:  # fmt: skip
        job_or_404(job_id)
        last = last_event_id(request)
        return StreamingResponse(stream(request, job_id, last), media_type="text/event-stream",
                                 headers=sse_headers)  # fmt: skip

    # ---- auth --------------------------------------------------------------------------------

    @app.post("/api/auth/register", tags=["auth"], status_code=201)
    def register(body: models.Register, request: Request) -> JSONResponse:
        """Create a user. While no user exists: open to the hub itself (a direct loopback
        client) or to whoever has the bootstrap token; that first user is an admin. Afterwards
        only admins register users."""
        problem = auth.password_problem(body.password, body.username)
        if problem:
            raise ApiError(400, "weak_password", problem)
        if store.user_count() == 0:
            given = body.bootstrap_token or request.headers.get("x-orbit-bootstrap-token", "")
            token_ok = bool(hub.bootstrap_token) and hmac.compare_digest(
                given.encode(), hub.bootstrap_token.encode())
            if direct_loopback(request) or token_ok:
                user_id = store.add_user(body.username, auth.hash_password(body.password),
                                         "admin", only_if_none=True)  # fmt: skip
                if user_id:
                    hub.bootstrap_used()
                    log.warning("user_created:%s,admin (first user)", body.username)
                    return JSONResponse({"id": user_id, "username": body.username,
                                         "role": "admin"}, 201)  # fmt: skip
            elif not given:
                raise ApiError(403, "bootstrap_required", "the first user must be registered "
                               "from the hub itself, or with the bootstrap token the hub "
                               "printed at start (also in its data directory)")  # fmt: skip
            else:
                raise ApiError(403, "bootstrap_invalid", "wrong bootstrap token")
        who = need("admin")(request)
        return add_user(models.UserCreate(username=body.username, password=body.password,
                                          role=body.role), who)  # fmt: skip

    def add_user(body: models.UserCreate, who: auth.Principal) -> JSONResponse:
        problem = auth.password_problem(body.password, body.username)
        if problem:
            raise ApiError(400, "weak_password", problem)
        if store.user(body.username) is not None:
            raise ApiError(409, "user_exists", f"user {body.username!r} exists")
        user_id = store.add_user(body.username, auth.hash_password(body.password), body.role)
        log.warning("user_created:%s,%s by %s", body.username, body.role, who.username)
        return JSONResponse({"id": user_id, "username": body.username, "role": body.role}, 201)

    @app.post("/api/auth/login", tags=["auth"])
    def login(body: models.Login, request: Request) -> JSONResponse:
        """Check a password; returns a session token (also set as an HttpOnly cookie for the
        dashboard, with a CSRF value to echo in X-CSRF-Token)."""
        client = guards.client_ip(request, settings.trusted_proxies)
        keys = auth.login_keys(body.username, client)
        # The try is counted before argon2 runs: parallel tries cannot all pass the check
        # while the first failures are still being verified.
        wait, stamp = hub.throttle.reserve(*keys)
        if wait > 0:
            log.warning("authn_login_fail_max:%s from %s", body.username, client)
            raise ApiError(429, "too_many_attempts", f"too many failed logins; wait {wait:.0f} s",
                           retry_after_s=round(wait))  # fmt: skip
        user = store.user(body.username)
        if user is None:
            auth.burn_time(body.password)
            ok, rehash = False, None
        else:
            ok, rehash = auth.verify_password(user[2], body.password)
        if not ok or user is None:
            log.warning("authn_login_fail:%s from %s", body.username, client)
            raise ApiError(401, "bad_credentials", "wrong user name or password")
        hub.throttle.succeeded(*keys, stamp=stamp)
        if rehash:
            store.rehash(user[0], user[2], rehash)
        token, csrf = auth.new_token(), secrets.token_urlsafe(24)
        expires = time.time() + settings.session_hours * 3600
        # Stored only if the user is still as checked: a deletion, reset or role change that
        # ran during the argon2 check refuses this login instead of leaving a live token.
        if not store.add_token(auth.token_hash(settings.auth_secret, token), user[0], user[4],
                               "session", "login", csrf, expires):  # fmt: skip
            log.warning("authn_login_fail:%s from %s (the account changed)", user[1], client)
            raise ApiError(401, "account_changed", "the account was changed or deleted while "
                           "logging in; log in again")  # fmt: skip
        log.info("authn_login_success:%s from %s", user[1], client)
        resp = JSONResponse({"token": token, "csrf": csrf, "expires_at": expires,
                             "user": {"id": user[0], "username": user[1],
                                      "role": user[3]}})  # fmt: skip
        secure = "https" in (request.url.scheme, request.headers.get("x-forwarded-proto"))
        resp.set_cookie(SESSION_COOKIE, token, httponly=True, samesite="strict", secure=secure,
                        max_age=int(settings.session_hours * 3600), path="/")  # fmt: skip
        resp.set_cookie(CSRF_COOKIE, csrf, httponly=False, samesite="strict", secure=secure,
                        max_age=int(settings.session_hours * 3600), path="/")  # fmt: skip
        return resp

    @app.post("/api/auth/logout", tags=["auth"])
    def logout(who: auth.Principal = Depends(viewer)) -> JSONResponse:
        if who.token_id:
            store.revoke_token(who.token_id)
            log.info("authn_token_revoked:%s", who.username)
        resp = JSONResponse({"logged_out": True})
        resp.delete_cookie(SESSION_COOKIE, path="/")
        resp.delete_cookie(CSRF_COOKIE, path="/")
        return resp

    @app.get("/api/auth/me", tags=["auth"])
    def me(who: auth.Principal = Depends(viewer)) -> dict[str, Any]:
        return {"id": who.user_id, "username": who.username, "role": who.role, "via": who.via,
                "auth_enabled": settings.auth_enabled}  # fmt: skip

    @app.get("/api/auth/tokens", tags=["auth"])
    def my_tokens(who: auth.Principal = Depends(viewer)) -> dict[str, Any]:
        return {"tokens": store.tokens(who.user_id)}

    @app.post("/api/auth/tokens", tags=["auth"], status_code=201)
    def new_api_token(body: models.TokenCreate,
                      who: auth.Principal = Depends(viewer)) -> JSONResponse:  # fmt: skip
        """An API token for scripts (Authorization: Bearer); shown once."""
        if not who.user_id:
            raise ApiError(400, "no_user", "auth is off: there is no user to own a token")
        token = auth.new_token()
        expires = time.time() + body.days * 86400
        token_id = store.add_token(auth.token_hash(settings.auth_secret, token), who.user_id,
                                   who.generation, "api", body.name, "", expires)  # fmt: skip
        if not token_id:  # the user was changed or deleted since this request's token was read
            raise ApiError(401, "token_revoked", "the token or session was revoked; log in")
        return JSONResponse({"id": token_id, "token": token, "name": body.name,
                             "expires_at": expires}, 201)  # fmt: skip

    @app.delete("/api/auth/tokens/{token_id}", tags=["auth"])
    def revoke(token_id: RowId, who: auth.Principal = Depends(viewer)) -> dict[str, Any]:
        ok = store.revoke_token(token_id, None if who.may("admin") else who.user_id)
        if not ok:
            raise ApiError(404, "token_not_found", f"no token {token_id} of yours")
        log.info("authn_token_revoked:%s,%s", who.username, token_id)
        return {"revoked": token_id}

    # ---- users (admin) -------------------------------------------------------------------------

    @app.get("/api/users", tags=["users"])
    def users(who: auth.Principal = Depends(admin)) -> dict[str, Any]:
        return {"users": store.users()}

    @app.post("/api/users", tags=["users"], status_code=201)
    def create_user(body: models.UserCreate,
                    who: auth.Principal = Depends(admin)) -> JSONResponse:  # fmt: skip
        return add_user(body, who)

    @app.patch("/api/users/{user_id}", tags=["users"])
    def update_user(user_id: RowId, body: models.UserUpdate,
                    who: auth.Principal = Depends(admin)) -> dict[str, Any]:  # fmt: skip
        fields: dict[str, Any] = {}
        if body.role is not None:
            fields["role"] = body.role
        if body.password is not None:
            name = store.username(user_id) or ""
            if problem := auth.password_problem(body.password, name):
                raise ApiError(400, "weak_password", problem)
            fields["pw_hash"] = auth.hash_password(body.password)
        if not fields:
            raise ApiError(400, "nothing_to_change", "give role and/or password")
        if not store.set_user(user_id, **fields):
            raise ApiError(404, "user_not_found", f"no user {user_id}")
        log.warning("privilege_permissions_changed:%s by %s", user_id, who.username)
        return {"updated": user_id}

    @app.delete("/api/users/{user_id}", tags=["users"])
    def delete_user(user_id: RowId, who: auth.Principal = Depends(admin)) -> dict[str, Any]:
        if user_id == who.user_id:
            raise ApiError(409, "self_delete", "an admin cannot delete their own account")
        if not store.delete_user(user_id):
            raise ApiError(404, "user_not_found", f"no user {user_id}")
        return {"deleted": user_id}

    # ---- state backups and metrics -------------------------------------------------------------

    @app.post("/api/admin/state-backup", tags=["hub"])
    def state_backup(who: auth.Principal = Depends(admin)) -> dict[str, Any]:
        """Consistent copies of jobs.db and the universe into ORBIT_STATE_BACKUP_DIR (default
        <data dir>/state-backups), e.g. for a job that ships them off the hub."""
        try:
            return hub.engine.backup_state()
        except OrbitError as exc:
            raise ApiError(503, exc.msgid, str(exc)) from None  # the hub's disk, not the call

    @app.get("/metrics", tags=["hub"], response_class=PlainTextResponse)
    def metrics(who: auth.Principal = Depends(viewer)) -> PlainTextResponse:
        """Prometheus text format."""
        return PlainTextResponse(render_metrics(hub),
                                 media_type="text/plain; version=0.0.4; charset=utf-8")  # fmt: skip

    # ---- the dashboard ---------------------------------------------------------------------------

    static = resources.files("orbit_fast.hub") / "dashboard"

    @app.get("/", include_in_schema=False)
    def index() -> FileResponse:
        return FileResponse(str(static / "index.html"), media_type="text/html")

    @app.get("/assets/{name}", include_in_schema=False)
    def asset(name: str) -> FileResponse:
        types = {"app.js": "text/javascript", "style.css": "text/css"}
        if name not in types:
            raise ApiError(404, "not_found", f"no asset {name}")
        return FileResponse(str(static / name), media_type=types[name])

    document_errors(app)
    return app


def document_errors(app: FastAPI) -> None:
    """Put the error answers each route really gives into the OpenAPI document, with the
    body they have (models.ErrorBody, also for 422: FastAPI's default describes a body this
    API never sends)."""
    from fastapi.routing import APIRoute

    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = build()
        app.openapi_schema = None  # set again below, once complete
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        for model in (models.ErrorBody, models.Health):
            js = model.model_json_schema(ref_template="#/components/schemas/{model}")
            components.update(js.pop("$defs", {}))
            components[model.__name__] = js
        for route in app.routes:
            if not isinstance(route, APIRoute) or not route.include_in_schema:
                continue
            for method in route.methods:
                answers = schema["paths"][route.path][method.lower()]["responses"]
                name = "Health" if route.path == "/api/health" else "ErrorBody"
                body = {"application/json": {"schema": {"$ref": f"#/components/schemas/{name}"}}}
                for code in sorted(route_errors(route, method)):
                    answers[str(code)] = {"description": STATUS_TEXT[code], "content": body}
                if route.path == "/api/health":
                    answers["200"]["content"] = body
                if route.path.endswith("/events"):
                    answers["200"]["content"] = {"text/event-stream": {"schema": {}}}
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def route_errors(route: Any, method: str) -> set[int]:
    """The error statuses `method` on `route` can answer."""
    codes = {421, *ROUTE_ERRORS.get((method, route.path), ())}
    roles = {getattr(d.call, "role", None) for d in route.dependant.dependencies} - {None}
    if roles:
        codes.add(401)
        if roles - {"viewer"} or method not in SAFE_METHODS:
            codes.add(403)  # a lesser role; or, for writes, CSRF
    if method not in SAFE_METHODS:
        codes |= {403, 503}  # a foreign Origin; the hub's own disk full
    if route.body_field is not None:
        codes |= {408, 413}
    if route.body_field is not None or route.dependant.path_params or \
            route.dependant.query_params:  # fmt: skip
        codes.add(422)
    return codes
