"""The hub's HTTP face (FastAPI): `create_app` assembles the routers of routes/ (one per area)
around a Hub, with the request guards, the JSON error handlers and the OpenAPI document's
error answers. Routes reach the Hub through app.state (routes/deps.py).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from orbit_fast._version import __version__
from orbit_fast.hub import guards
from orbit_fast.hub.core import Hub
from orbit_fast.hub.routes import auth, dashboard, events, jobs, runs, snapshots, system, users
from orbit_fast.hub.routes.errors import install_error_handlers
from orbit_fast.hub.routes.openapi import document_errors

log = logging.getLogger("orbit_fast.hub")

# In this order: the OpenAPI document lists the paths as they are added.
ROUTERS = (system.monitoring, jobs.router, runs.router, snapshots.router, events.router,
           auth.router, users.router, system.operations, dashboard.router)  # fmt: skip


def create_app(hub: Hub) -> FastAPI:
    settings = hub.settings

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
                  openapi_url="/api/openapi.json", docs_url=None,
                  redoc_url=None)  # /api/docs: routes/dashboard.py, its files served here
    app.state.hub = hub
    # Added last, so run first: a foreign Host is refused before its body is even read.
    app.add_middleware(guards.BodyLimit, limit=settings.max_body_bytes,
                       timeout_s=settings.body_timeout_s)  # fmt: skip
    app.add_middleware(guards.HostGuard, names=settings.allowed_hosts,
                       public_url=settings.public_url)  # fmt: skip
    app.add_middleware(guards.SecurityHeaders)  # refusals carry the headers too
    # Outermost: a refused request's time counts as well (the guide alerts on answer times).
    from orbit_fast.hub.metrics import TimedRequests

    app.add_middleware(TimedRequests, metrics=hub.metrics)
    install_error_handlers(app)
    for router in ROUTERS:
        app.include_router(router)
    document_errors(app)
    return app
