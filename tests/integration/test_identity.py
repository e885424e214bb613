"""Every change is made by someone the system can name (identity), on SQLite and PostgreSQL.

The approver (the identity authority) and the registrar run in-process on real databases; the registrar
verifies credentials by asking the approver's `GET /v1/me`, as in production (over an in-process transport
instead of the network). OIDC JWTs come from tests/oidc_provider.py's LocalIdP, a real JWKS over HTTP on
127.0.0.1 standing in for the organisation's identity provider, which tests cannot reach.
"""

from __future__ import annotations

import uuid
from contextlib import asynccontextmanager

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import async_sessionmaker

from services.approver.bootstrap import bootstrap as approver_bootstrap
from services.approver.settings import ApproverSettings
from services.registrar.bootstrap import bootstrap as registrar_bootstrap
from services.registrar.comet_writeback import CometWriteback
from services.registrar.settings import RegistrarSettings
from shared.app import build_app
from shared.db import OutboxRow, make_engine
from shared.events import parse_event
from shared.identity import IntrospectingAuthenticator
from shared.migrations import prepare_database
from shared.runtime import Runtime
from tests.conftest import _postgres
from tests.inprocess import FakeSecretsManager
from tests.integration.test_approver_harness import TOKENS, URLS, Approver, bearer
from tests.oidc_provider import LocalIdP

ANONYMOUS = {"Authorization": ""}


@pytest.fixture
async def approver(database_url):
    approver = await Approver.start(database_url)
    yield approver
    await approver.close()


