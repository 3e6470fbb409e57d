"""Live progress as Server-Sent Events: `job` (state changes), `progress`, `warning`, for all
jobs or one. A new client gets a snapshot first; a reconnecting one (Last-Event-ID) gets what
it missed, from memory when it can (no thread, no DB) and else from hub_events."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

from fastapi import APIRouter, Depends, Request
from fastapi.responses import StreamingResponse

from orbit_fast.hub import auth
from orbit_fast.hub.core import Hub
from orbit_fast.hub.routes.deps import RowId, hub_of, job_or_404, viewer
from orbit_fast.hub.routes.errors import ApiError

router = APIRouter()
SSE_HEADERS = {"Cache-Control": "no-store", "X-Accel-Buffering": "no"}


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


async def stream(hub: Hub, job_id: int | None, last: int | None) -> AsyncIterator[str]:
    store = hub.store
    loop = asyncio.get_running_loop()
    flag = asyncio.Event()

    def wake() -> None:
        loop.call_soon_threadsafe(flag.set)

    store.listeners.append(wake)
    try:
        yield "retry: 2000\n\n"
        if last is None:  # a new client: the state now, then everything after it
            last = store.last_event_id()
            snap = json.dumps(job_or_404(hub, job_id)) if job_id else store.jobs_json().decode()
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


@router.get("/api/events", tags=["events"])
def events(request: Request, who: auth.Principal = Depends(viewer)) -> StreamingResponse:
    """Server-Sent Events for all jobs: `job` (state changes), `progress`, `warning`.
    Reconnect with Last-Event-ID to receive what was missed."""
    last = last_event_id(request)
    return StreamingResponse(stream(hub_of(request), None, last),
                             media_type="text/event-stream", headers=SSE_HEADERS)  # fmt: skip


@router.get("/api/jobs/{job_id}/events", tags=["events"])
def job_events(job_id: RowId, request: Request,
               who: auth.Principal = Depends(viewer)) -> StreamingResponse:  # fmt: skip
    hub = hub_of(request)
    job_or_404(hub, job_id)
    last = last_event_id(request)
    return StreamingResponse(stream(hub, job_id, last), media_type="text/event-stream",
                             headers=SSE_HEADERS)  # fmt: skip
