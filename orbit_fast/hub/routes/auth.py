"""Signing in: register (the first admin, then admins only), login and logout, the caller
itself, and API tokens for scripts."""

from __future__ import annotations

import hmac
import logging
import secrets
import time
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse

from orbit_fast.hub import auth, guards, models
from orbit_fast.hub.guards import direct_loopback
from orbit_fast.hub.routes.deps import (
    CSRF_COOKIE,
    SESSION_COOKIE,
    RowId,
    hub_of,
    need,
    viewer,
)
from orbit_fast.hub.routes.errors import ApiError
from orbit_fast.hub.routes.users import add_user

log = logging.getLogger("orbit_fast.hub")
router = APIRouter()


@router.post("/api/auth/register", tags=["auth"], status_code=201)
def register(body: models.Register, request: Request) -> JSONResponse:
    """Create a user. While no user exists: open to the hub itself (a direct loopback
    client) or to whoever has the bootstrap token; that first user is an admin. Afterwards
    only admins register users."""
    hub = hub_of(request)
    store = hub.store
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
    return add_user(hub, models.UserCreate(username=body.username, password=body.password,
                                           role=body.role), who)  # fmt: skip


@router.post("/api/auth/login", tags=["auth"])
def login(body: models.Login, request: Request) -> JSONResponse:
    """Check a password; returns a session token (also set as an HttpOnly cookie for the
    dashboard, with a CSRF value to echo in X-CSRF-Token)."""
    hub = hub_of(request)
    settings, store = hub.settings, hub.store
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


@router.post("/api/auth/logout", tags=["auth"])
def logout(request: Request, who: auth.Principal = Depends(viewer)) -> JSONResponse:
    if who.token_id:
        hub_of(request).store.revoke_token(who.token_id)
        log.info("authn_token_revoked:%s", who.username)
    resp = JSONResponse({"logged_out": True})
    resp.delete_cookie(SESSION_COOKIE, path="/")
    resp.delete_cookie(CSRF_COOKIE, path="/")
    return resp


@router.get("/api/auth/me", tags=["auth"])
def me(request: Request, who: auth.Principal = Depends(viewer)) -> dict[str, Any]:
    return {"id": who.user_id, "username": who.username, "role": who.role, "via": who.via,
            "auth_enabled": hub_of(request).settings.auth_enabled}  # fmt: skip


@router.get("/api/auth/tokens", tags=["auth"])
def my_tokens(request: Request, who: auth.Principal = Depends(viewer)) -> dict[str, Any]:
    return {"tokens": hub_of(request).store.tokens(who.user_id)}


@router.post("/api/auth/tokens", tags=["auth"], status_code=201)
def new_api_token(body: models.TokenCreate, request: Request,
                  who: auth.Principal = Depends(viewer)) -> JSONResponse:  # fmt: skip
    """An API token for scripts (Authorization: Bearer); shown once."""
    if not who.user_id:
        raise ApiError(400, "no_user", "auth is off: there is no user to own a token")
    hub = hub_of(request)
    token = auth.new_token()
    expires = time.time() + body.days * 86400
    token_id = hub.store.add_token(auth.token_hash(hub.settings.auth_secret, token),
                                   who.user_id, who.generation, "api", body.name, "",
                                   expires)  # fmt: skip
    if not token_id:  # the user was changed or deleted since this request's token was read
        raise ApiError(401, "token_revoked", "the token or session was revoked; log in")
    return JSONResponse({"id": token_id, "token": token, "name": body.name,
                         "expires_at": expires}, 201)  # fmt: skip


@router.delete("/api/auth/tokens/{token_id}", tags=["auth"])
def revoke(token_id: RowId, request: Request,
           who: auth.Principal = Depends(viewer)) -> dict[str, Any]:  # fmt: skip
    ok = hub_of(request).store.revoke_token(token_id, None if who.may("admin") else who.user_id)
    if not ok:
        raise ApiError(404, "token_not_found", f"no token {token_id} of yours")
    log.info("authn_token_revoked:%s,%s", who.username, token_id)
    return {"revoked": token_id}