@pytest.fixture
def registrar_db(database_url, tmp_path):
    """The registrar's own database, beside the approver's (each service owns its database)."""
    if database_url.startswith("sqlite"):
        yield f"sqlite+aiosqlite:///{tmp_path}/registrar.db"
        return
    name = f"mg_{uuid.uuid4().hex[:12]}"
    _postgres(f'CREATE DATABASE "{name}"')
    yield f"postgresql+asyncpg://postgres@127.0.0.1:5432/{name}"
    _postgres(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@asynccontextmanager
async def registrar_for(approver: Approver, url: str, service_key: str | None = None, **approver_settings):
    """The registrar on its own database, verifying credentials with `approver` (MODELGATE_APPROVER_URL),
    presenting `service_key` when it asks on a caller's behalf."""
    engine = make_engine(url)
    await prepare_database(engine, "registrar")
    runtime = Runtime(settings=RegistrarSettings(database_url=url, check_artifacts=False), engine=engine,
                      sessionmaker=async_sessionmaker(engine, expire_on_commit=False), aws={})
    approver_app = approver.app(service_key=service_key, **approver_settings)
    to_approver = httpx.AsyncClient(transport=httpx.ASGITransport(app=approver_app), base_url=URLS.api)
    authenticator = IntrospectingAuthenticator(URLS.api, cache_seconds=30, http=to_approver, service_key=service_key)
    wiring = await registrar_bootstrap(runtime, comet=CometWriteback(None, None), authenticator=authenticator)
    app = build_app(runtime, wiring)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://registrar") as client:
        client.runtime, client.app = runtime, app
        yield client
    await to_approver.aclose()
    await engine.dispose()


async def register(registrar, who: str | None, group: str = "fraud", **body):
    headers = bearer(who) if who else ANONYMOUS
    return await registrar.post(f"/v1/groups/{group}/versions", json={"artifact_uri": "s3://modelgate-artifacts/f.bin", **body}, headers=headers)


async def announced(registrar) -> list:
    async with registrar.runtime.sessionmaker() as session:
        return [parse_event(r.body) for r in await session.scalars(select(OutboxRow).order_by(OutboxRow.id))]


async def test_anonymous_and_spoofed_registrations_are_refused_and_the_registrant_is_the_caller(approver, registrar_db):
    async with registrar_for(approver, registrar_db) as registrar:
        anonymous = await register(registrar, None)
        assert anonymous.status_code == 401 and "Authorization: Bearer" in anonymous.json()["detail"]
        forged = await registrar.post("/v1/groups/fraud/versions", json={"artifact_uri": "s3://modelgate-artifacts/f.bin"},
                                      headers={"Authorization": "Bearer mgt_not-a-real-token"})
        assert forged.status_code == 401 and "unknown token" in forged.json()["detail"]
        for spoof in ("someone-else", "ana\u200b", "аna"):  # a zero-width space; a Cyrillic а
            refused = await register(registrar, "ana", registered_by=spoof)
            assert refused.status_code == 403 and "is not you (ana)" in refused.json()["detail"], spoof
        viewer = await register(registrar, "lee")
        assert viewer.status_code == 403 and "needs the registrant role" in viewer.json()["detail"]
        ok = await register(registrar, "ana", registered_by="ＡＮＡ", metrics={"auc": 0.95})  # full-width: the same name
        assert ok.status_code == 201 and ok.json()["registered_by"] == "ana"
        [event] = await announced(registrar)
        assert event.payload.registered_by == "ana"


async def test_self_approval_through_a_spoofed_or_look_alike_name_is_impossible(approver, registrar_db):
    async with registrar_for(approver, registrar_db) as registrar, approver.http() as api:
        assert (await register(registrar, "ana", registered_by="lee")).status_code == 403
        assert (await register(registrar, "ana", metrics={"auc": 0.95})).status_code == 201
        for event in await announced(registrar):  # what the bus would carry to the approver
            await approver.deliver(event)
        await approver.deployed("fraud", 1, "dev")
        request = await approver.request("fraud/1", "test")
        own = await api.post(f"/v1/approvals/{request.id}/decision", json={"decision": "approve"}, headers=bearer("ana"))
        assert own.status_code == 403 and "ana registered fraud/1 and cannot approve it" in own.json()["detail"]
        lee = await api.post(f"/v1/approvals/{request.id}/decision", json={"decision": "approve"}, headers=bearer("lee"))
        assert lee.status_code == 200 and lee.json()["approved_by"] == ["lee"]


async def test_a_team_owns_its_groups_and_shares_them_read_only(approver, registrar_db):
    async with registrar_for(approver, registrar_db) as registrar, approver.http() as api:
        omar = (await api.post("/v1/principals", json={"name": "omar", "roles": ["registrant"], "teams": ["credit"]},
                               headers=bearer("admin"))).json()
        ana = await api.patch("/v1/principals/ana", json={"teams": ["fraud"]}, headers=bearer("admin"))
        assert ana.status_code == 200
        registrar.cookies.clear()
        as_omar = {"Authorization": f"Bearer {omar['token']}"}
        assert (await register(registrar, "ana", group="fraud-scores")).status_code == 201
        group = (await registrar.get("/v1/groups/fraud-scores", headers=bearer("ana"))).json()
        assert group["team"] == "fraud" and group["shared_with"] == []
        intruder = await registrar.post("/v1/groups/fraud-scores/versions", json={"artifact_uri": "s3://modelgate-artifacts/x.bin"}, headers=as_omar)
        assert intruder.status_code == 403 and "belongs to team fraud" in intruder.json()["detail"]
        hidden = await registrar.get("/v1/groups/fraud-scores/versions/1", headers=as_omar)
        assert hidden.status_code == 403 and "not shared" in hidden.json()["detail"]
        assert (await registrar.get("/v1/versions", headers=as_omar)).json()["items"] == []
        shared = await registrar.patch("/v1/groups/fraud-scores", json={"shared_with": ["credit"]}, headers=bearer("ana"))
        assert shared.status_code == 200
        assert (await registrar.get("/v1/groups/fraud-scores/versions/1", headers=as_omar)).status_code == 200
        assert (await registrar.patch("/v1/groups/fraud-scores", json={"shared_with": []}, headers=as_omar)).status_code == 403


async def test_the_audit_trail_and_principals_need_their_roles(approver):
    async with approver.http() as api:
        assert (await api.get("/v1/audit", headers=ANONYMOUS)).status_code == 401
        viewer = await api.get("/v1/audit", headers=bearer("lee"))
        assert viewer.status_code == 403 and "needs the auditor role" in viewer.json()["detail"]
        assert (await api.get("/v1/audit", headers=bearer("audrey"))).status_code == 200
        assert (await api.post("/v1/principals", json={"name": "eve", "roles": ["admin"]}, headers=bearer("lee"))).status_code == 403
        assert (await api.get("/v1/approvals", headers=ANONYMOUS)).status_code == 401
        enumerate_ = await api.get("/v1/approvals", params={"approver": "no-such-person"}, headers=bearer("lee"))
        assert enumerate_.status_code == 403  # only an auditor may ask about someone else, and learns nothing


async def test_a_revoked_token_and_a_disabled_principal_stay_so_after_a_restart(database_url, tmp_path):
    secrets = FakeSecretsManager()
    token_file = tmp_path / "admin.token"
    namespace = f"t{uuid.uuid4().hex[:6]}"

    async def start():
        engine = make_engine(database_url)
        await prepare_database(engine, "approver")
        settings = ApproverSettings(database_url=database_url, admin_token_file=str(token_file), namespace=namespace)
        runtime = Runtime(settings=settings, engine=engine, sessionmaker=async_sessionmaker(engine, expire_on_commit=False),
                          aws={"secretsmanager": secrets})
        app = build_app(runtime, await approver_bootstrap(runtime))
        return engine, httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=URLS.api)

    engine, api = await start()
    admin = token_file.read_text().strip()
    assert token_file.stat().st_mode & 0o777 == 0o600
    as_admin = {"Authorization": f"Bearer {admin}"}
    lee = (await api.post("/v1/principals", json={"name": "lee", "groups": ["ml-leads"]}, headers=as_admin)).json()
    kim = (await api.post("/v1/principals", json={"name": "kim", "groups": ["model-risk"]}, headers=as_admin)).json()
    [credential] = lee["credentials"]
    assert (await api.delete(f"/v1/principals/lee/tokens/{credential['id']}", headers=as_admin)).status_code == 204
    assert (await api.patch("/v1/principals/kim", json={"disabled": True}, headers=as_admin)).status_code == 200
    await api.aclose()
    await engine.dispose()
    token_file.unlink()

    engine, api = await start()  # the restart: nothing re-enables anyone, and no second admin appears
    try:
        revoked = await api.get("/v1/me", headers={"Authorization": f"Bearer {lee['token']}"})
        assert revoked.status_code == 401 and "revoked" in revoked.json()["detail"]
        disabled = await api.get("/v1/me", headers={"Authorization": f"Bearer {kim['token']}"})
        assert disabled.status_code == 401 and "kim is disabled" in disabled.json()["detail"]
        assert (await api.get("/v1/me", headers=as_admin)).json()["name"] == "admin"
        assert not token_file.exists()
    finally:
        await api.aclose()
        await engine.dispose()


