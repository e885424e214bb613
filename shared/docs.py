"""The API docs (Swagger UI) every service serves at /docs, from the `swagger-ui-bundle` package: its
scripts, CSS and favicon come from this origin (/docs-assets), never a CDN, and its initialisation is a
same-origin script too, so the strict Content-Security-Policy of shared.http holds on /docs as well."""

from __future__ import annotations

import json

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, Response
from fastapi.staticfiles import StaticFiles
from swagger_ui_bundle import swagger_ui_path

ASSETS = "/docs-assets"

_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{title} - API docs</title>
<link rel="stylesheet" href="{assets}/swagger-ui.css">
<link rel="icon" type="image/png" href="{assets}/favicon-32x32.png">
</head>
<body>
<div id="swagger-ui"></div>
<script src="{assets}/swagger-ui-bundle.js"></script>
<script src="/docs/init.js"></script>
</body>
</html>
"""

_INIT = """window.ui = SwaggerUIBundle({{
  url: {openapi_url},
  dom_id: '#swagger-ui',
  layout: 'BaseLayout',
  deepLinking: true,
  showExtensions: true,
  showCommonExtensions: true,
  presets: [SwaggerUIBundle.presets.apis, SwaggerUIBundle.SwaggerUIStandalonePreset]
}});
"""


def add_docs(app: FastAPI) -> None:
    """Serve Swagger UI at /docs (the app is made with docs_url=None, redoc_url=None)."""
    app.mount(ASSETS, StaticFiles(directory=swagger_ui_path), name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    async def docs() -> HTMLResponse:
        return HTMLResponse(_PAGE.format(title=app.title, assets=ASSETS))

    @app.get("/docs/init.js", include_in_schema=False)
    async def docs_init(request: Request) -> Response:
        openapi_url = request.scope.get("root_path", "") + (app.openapi_url or "/openapi.json")
        return Response(_INIT.format(openapi_url=json.dumps(openapi_url)), media_type="text/javascript")
