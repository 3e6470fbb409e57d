"""Jobs: list, create, read, delete, and the controls (run, cancel, pause, resume)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse

from orbit_fast.errors import OrbitError
from orbit_fast.hub import auth, models
from orbit_fast.hub.core import Hub
from orbit_fast.hub.jobspec import check_job
from orbit_fast.hub.routes.deps import RowId, hub_of, job_or_404, operator, viewer
from orbit_fast.hub.routes.errors import ApiError
from orbit_fast.hub.runner import JobRunner

router = APIRouter()

# Engine option fields as a job body spells them (UsageError.field -> error.fields[].field).
TOP_FIELDS = ("source", "destination")
JOB_FIELDS = {"codec": "config.compression"}


@router.get("/api/jobs", tags=["jobs"])
def jobs(request: Request, state: str | None = Query(None, max_length=20),
         mode: str | None = Query(None, max_length=10),
         q: str | None = Query(None, max_length=200),
         name: str | None = Query(None, max_length=200),
         limit: int = Query(100, ge=1, le=1000), offset: int = Query(0, ge=0, le=10**9),
         who: auth.Principal = Depends(viewer)) -> dict[str, Any]:  # fmt: skip
    store = hub_of(request).store
    if name is not None:
        job = store.job_by_name(name)
        found = [job] if job else []
        return {"jobs": found, "total": len(found), "limit": limit, "offset": 0}
    rows, total = store.jobs(state, mode, q, limit, offset)
    return {"jobs": rows, "total": total, "limit": limit, "offset": offset}


def _invalid(exc: OrbitError) -> ApiError:
    """400 invalid_job; the engine names the option (UsageError.field), which in a job body
    is config.<field> (or a top field)."""
    field = getattr(exc, "field", "")
    where = field if field in TOP_FIELDS else JOB_FIELDS.get(field, f"config.{field}")
    details = {"fields": [{"field": where, "problem": str(exc)}]} if field else {}
    return ApiError(400, "invalid_job", str(exc), **details)


def _trusting_needs_admin(config: dict[str, Any], who: auth.Principal) -> None:
    """A job that applies owners and setuid bits from a remote end's metadata makes whoever
    can write that end as strong as the hub's user (root, in the guide): only an admin may
    make or change one, as only an admin may make users."""
    if config.get("trust_remote_metadata") and auth.RANK[who.role] < auth.RANK["admin"]:
        raise ApiError(403, "forbidden", "config.trust_remote_metadata applies owners and "
                       "setuid bits from the remote end's metadata as the hub's user: only "
                       "an admin may create or change a job that has it")  # fmt: skip


def create(hub: Hub, body: models.JobCreate, who: auth.Principal) -> JSONResponse:
    from orbit_fast.hub.schedule import check, next_after

    settings, store = hub.settings, hub.store
    config = body.config.model_dump(exclude_none=True)
    _trusting_needs_admin(config, who)
    fields = {"name": body.name, "mode": body.mode, "source": body.source,
              "destination": body.destination, "config": config}  # fmt: skip
    try:
        warnings = check_job(fields, settings.db_path, settings.universe_path,
                             settings.allowed_roots, settings.protected_paths)  # fmt: skip
        schedule = check(body.schedule) if body.schedule else None
    except OrbitError as exc:
        raise _invalid(exc) from None
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
    hub.runner.event(job["id"], "created")
    return JSONResponse(job, 201)


@router.post("/api/jobs", tags=["jobs"], status_code=201)
def create_job(body: models.JobCreate, request: Request,
               who: auth.Principal = Depends(operator)) -> JSONResponse:  # fmt: skip
    """Create a job from the guide's body (name, source, destination, config) plus mode
    and schedule. It runs when asked (POST .../run) or when its schedule fires."""
    return create(hub_of(request), body, who)


@router.post("/api/create_job", tags=["jobs"], status_code=201)
def create_job_alias(body: models.JobCreate, request: Request,
                     who: auth.Principal = Depends(operator)) -> JSONResponse:  # fmt: skip
    """The same as POST /api/jobs, named like /api/list_jobs."""
    return create(hub_of(request), body, who)


@router.patch("/api/jobs/{job_id}", tags=["jobs"])
def update_job(job_id: RowId, body: models.JobUpdate, request: Request,
               who: auth.Principal = Depends(operator)) -> dict[str, Any]:  # fmt: skip
    """Change a job that is not running (created, completed, partial, failed or cancelled):
    the fields given replace its own, checked as when it was made."""
    from orbit_fast.hub.runner import RUNNABLE_FROM
    from orbit_fast.hub.schedule import check, next_after

    hub = hub_of(request)
    settings, store = hub.settings, hub.store
    job = job_or_404(hub, job_id)
    given = body.model_dump(exclude_unset=True)
    if "config" in given:
        given["config"] = body.config.model_dump(exclude_none=True) if body.config else {}
    fields = {k: given.get(k, job[k]) for k in ("name", "mode", "source", "destination",
                                                 "config")}  # fmt: skip
    # The job as it would be, and as it is: an operator may neither turn it on nor point a
    # job that has it at another source.
    _trusting_needs_admin(fields["config"], who)
    _trusting_needs_admin(job["config"], who)
    try:
        warnings = check_job(fields, settings.db_path, settings.universe_path,
                             settings.allowed_roots, settings.protected_paths)  # fmt: skip
        schedule = job["schedule"]
        if "schedule" in given:
            schedule = check(given["schedule"]) if given["schedule"] else None
    except OrbitError as exc:
        raise _invalid(exc) from None
    other = store.job_by_name(fields["name"])
    if other is not None and other["id"] != job_id:
        raise ApiError(409, "job_exists", f"a job named {fields['name']!r} exists")
    changed = store.transition(
        job_id, RUNNABLE_FROM, **{**fields, "config": json.dumps(fields["config"])},
        warnings=json.dumps(warnings), schedule=schedule,
        next_run_at=next_after(schedule, time.time()) if schedule else None)  # fmt: skip
    if not changed:
        now = job_or_404(hub, job_id)["state"]
        raise ApiError(409, "job_active", f"job {job_id} is {now}; only a job that is not "
                       "running, queued or paused can be changed")  # fmt: skip
    hub.runner.event(job_id, "updated")
    return job_or_404(hub, job_id)


@router.get("/api/jobs/{job_id}", tags=["jobs"])
def get_job(job_id: RowId, request: Request,
            who: auth.Principal = Depends(viewer)) -> dict[str, Any]:  # fmt: skip
    return job_or_404(hub_of(request), job_id)


@router.delete("/api/jobs/{job_id}", tags=["jobs"])
def delete_job(job_id: RowId, request: Request,
               who: auth.Principal = Depends(operator)) -> dict[str, Any]:  # fmt: skip
    hub = hub_of(request)
    job = job_or_404(hub, job_id)
    if job["state"] in ("running", "pending", "retrying") or job_id in hub.runner.active:
        raise ApiError(409, "job_active", f"job {job_id} is {job['state']}; cancel it first")
    hub.store.delete_job(job_id)
    hub.runner.event(job_id, "deleted")
    return {"deleted": job_id}


def control(action: str, fn: Callable[[JobRunner, int], bool], doc: str) -> None:
    """POST /api/jobs/{id}/<action>: 202 with the job, or 409 when its state forbids it."""

    def endpoint(job_id: RowId, request: Request,
                 who: auth.Principal = Depends(operator)) -> JSONResponse:  # fmt: skip
        hub = hub_of(request)
        job = job_or_404(hub, job_id)
        if not fn(hub.runner, job_id):
            raise ApiError(409, "bad_state", f"cannot {action} job {job_id} while it is "
                           f"{job['state']}")  # fmt: skip
        return JSONResponse(job_or_404(hub, job_id), 202)

    router.post(f"/api/jobs/{{job_id}}/{action}", tags=["jobs"], status_code=202,
                name=f"{action}_job", description=doc)(endpoint)  # fmt: skip


@router.post("/api/jobs/{job_id}/run", tags=["jobs"], status_code=202, name="run_job")
def run_job(job_id: RowId, request: Request, body: models.RunRequest | None = None,
            who: auth.Principal = Depends(operator)) -> JSONResponse:  # fmt: skip
    """Queue the job (from created, completed, partial, failed or cancelled); it starts when a
    slot and its destination are free. The body is optional: {"force_delete": true} and
    {"max_delete": "off"} override the mirror guards for this run only."""
    hub = hub_of(request)
    job = job_or_404(hub, job_id)
    overrides = body.model_dump(exclude_defaults=True) if body is not None else {}
    if overrides and job["mode"] != "mirror":
        raise ApiError(400, "invalid_run", f"job {job_id} is a {job['mode']} job: "
                       "force_delete and max_delete apply to mirror jobs")  # fmt: skip
    if "max_delete" in overrides:
        from orbit_fast.units import parse_max_delete

        try:
            parse_max_delete(str(overrides["max_delete"]))
        except OrbitError as exc:
            raise ApiError(400, "invalid_run", str(exc)) from None
    if not hub.runner.run(job_id, overrides=overrides):
        raise ApiError(409, "bad_state", f"cannot run job {job_id} while it is "
                       f"{job['state']}")  # fmt: skip
    return JSONResponse(job_or_404(hub, job_id), 202)

control("cancel", JobRunner.cancel, "Stop it: a running job checkpoints and ends cancelled.")
control("pause", JobRunner.pause, "Stop it for now; resume continues from the checkpoint.")
control("resume", JobRunner.resume, "Queue a paused job again.")
