"""The error answers in the OpenAPI document: each route's real error statuses (derived from
its kind: the role it needs, a body, input, a write; plus ROUTE_ERRORS), each with the body
the hub sends (models.ErrorBody, also for 422: FastAPI's default describes a body this API
never sends)."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.routing import APIRoute, iter_route_contexts

from orbit_fast.hub import models
from orbit_fast.hub.routes.deps import SAFE_METHODS

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
    ("POST", "/api/jobs/{job_id}/run"): (400, 404, 409),
    ("PATCH", "/api/jobs/{job_id}"): (400, 404, 409),
    ("POST", "/api/jobs/{job_id}/cancel"): (404, 409),
    ("POST", "/api/jobs/{job_id}/pause"): (404, 409),
    ("POST", "/api/jobs/{job_id}/resume"): (404, 409),
    ("GET", "/api/jobs/{job_id}/runs"): (404,),
    ("GET", "/api/jobs/{job_id}/snapshots"): (400, 404, 409),
    ("GET", "/api/jobs/{job_id}/snapshots/{snapshot}/tree"): (400, 404, 409),
    ("POST", "/api/jobs/{job_id}/restore"): (400, 404),
    ("GET", "/api/restores/{restore_id}"): (404,),
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


def document_errors(app: FastAPI) -> None:
    """Put the error answers each route really gives into the OpenAPI document, with the
    body they have."""
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
        for context in iter_route_contexts(app.routes):  # through the included routers
            route = context.original_route  # as declared: they are included with no prefix
            if not isinstance(route, APIRoute) or not route.include_in_schema:
                continue
            for method in route.methods or ():
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
