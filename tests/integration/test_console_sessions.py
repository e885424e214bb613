"""The console's sign-in on SQLite and PostgreSQL: a server-side session (never the API token) in the cookie,
logout that revokes it, a CSRF token on every form and an origin check, `Secure` behind an https proxy."""

from __future__ import annotations

import re

import pytest

from services.console.session import COOKIE
from tests.integration.test_approver_harness import TOKENS, URLS, Approver

ORIGIN = {"Origin": URLS.api}


@pytest.fixture
async def approver(database_url):
    approver = await Approver.start(database_url)
    yield approver
    await approver.close()


async def sign_in(console, who: str, **headers: str):
    return await console.post("/console/login", data={"token": TOKENS[who], "next": "/console/approvals"},
                              headers={**ORIGIN, **headers})


async def pending_test_request(approver: Approver) -> str:
    await approver.register("fraud", 1)
    await approver.deployed("fraud", 1, "dev")
    return (await approver.request("fraud/1", "test")).id


def csrf_of(page: str) -> str:
    return re.search(r'name="csrf" value="([^"]+)"', page).group(1)


async def test_the_cookie_is_a_revocable_session_not_the_token(approver):
    async with approver.http() as console:
        signed = await sign_in(console, "lee")
        assert signed.status_code == 303, signed.text
        cookie = console.cookies[COOKIE]
        assert cookie.startswith("mgs_") and cookie != TOKENS["lee"]
        set_cookie = signed.headers["set-cookie"].lower()
        assert "httponly" in set_cookie and "samesite=strict" in set_cookie and "secure" not in set_cookie
        page = await console.get("/console/approvals")
        assert page.status_code == 200 and "lee" in page.text
        logout = await console.post("/console/logout", data={"csrf": csrf_of(page.text)}, headers=ORIGIN)
        assert logout.status_code == 303

        console.cookies.set(COOKIE, cookie, path="/console")  # the copied cookie, replayed after logout
        replayed = await console.get("/console/approvals")
        assert replayed.status_code == 303 and replayed.headers["location"].startswith("/console/login")
        as_bearer = await console.get("/v1/me", headers={"Authorization": f"Bearer {cookie}"})
        assert as_bearer.status_code == 401 and "revoked" in as_bearer.json()["detail"]


async def test_form_posts_need_the_sessions_csrf_token_and_this_origin(approver):
    approval_id = await pending_test_request(approver)
    async with approver.http() as console:
        assert (await sign_in(console, "lee")).status_code == 303
        page = await console.get(f"/console/approvals/{approval_id}")
        csrf = csrf_of((await console.get("/console/approvals")).text) if page.status_code != 200 else csrf_of(page.text)
        url = f"/console/approvals/{approval_id}/decision"
        vote = {"decision": "approve", "comment": "ok"}
        missing = await console.post(url, data=vote, headers=ORIGIN)
        assert missing.status_code == 403 and "CSRF token" in missing.json()["detail"]
        elsewhere = await console.post(url, data={**vote, "csrf": csrf}, headers={"Origin": "https://evil.example"})
        assert elsewhere.status_code == 403 and "another origin" in elsewhere.json()["detail"]
        cross_site = await console.post(url, data={**vote, "csrf": csrf}, headers={"Sec-Fetch-Site": "cross-site"})
        assert cross_site.status_code == 403
        assert (await approver.request("fraud/1", "test")).status == "pending"
        decided = await console.post(url, data={**vote, "csrf": csrf}, headers={**ORIGIN, "Sec-Fetch-Site": "same-origin"})
        assert decided.status_code == 303 and "as=Approved" in decided.headers["location"]


async def test_behind_an_https_load_balancer_the_cookie_is_secure(approver):
    async with approver.http(trust_forwarded_headers=True) as console:
        signed = await sign_in(console, "lee", **{"X-Forwarded-Proto": "https", "Origin": "https://approver.test"})
        assert signed.status_code == 303, signed.text
        assert "secure" in signed.headers["set-cookie"].lower()


async def test_sign_in_guessing_is_throttled(approver):
    async with approver.http(auth_failure_limit=3) as console:
        for n in range(3):
            wrong = await console.post("/console/login", data={"token": f"mgt_guess{n}"}, headers=ORIGIN)
            assert wrong.status_code == 401 and "unknown token" in wrong.text
        throttled = await console.post("/console/login", data={"token": TOKENS["lee"]}, headers=ORIGIN)
        assert throttled.status_code == 429 and int(throttled.headers["Retry-After"]) > 0
