"""The web console in a real browser (Debian's chromium, driven by Playwright) against the four services.

Screenshots of the run go to test-artifacts/ (kept by CI as artifacts, never committed).
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import httpx
import pytest
from playwright.sync_api import Page, expect, sync_playwright

from shared.infra import boto_client
from shared.settings import REPO_ROOT
from shared.topology import bucket_name
from tests.helpers import wait_until

ARTIFACTS = REPO_ROOT / "test-artifacts"
CHROMIUM = "/usr/bin/chromium"  # Debian's package: apt-get install -y chromium (never `playwright install`)

PLOTS = [
    {"kind": "curve", "name": "roc", "x": [0, 0.02, 0.05, 0.1, 0.2, 0.4, 1], "y": [0, 0.6, 0.78, 0.86, 0.92, 0.96, 1]},
    {"kind": "confusion_matrix", "name": "confusion-matrix", "labels": ["Normal", "Fraud"],
     "matrix": [[56850, 14], [19, 79]]},
]


@pytest.fixture
def page() -> Iterator[Page]:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"]
        )
        try:
            yield browser.new_page(viewport={"width": 1280, "height": 900})
        finally:
            browser.close()


def register(stack, group: str, metrics: dict[str, float], model_card: dict | None = None) -> dict:
    key = f"{group}/model.joblib"
    boto_client("s3", stack.endpoint).put_object(Bucket=bucket_name(stack.namespace), Key=key, Body=b"model bytes")
    body = {
        "artifact_uri": f"s3://{bucket_name(stack.namespace)}/{key}", "metrics": metrics,
        "framework": "xgboost", "params": {"num_round": 100, "learning_rate": 0.15},
        "model_card": model_card or {},
        "lineage": {"experiment_key": "4f1c9a2e", "datasets": [
            {"name": "creditcard-transactions-preprocessed", "version": "3", "aliases": ["preprocessed"],
             "uri": "s3://modelgate-data/preprocessed/v3/"}]},
    }
    response = httpx.post(f"{stack.url('registrar')}/v1/groups/{group}/versions", json=body, headers=stack.headers("ana"), timeout=30)
    assert response.status_code == 201, response.text
    return response.json()


def pending_test_approval(stack, model_version_id: str) -> dict:
    def found() -> list[dict]:
        pending = httpx.get(f"{stack.url('approver')}/v1/approvals",
                            params={"status": "pending", "stage": "test", "model_version_id": model_version_id},
                            headers=stack.headers("lee")).json()
        return pending

    return wait_until(found, timeout=30, interval=0.3)[0]


def sign_in(page: Page, stack, who: str, token: str | None = None) -> None:
    """Signs in as `who` with their API token (`token`: another one, e.g. a wrong one)."""
    page.goto(f"{stack.url('approver')}/console")
    expect(page).to_have_url(re.compile(r"/console/login"))
    page.fill("input[name=token]", token if token is not None else stack.tokens[who])
    page.click("button[type=submit]")


def test_an_approver_signs_in_sees_the_plots_approves_and_watches_the_deployment_appear(system, page):
    live = register(system, "fraud", {"auc": 0.91, "precision": 0.82, "recall": 0.78})
    httpx.post(f"{system.url('approver')}/v1/approvals/{pending_test_approval(system, live['model_version_id'])['approval_id']}/decision",
               json={"decision": "approve"}, headers=system.headers("lee")).raise_for_status()
    card = {"summary": "Scores card transactions for fraud", "intended_use": "Flag transactions for review",
            "risk_rating": "Medium", "custom_details": {"plots": PLOTS}}
    version = register(system, "fraud", {"auc": 0.95, "precision": 0.88, "recall": 0.83}, card)
    approval = pending_test_approval(system, version["model_version_id"])

    sign_in(page, system, "lee", token="mgt_" + "x" * 43)
    expect(page.get_by_role("alert")).to_contain_text("unknown token: check it")

    # the registrant may not approve her own version: the approver refuses, and the page says why
    sign_in(page, system, "ana")
    page.goto(f"{system.url('approver')}/console/approvals/{approval['approval_id']}")
    page.get_by_role("button", name="Approve for test").click()
    expect(page.locator("#refused")).to_contain_text("ana registered fraud/2 and cannot approve it")
    page.get_by_role("button", name="Sign out").click()

    sign_in(page, system, "lee")
    expect(page.locator("#signed-in-as")).to_have_text("lee")
    waiting = page.locator("#yours tr", has_text="fraud/2")
    expect(waiting).to_contain_text("test")
    waiting.get_by_role("link", name="fraud/2").click()
    expect(page.locator("#roc-plot svg polyline.roc-line")).to_be_visible()
    expect(page.locator("#roc-plot")).to_contain_text("AUC 0.933")
    expect(page.locator("#confusion-plot svg .cm-cell")).to_have_count(4)
    expect(page.locator("#metric-plot svg")).to_be_visible()
    expect(page.locator("#metrics")).to_contain_text("live (fraud/1)")
    expect(page.locator("#model-card")).to_contain_text("Scores card transactions for fraud")
    expect(page.locator("#lineage")).to_contain_text("creditcard-transactions-preprocessed")
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=ARTIFACTS / "console-approval.png", full_page=True)

    page.fill("#decision-form textarea", "beats fraud/1 on every metric")
    page.get_by_role("button", name="Approve for test").click()
    expect(page).to_have_url(re.compile(r"/console/groups/fraud/versions/2"))
    test_stage = page.locator('#stages [data-stage="test"]')
    expect(test_stage).to_contain_text("Deployed", timeout=30_000)  # the page follows the deployment by itself
    expect(test_stage).to_contain_text("live here")
    expect(page.locator("#history")).to_contain_text("beats fraud/1 on every metric")
    page.screenshot(path=ARTIFACTS / "console-deployed.png", full_page=True)

    page.get_by_role("link", name="Catalog").click()
    expect(page.locator("#groups tr", has_text="fraud")).to_contain_text("v2")
    page.get_by_role("link", name="fraud", exact=True).click()
    expect(page.locator("#deployments")).to_contain_text("fraud/2")

    assert httpx.get(f"{system.url('registrar')}/v1/groups/fraud/versions/2",
                     headers=system.headers("lee")).json()["stages"]["test"] == "Deployed"
    decided = httpx.get(f"{system.url('approver')}/v1/approvals/{approval['approval_id']}", headers=system.headers("lee")).json()
    assert decided["status"] == "Approved" and decided["approved_by"] == ["lee"]


def test_the_console_wants_a_signed_in_approver(system, page):
    page.goto(f"{system.url('approver')}/console/catalog")
    expect(page).to_have_url(re.compile(r"/console/login\?next=/console/catalog"))
    page.fill("input[name=token]", system.tokens["kim"])
    page.click("button[type=submit]")
    expect(page).to_have_url(re.compile(r"/console/catalog$"))
    expect(page.locator("#signed-in-as")).to_have_text("kim")
    # the session's cookie alone is not enough to post: a form from another site, or without the page's
    # CSRF token, is refused (the browser's session cookie goes along with page.request)
    sign_out = f"{system.url('approver')}/console/logout"
    csrf = page.locator("input[name=csrf]").first.get_attribute("value")
    assert csrf
    cross_site = page.request.post(sign_out, form={"csrf": csrf}, headers={"Origin": "https://evil.example"}, max_redirects=0)
    assert cross_site.status == 403 and "another origin" in cross_site.text()
    stale = page.request.post(sign_out, form={"csrf": "stale"}, max_redirects=0)
    assert stale.status == 403 and "CSRF" in stale.text()
    page.reload()
    expect(page.locator("#signed-in-as")).to_have_text("kim")  # still signed in
    page.get_by_role("button", name="Sign out").click()
    page.goto(f"{system.url('approver')}/console/approvals")
    expect(page).to_have_url(re.compile(r"/console/login"))
