"""The hub's own calls. `monitoring` (first in the document): health and the guide's job
list, which a load balancer and a cron line poll. `operations` (last): consistent state
backups and Prometheus metrics."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response

from orbit_fast.errors import OrbitError
from orbit_fast.hub import auth
from orbit_fast.hub.guards import direct_loopback
from orbit_fast.hub.routes.deps import admin, hub_of, need, principal, viewer
from orbit_fast.hub.routes.errors import ApiError

monitoring = APIRouter()
operations = APIRouter()


@monitoring.get("/api/health", tags=["hub"])
async def health(request: Request) -> JSONResponse:
    """200 healthy, or 503 with the problems (paths only for a signed-in caller)."""
    hub = hub_of(request)
    status, body = hub.health()
    if status != 200:  # only then is there anything to hide; a healthy poll reads no DB
        try:
            detailed = principal(request) is not None
        except ApiError:  # a bad token still gets the anonymous answer, not a 401
            detailed = False
        status, body = hub.health(detailed=detailed)
    return JSONResponse(body, status)


@monitoring.get("/api/list_jobs", tags=["jobs"])
async def list_jobs(request: Request) -> Response:
    """All jobs, as the guide's monitoring line reads them (`jq '.jobs | length'`). From
    the hub itself it needs no token (ORBIT_LOOPBACK_READS, on by default)."""
    hub = hub_of(request)
    if not (hub.settings.loopback_reads and direct_loopback(request)):
        need("viewer")(request)
    return Response(hub.store.jobs_json(), media_type="application/json")


@operations.post("/api/admin/state-backup", tags=["hub"])
def state_backup(request: Request, who: auth.Principal = Depends(admin)) -> dict[str, Any]:
    """Consistent copies of jobs.db and the universe into ORBIT_STATE_BACKUP_DIR (default
    <data dir>/state-backups), e.g. for a job that ships them off the hub."""
    try:
        return hub_of(request).engine.backup_state()
    except OrbitError as exc:
        raise ApiError(503, exc.msgid, str(exc)) from None  # the hub's disk, not the call


@operations.get("/metrics", tags=["hub"], response_class=PlainTextResponse)
def metrics(request: Request, who: auth.Principal = Depends(viewer)) -> Response:
    """Prometheus text format (prometheus-client's exposition)."""
    from prometheus_client import CONTENT_TYPE_LATEST

    return Response(hub_of(request).metrics.render(), media_type=CONTENT_TYPE_LATEST)
