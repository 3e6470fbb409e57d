"""A job's runs, and the source entries a run skipped (the engine's record of them, read
through Engine.file_errors)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Query, Request

from orbit_fast.hub import auth
from orbit_fast.hub.routes.deps import RowId, hub_of, job_or_404, viewer
from orbit_fast.hub.routes.errors import ApiError

router = APIRouter()


@router.get("/api/jobs/{job_id}/runs", tags=["jobs"])
def job_runs(job_id: RowId, request: Request, limit: int = Query(50, ge=1, le=1000),
             offset: int = Query(0, ge=0, le=10**9),
             who: auth.Principal = Depends(viewer)) -> dict[str, Any]:  # fmt: skip
    hub = hub_of(request)
    job_or_404(hub, job_id)
    return {"runs": hub.store.runs(job_id, limit, offset)}


@router.get("/api/jobs/{job_id}/runs/{run_id}/errors", tags=["jobs"])
def run_errors(job_id: RowId, run_id: RowId, request: Request,
               who: auth.Principal = Depends(viewer)) -> dict[str, Any]:  # fmt: skip
    hub = hub_of(request)
    run = hub.store.run(run_id)
    if run is None or run["job_id"] != job_id:
        raise ApiError(404, "run_not_found", f"job {job_id} has no run {run_id}")
    skipped = hub.engine.file_errors(run["engine_run_id"]) if run["engine_run_id"] else []
    errors = [{"path": e.path, "code": e.msgid, "message": e.message} for e in skipped]
    return {"run": run, "errors": errors}
