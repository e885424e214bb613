"""The registrar's online Comet route when Comet cannot serve it: not configured (503), not answering (502).
In process, without LocalStack: these refusals happen before anything is registered."""

from __future__ import annotations

import os
import socket
from types import SimpleNamespace

os.environ.setdefault("COMET_ERROR_TRACKING_ENABLE", "false")  # before anything imports comet_ml

import httpx
import pytest

from services.registrar.bootstrap import bootstrap
from services.registrar.comet_writeback import CometWriteback
from services.registrar.settings import RegistrarSettings
from shared.app import build_app
from tests.principals import ANA, StaticAuthenticator, bearer

pytestmark = pytest.mark.timeout(120)

BODY = {"workspace": "acme", "project": "fraud", "experiment_key": "abc", }


@pytest.fixture
async def client(tmp_path):
    runtime = SimpleNamespace(settings=RegistrarSettings(database_url=f"sqlite+aiosqlite:///{tmp_path}/r.db"))
    wiring = await bootstrap(runtime, comet=CometWriteback(None, None), authenticator=StaticAuthenticator())  # type: ignore[arg-type]
    transport = httpx.ASGITransport(app=build_app(runtime, wiring))  # type: ignore[arg-type]
    return httpx.AsyncClient(transport=transport, base_url="http://registrar", headers=bearer(ANA))


async def test_without_a_comet_api_key_the_route_says_what_to_set(client, monkeypatch, tmp_path) -> None:
    monkeypatch.delenv("COMET_API_KEY", raising=False)
    monkeypatch.setenv("COMET_CONFIG", str(tmp_path / "no.config"))  # and no ~/.comet.config either
    async with client:
        response = await client.post("/v1/groups/fraud/versions/comet", json=BODY)
    assert response.status_code == 503 and "set COMET_API_KEY" in response.json()["detail"]


async def test_a_comet_that_does_not_answer_is_a_502(client, monkeypatch) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed_port = s.getsockname()[1]
    monkeypatch.setenv("COMET_API_KEY", "some-key")
    monkeypatch.setenv("COMET_HTTP_SESSION_RETRY_TOTAL", "0")  # comet_ml retries for seconds otherwise
    monkeypatch.setenv("COMET_URL_OVERRIDE", f"http://127.0.0.1:{closed_port}/clientlib/")
    async with client:
        response = await client.post("/v1/groups/fraud/versions/comet", json=BODY)
    assert response.status_code == 502 and "Comet did not answer" in response.json()["detail"]
    assert "some-key" not in response.text
