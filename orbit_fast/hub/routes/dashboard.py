"""The dashboard's files: index.html and its two assets, outside the OpenAPI document. The
dashboard itself uses only the JSON API."""

from __future__ import annotations

from importlib import resources

from fastapi import APIRouter
from fastapi.responses import FileResponse, HTMLResponse

from orbit_fast.hub.routes.errors import ApiError

router = APIRouter()
STATIC = resources.files("orbit_fast.hub") / "dashboard"
# uPlot 1.6.32 (MIT, uPlot.LICENSE beside it): the charts, vendored: no build step, no CDN.
ASSET_TYPES = {"app.js": "text/javascript", "style.css": "text/css",
               "uPlot.iife.min.js": "text/javascript", "uPlot.min.css": "text/css",
               "uPlot.LICENSE": "text/plain"}  # fmt: skip
DOCS = "/api/docs/assets"  # Swagger UI's files (the fastapi-offline package's copy)
DOCS_TYPES = {"swagger-ui-bundle.js": "text/javascript", "swagger-ui.css": "text/css",
              "favicon.png": "image/png"}  # fmt: skip


@router.get("/", include_in_schema=False)
def index() -> FileResponse:
    return FileResponse(str(STATIC / "index.html"), media_type="text/html")


@router.get("/api/docs", include_in_schema=False)
def api_docs() -> HTMLResponse:
    """Swagger UI over /api/openapi.json, every file of it served by the hub (offline too)."""
    from fastapi.openapi.docs import get_swagger_ui_html

    return get_swagger_ui_html(openapi_url="/api/openapi.json", title="orbit-fast hub API",
                               swagger_js_url=f"{DOCS}/swagger-ui-bundle.js",
                               swagger_css_url=f"{DOCS}/swagger-ui.css",
                               swagger_favicon_url=f"{DOCS}/favicon.png")  # fmt: skip


@router.get(DOCS + "/{name}", include_in_schema=False)
def docs_asset(name: str) -> FileResponse:
    if name not in DOCS_TYPES:
        raise ApiError(404, "not_found", f"no asset {name}")
    return FileResponse(str(resources.files("fastapi_offline") / "static" / name),
                        media_type=DOCS_TYPES[name])


@router.get("/assets/{name}", include_in_schema=False)
def asset(name: str) -> FileResponse:
    if name not in ASSET_TYPES:
        raise ApiError(404, "not_found", f"no asset {name}")
    return FileResponse(str(STATIC / name), media_type=ASSET_TYPES[name])