async def test_token_guessing_is_throttled_per_source_with_retry_after(approver):
    async with approver.http(auth_failure_limit=5, auth_failure_window_seconds=60) as api:
        for n in range(5):
            guess = await api.get("/v1/me", headers={"Authorization": f"Bearer mgt_guess{n}"})
            assert guess.status_code == 401
        throttled = await api.get("/v1/me", headers={"Authorization": "Bearer mgt_guess-again"})
        assert throttled.status_code == 429 and int(throttled.headers["Retry-After"]) > 0
        assert "too many failed attempts" in throttled.json()["detail"]
        real = await api.get("/v1/me", headers=bearer("lee"))  # the same source: held back for the window too
        assert real.status_code == 429


async def test_oidc_jwts_are_verified_against_the_identity_providers_jwks(approver, registrar_db):
    with LocalIdP() as idp:
        oidc = {"oidc_issuer": idp.issuer, "oidc_jwks_url": idp.jwks_url, "oidc_group_roles": {"data-science": ["registrant"]},
                "oidc_group_teams": {"data-science": ["fraud"]}}
        async with approver.http(**oidc) as api:
            sso = await api.get("/v1/me", headers={"Authorization": f"Bearer {idp.issue('Sam', groups=['model-risk'])}"})
            assert sso.status_code == 200, sso.text
            assert (sso.json()["name"], sso.json()["groups"], sso.json()["via"]) == ("sam", ["model-risk"], "oidc")
            for bad, why in ((idp.issue("sam", expires_in=-120), "expired"), (idp.issue("sam", audience="other"), "audience"),
                             (idp.issue("lee"), "name of a local principal")):
                refused = await api.get("/v1/me", headers={"Authorization": f"Bearer {bad}"})
                assert refused.status_code == 401 and why in refused.json()["detail"], refused.text
            bound = await api.post("/v1/principals", headers=bearer("admin"), json={
                "name": "ci-fraud", "kind": "service", "roles": ["registrant"], "teams": ["fraud"],
                "oidc_subject": "repo:acme/fraud:ref:refs/heads/main", "token": False})
            assert bound.status_code == 201 and bound.json()["token"] is None
        async with registrar_for(approver, registrar_db, **oidc) as registrar:
            ci_jwt = idp.issue("repo:acme/fraud:ref:refs/heads/main")
            made = await registrar.post("/v1/groups/fraud/versions", json={"artifact_uri": "s3://modelgate-artifacts/ci.bin"},
                                        headers={"Authorization": f"Bearer {ci_jwt}"})
            assert made.status_code == 201 and made.json()["registered_by"] == "ci-fraud"
            scientist = idp.issue("dora", groups=["data-science"])
            assert (await registrar.post("/v1/groups/fraud/versions", json={"artifact_uri": "s3://modelgate-artifacts/d.bin"},
                                         headers={"Authorization": f"Bearer {scientist}"})).status_code == 201


