"""The dashboard's files: index.html and its two assets, outside the OpenAPI document. The
dashboard itself uses only the JSON API."""

from __future__ import annotations

from importlib import resources

from fastapi import APIRouter
from fastapi.responses import FileResponse

from orbit_fast.hub.routes.errors import ApiError

router = APIRouter()
STATIC = resources.files("orbit_fast.hub") / "dashboard"
ASSET_TYPES = {"app.js": "text/javascript", "style.css": "text/css"}


@router.get("/", include_in_schema=False)
def index() -> FileResponse:
    return FileResponse(str(STATIC / "index.html"), media_type="text/html")


@router.get("/assets/{name}", include_in_schema=False)
def asset(name: str) -> FileResponse:
    if name not in ASSET_TYPES:
        raise ApiError(404, "not_found", f"no asset {name}")
    return FileResponse(str(STATIC / name), media_type=ASSET_TYPES[name])
