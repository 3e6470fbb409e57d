"""Users (admin only): list, create, change role or password, delete. `add_user` also serves
POST /api/auth/register once the first user exists."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse

from orbit_fast.hub import auth, models
from orbit_fast.hub.core import Hub
from orbit_fast.hub.routes.deps import RowId, admin, hub_of
from orbit_fast.hub.routes.errors import ApiError

log = logging.getLogger("orbit_fast.hub")
router = APIRouter()


def add_user(hub: Hub, body: models.UserCreate, who: auth.Principal) -> JSONResponse:
    store = hub.store
    problem = auth.password_problem(body.password, body.username)
    if problem:
        raise ApiError(400, "weak_password", problem)
    if store.user(body.username) is not None:
        raise ApiError(409, "user_exists", f"user {body.username!r} exists")
    user_id = store.add_user(body.username, auth.hash_password(body.password), body.role)
    log.warning("user_created:%s,%s by %s", body.username, body.role, who.username)
    return JSONResponse({"id": user_id, "username": body.username, "role": body.role}, 201)


@router.get("/api/users", tags=["users"])
def users(request: Request, who: auth.Principal = Depends(admin)) -> dict[str, Any]:
    return {"users": hub_of(request).store.users()}


@router.post("/api/users", tags=["users"], status_code=201)
def create_user(body: models.UserCreate, request: Request,
                who: auth.Principal = Depends(admin)) -> JSONResponse:  # fmt: skip
    return add_user(hub_of(request), body, who)


@router.patch("/api/users/{user_id}", tags=["users"])
def update_user(user_id: RowId, body: models.UserUpdate, request: Request,
                who: auth.Principal = Depends(admin)) -> dict[str, Any]:  # fmt: skip
    store = hub_of(request).store
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


@router.delete("/api/users/{user_id}", tags=["users"])
def delete_user(user_id: RowId, request: Request,
                who: auth.Principal = Depends(admin)) -> dict[str, Any]:  # fmt: skip
    if user_id == who.user_id:
        raise ApiError(409, "self_delete", "an admin cannot delete their own account")
    if not hub_of(request).store.delete_user(user_id):
        raise ApiError(404, "user_not_found", f"no user {user_id}")
    return {"deleted": user_id}
