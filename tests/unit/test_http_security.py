"""What every service's app serves about itself, in process: Swagger UI at /docs from this origin only (the
swagger-ui-bundle package, never a CDN), the security headers (a strict CSP) on every answer, and the
console's scripts as same-origin files (its templates have no inline script)."""

from __future__ import annotations

import html as html_lib
import json
import re
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest
from fastapi import APIRouter

from services.approver.bootstrap import ROUTERS as APPROVER_ROUTERS
from services.console.router import templates
from shared.app import SECURITY_HEADERS, build_app
from shared.runtime import Wiring
from shared.settings import ServiceSettings

TEMPLATES = Path(__file__).parents[2] / "services" / "console" / "templates"
CSP = SECURITY_HEADERS["Content-Security-Policy"]
JS = ("text/javascript", "application/javascript")

things = APIRouter()


@things.get("/v1/things")
async def list_things() -> dict[str, list[str]]:
    return {"things": ["a"]}


@pytest.fixture
async def client():
    runtime = SimpleNamespace(settings=ServiceSettings(service="approver", database_url="sqlite+aiosqlite://"))
    app = build_app(runtime, Wiring(handlers={}, routers=[*APPROVER_ROUTERS, things]))  # type: ignore[arg-type]
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://approver") as client:
        yield client


def _assets(html: str) -> list[str]:
    return re.findall(r'<script[^>]*\ssrc="([^"]+)"', html) + re.findall(r'<link[^>]*\shref="([^"]+)"', html)


async def test_docs_load_only_same_origin_assets_and_each_is_served(client) -> None:
    page = await client.get("/docs")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    html = page.text
    assert "cdn.jsdelivr.net" not in html and not re.search(r"""(src|href)=["']?(https?:)?//""", html)
    assert not re.search(r"<script(?![^>]*\ssrc=)[^>]*>", html), "no inline script: the CSP forbids it"
    assets = _assets(html)
    assert any(a.endswith("swagger-ui-bundle.js") for a in assets) and any(a.endswith(".css") for a in assets)
    for asset in assets:
        assert asset.startswith("/"), asset
        answer = await client.get(asset)
        assert answer.status_code == 200, asset
        kind = answer.headers["content-type"]
        wanted = JS if asset.endswith(".js") else ("text/css",) if asset.endswith(".css") else ("image/png",)
        assert kind.split(";")[0] in wanted, (asset, kind)
        assert "cdn.jsdelivr.net" not in answer.text if kind.split(";")[0] in JS else True


async def test_the_docs_initialisation_points_at_this_services_openapi(client) -> None:
    init = await client.get("/docs/init.js")
    assert init.status_code == 200 and '"/openapi.json"' in init.text and "SwaggerUIBundle(" in init.text
    schema = await client.get("/openapi.json")
    assert schema.status_code == 200 and "/v1/things" in schema.json()["paths"]
    assert "/docs" not in schema.json()["paths"]
    assert (await client.get("/redoc")).status_code == 404


@pytest.mark.parametrize("path", ["/docs", "/docs/init.js", "/docs-assets/swagger-ui.css", "/v1/things",
                                  "/healthz", "/openapi.json", "/console/static/version.js", "/no-such-page"])
async def test_every_answer_has_the_security_headers(client, path) -> None:
    answer = await client.get(path)
    assert answer.headers["content-security-policy"] == CSP
    assert "script-src 'self';" in CSP and "unsafe-inline" not in CSP.split("script-src")[1].split(";")[0]
    assert answer.headers["x-content-type-options"] == "nosniff"
    assert answer.headers["referrer-policy"] == "same-origin"
    assert answer.headers["x-frame-options"] == "DENY"


@pytest.mark.parametrize("name", ["approval.js", "version.js", "error.js"])
async def test_the_consoles_scripts_are_served_from_its_origin(client, name) -> None:
    answer = await client.get(f"/console/static/{name}")
    assert answer.status_code == 200 and answer.headers["content-type"].split(";")[0] in JS
    assert "addEventListener" in answer.text or "setInterval" in answer.text


def test_the_console_templates_have_no_inline_script_and_load_only_console_scripts() -> None:
    for template in TEMPLATES.glob("*.html"):
        text = template.read_text()
        assert not re.search(r"<script(?![^>]*\ssrc=)[^>]*>", text), template.name
        assert "javascript:" not in text and not re.search(r"\son[a-z]+=", text), template.name
        for src in re.findall(r'<script[^>]*\ssrc="([^"]+)"', text):
            assert src.startswith("/console/static/"), (template.name, src)
            assert (TEMPLATES.parent / "static" / src.removeprefix("/console/static/")).is_file(), src


def test_the_version_page_hands_its_stages_to_the_script_intact() -> None:
    stages = {"staging": "Deployed", "prod": "it's \"pending\" <b>&"}
    html = templates.env.from_string(
        """<script src="/console/static/version.js" data-stages='{{ stages|tojson }}' defer></script>""",
    ).render(stages=stages)
    attribute = re.search(r"data-stages='([^']*)'", html)
    assert attribute and json.loads(html_lib.unescape(attribute.group(1))) == stages