async def test_the_registrar_refuses_when_it_cannot_verify(database_url):
    engine = make_engine(database_url)
    await prepare_database(engine, "registrar")
    runtime = Runtime(settings=RegistrarSettings(database_url=database_url, check_artifacts=False), engine=engine,
                      sessionmaker=async_sessionmaker(engine, expire_on_commit=False), aws={})
    nowhere = IntrospectingAuthenticator("http://127.0.0.1:9")  # nothing listens there
    wiring = await registrar_bootstrap(runtime, comet=CometWriteback(None, None), authenticator=nowhere)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=build_app(runtime, wiring)), base_url="http://r") as client:
        response = await client.get("/v1/versions", headers={"Authorization": f"Bearer {TOKENS.get('lee', 'x')}"})
    await nowhere.aclose()
    await engine.dispose()
    assert response.status_code == 503 and "cannot verify credentials" in response.json()["detail"]


async def test_every_change_and_refusal_is_in_the_services_request_audit_for_auditors(approver, registrar_db):
    async with registrar_for(approver, registrar_db) as registrar:
        assert (await register(registrar, None)).status_code == 401
        assert (await register(registrar, "ana", registered_by="lee")).status_code == 403
        assert (await register(registrar, "ana")).status_code == 201
        viewer = await registrar.get("/v1/audit/requests", headers=bearer("lee"))
        assert viewer.status_code == 403 and "needs the auditor role" in viewer.json()["detail"]
        rows = (await registrar.get("/v1/audit/requests", headers=bearer("audrey"))).json()
    assert [(r["principal"], r["method"], r["path"], r["status"], r["outcome"]) for r in rows[:3]] == [
        (None, "POST", "/v1/groups/fraud/versions", 401, "refused"),
        ("ana", "POST", "/v1/groups/fraud/versions", 403, "refused"),
        ("ana", "POST", "/v1/groups/fraud/versions", 201, "done"),
    ]
    assert rows[1]["reason"].startswith("registered_by 'lee' is not you") and rows[0]["source"] == "127.0.0.1"
    assert rows[3]["path"] == "/v1/audit/requests" and rows[3]["principal"] == "lee" and rows[3]["status"] == 403


async def test_bad_tokens_sent_through_a_sibling_count_against_their_sender_not_the_sibling(approver, registrar_db):
    """The registrar asks the approver on its callers' behalf, presenting the services' key: the approver then
    throttles the caller who guessed, and everyone else using the registrar carries on."""
    async with registrar_for(approver, registrar_db, service_key="k" * 64, auth_failure_limit=3) as registrar:
        def from_address(host: str) -> httpx.AsyncClient:
            transport = httpx.ASGITransport(app=registrar.app, client=(host, 40000))
            return httpx.AsyncClient(transport=transport, base_url="http://registrar")

        async with from_address("10.0.0.66") as guesser, from_address("10.0.0.7") as colleague:
            for n in range(3):
                guess = await guesser.get("/v1/versions", headers={"Authorization": f"Bearer mgt_guess{n}"})
                assert guess.status_code == 401
            held = await guesser.get("/v1/versions", headers={"Authorization": "Bearer mgt_guess-again"})
            assert held.status_code == 429
            served = await colleague.get("/v1/versions", headers=bearer("kim"))  # a credential not cached yet
            assert served.status_code == 200, served.text


async def test_a_principal_refused_again_and_again_is_held_back_while_others_carry_on(approver):
    async with approver.http(auth_principal_failure_limit=3) as api:
        for _ in range(3):
            assert (await api.get("/v1/audit", headers=bearer("lee"))).status_code == 403
        held = await api.get("/v1/policy", headers=bearer("lee"))
        assert held.status_code == 429 and "lee" in held.json()["detail"] and held.headers["Retry-After"]
        assert (await api.get("/v1/policy", headers=bearer("kim"))).status_code == 200
