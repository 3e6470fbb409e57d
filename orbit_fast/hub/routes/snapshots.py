"""A backup job's snapshots, browsed a directory at a time, and restores of chosen paths to a
target under the allowed roots (operators and admins), run in the background.

The repository is opened with the job's own password source (config.password_file, else the
hub's environment), the universe index through the hub's claims on it: a browse or a restore
while the job's backup runs is refused with 409 (they take turns on the index).
"""

from __future__ import annotations

import secrets
import threading
import time
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse
from pydantic import Field

from orbit_fast.errors import DatabaseBusy, OrbitError
from orbit_fast.hub import auth
from orbit_fast.hub.core import Hub
from orbit_fast.hub.jobspec import check_location
from orbit_fast.hub.models import Location, Strict
from orbit_fast.hub.routes.deps import RowId, hub_of, job_or_404, operator, viewer
from orbit_fast.hub.routes.errors import ApiError
from orbit_fast.passwords import PasswordSource

router = APIRouter()
MAX_RESTORES_KEPT = 100  # finished restores remembered for GET /api/restores/{id}


class RestoreRequest(Strict):
    snapshot: Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[0-9a-fA-F]+$|^latest$")]
    paths: Annotated[list[Annotated[str, Field(max_length=4096)]], Field(max_length=1000)] = []
    target: Location


def _backup_job(hub: Hub, job_id: int) -> tuple[dict[str, Any], PasswordSource]:
    job = job_or_404(hub, job_id)
    if job["mode"] != "backup":
        raise ApiError(400, "not_a_backup", f"job {job_id} is a {job['mode']} job: only backup "
                       "jobs have snapshots")  # fmt: skip
    return job, PasswordSource(file=job["config"].get("password_file") or "")


def _repository_error(exc: OrbitError) -> ApiError:
    if isinstance(exc, DatabaseBusy):
        return ApiError(409, "universe_busy", f"{exc}; try again when the backup ends")
    return ApiError(400, exc.msgid, str(exc))


def _entry(e: Any) -> dict[str, Any]:
    return {"path": e.path.decode("utf-8", "surrogateescape"), "kind": e.kind, "mode": e.mode,
            "size": e.size, "mtime_ns": e.mtime_ns,
            "target": e.target.decode("utf-8", "surrogateescape"), "uid": e.uid, "gid": e.gid,
            "user": e.user, "group": e.group, "links": e.links, "xattrs": list(e.xattrs),
            "acl": e.acl}  # fmt: skip


@router.get("/api/jobs/{job_id}/snapshots", tags=["backups"])
def snapshots(job_id: RowId, request: Request,
              who: auth.Principal = Depends(viewer)) -> dict[str, Any]:  # fmt: skip
    """The job repository's snapshots, newest first."""
    hub = hub_of(request)
    job, password = _backup_job(hub, job_id)
    try:
        snaps = hub.engine.snapshots(job["destination"], password)
    except OrbitError as exc:
        raise _repository_error(exc) from None
    return {"snapshots": [{"id": s.id, "time": s.time_ns / 1e9, "host": s.hostname,
                           "source": s.source, "tags": list(s.tags), "parent": s.parent,
                           "files": s.files_total, "bytes": s.bytes_total,
                           "bytes_added": s.bytes_added} for s in reversed(snaps)]}  # fmt: skip


@router.get("/api/jobs/{job_id}/snapshots/{snapshot}/tree", tags=["backups"])
def tree(job_id: RowId, snapshot: Annotated[str, Field(max_length=64)], request: Request,
         path: str = Query("", max_length=4096), limit: int = Query(1000, ge=1, le=10000),
         who: auth.Principal = Depends(viewer)) -> dict[str, Any]:  # fmt: skip
    """One directory of a snapshot: its entries in name order (`truncated` when there are
    more than `limit`)."""
    hub = hub_of(request)
    job, password = _backup_job(hub, job_id)
    try:
        top, entries, more = hub.engine.list_dir(job["destination"], snapshot, path, password,
                                                 limit)  # fmt: skip
    except OrbitError as exc:
        raise _repository_error(exc) from None
    return {"path": _entry(top)["path"], "kind": top.kind,
            "entries": [_entry(e) for e in entries], "truncated": more}  # fmt: skip


@router.post("/api/jobs/{job_id}/restore", tags=["backups"], status_code=202)
def start_restore(job_id: RowId, body: RestoreRequest, request: Request,
                  who: auth.Principal = Depends(operator)) -> JSONResponse:  # fmt: skip
    """Restore `paths` (all if empty) of `snapshot` into `target`, an absolute path under the
    allowed roots (not the hub's own state), in the background: GET /api/restores/{id}."""
    hub = hub_of(request)
    job, password = _backup_job(hub, job_id)
    settings = hub.settings
    try:
        check_location("target", body.target, settings.allowed_roots, settings.protected_paths)
    except OrbitError as exc:
        raise ApiError(400, "invalid_target", str(exc)) from None
    if "://" in body.target:
        raise ApiError(400, "invalid_target", "target: restore into a local directory")
    rid = secrets.token_hex(8)
    record: dict[str, Any] = {"id": rid, "job_id": job_id, "snapshot": body.snapshot,
                              "paths": body.paths, "target": body.target, "state": "running",
                              "started": time.time(), "by": who.username}  # fmt: skip
    restores = _restores(hub)
    restores[rid] = record

    def run() -> None:
        try:
            summary = hub.engine.restore(job["destination"], body.snapshot, body.target,
                                         tuple(body.paths), password, settings.allowed_roots)
            record.update(state="completed", files=summary.files_restored,
                          skipped=summary.files_skipped, bytes=summary.bytes_total)
        except OrbitError as exc:
            record.update(state="failed", error=str(exc))
        except Exception as exc:  # a bug: the hub stays up, the restore says what happened
            record.update(state="failed", error=f"internal error: {type(exc).__name__}: {exc}")
        record["finished"] = time.time()
        hub.runner.event(job_id, "restored", restore=rid, state=record["state"])
        while len(restores) > MAX_RESTORES_KEPT:
            restores.pop(next(iter(restores)))

    threading.Thread(target=run, name=f"orbit-restore-{rid}", daemon=True).start()
    return JSONResponse(record, 202)


@router.get("/api/restores/{restore_id}", tags=["backups"])
def get_restore(restore_id: Annotated[str, Field(max_length=32)], request: Request,
                who: auth.Principal = Depends(viewer)) -> dict[str, Any]:  # fmt: skip
    found = _restores(hub_of(request)).get(restore_id)
    if found is None:
        raise ApiError(404, "restore_not_found", f"no restore {restore_id}")
    return found


def _restores(hub: Hub) -> dict[str, dict[str, Any]]:
    return hub.restores
