"""The console's pages. It is a client of the three HTTP APIs, like the CLI: the approver's own API is
called in-process (so a decision goes through exactly the same checks and audit), the registrar's and the
deployer's over HTTP at MODELGATE_REGISTRAR_URL / MODELGATE_DEPLOYER_URL."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import parse_qs, quote

import httpx
from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates

from services.console.plots import MetricRow, confusion_svg, metric_bars_svg, plots_of, roc_svg
from services.console.session import (
    COOKIE,
    SignedIn,
    check_csrf,
    check_same_origin,
    end_session,
    original_scheme,
    signed_in,
    start_session,
)
from shared.client import ApiError, Approver, Deployer, Registrar, ServiceError, live_by_stage
from shared.errors import Refused
from shared.http import runtime_of

Me = Annotated[SignedIn, Depends(signed_in)]
templates = Jinja2Templates(directory=Path(__file__).with_name("templates"))
STAGE_STYLE = {"Deployed": "ok", "Approved": "ok", "PendingApproval": "wait", "pending": "wait",
               "PendingManualApproval": "wait", "Deploying": "wait", "Rejected": "bad", "DeploymentFailed": "bad",
               "RolledBack": "bad"}  # Superseded and Retired: muted (ended without fault)
templates.env.filters["part"] = lambda value: quote(str(value), safe="")  # a link's path segment
templates.env.filters["status_class"] = lambda status: STAGE_STYLE.get(status or "", "none")


@dataclass
class Backends:
    registrar: Registrar
    approver: Approver
    deployer: Deployer


def approver_api(request: Request, me: SignedIn) -> Approver:
    """The approver's own API, called in-process: the console's decisions take exactly the API's path."""
    return Approver("http://approver", transport=httpx.ASGITransport(app=request.app), token=me.token)


@asynccontextmanager
async def backends(request: Request, me: SignedIn) -> AsyncIterator[Backends]:
    """The three APIs, called with the session as the credential (the other services verify it too)."""
    found = Backends(Registrar(token=me.token), approver_api(request, me), Deployer(token=me.token))
    try:
        yield found
    finally:
        for client in (found.registrar, found.approver, found.deployer):
            await client.aclose()


async def _form(request: Request) -> dict[str, str]:
    """An urlencoded form body (the console posts nothing else)."""
    fields = parse_qs((await request.body()).decode(), keep_blank_values=True)
    return {key: values[-1] for key, values in fields.items()}


def _page(request: Request, name: str, me: SignedIn | None, status_code: int = 200, **context: Any) -> HTMLResponse:
    return templates.TemplateResponse(request, name, {"me": me, **context}, status_code=status_code)


def _service_down(request: Request, me: SignedIn, error: ServiceError) -> HTMLResponse:
    status = error.status if isinstance(error, ApiError) and error.status < 500 else 502
    return _page(request, "error.html", me, status_code=status, error=str(error))


def metric_rows(metrics: dict[str, float], live: dict[str, float] | None, checks: list[dict[str, Any]]) -> list[MetricRow]:
    """Every metric of the version, with the live version's value and the stage's threshold next to it."""
    by_metric = {c["metric"]: c for c in checks}
    rows = []
    for name in [*metrics, *(m for m in by_metric if m not in metrics)]:
        check = by_metric.get(name, {})
        rows.append(MetricRow(name=name, value=metrics.get(name), live=(live or {}).get(name), op=check.get("op"),
                              threshold=check.get("threshold"), passed=check.get("passed")))
    return rows


#: The console's routes, under /console; the approver's app includes them.
router = APIRouter(prefix="/console", include_in_schema=False)
#: The pages' scripts, at /console/static (same origin, no inline script: see the CSP in shared.http);
#: a mount takes no router prefix, so its path is spelled out.
router.mount("/console/static", StaticFiles(directory=Path(__file__).with_name("static")), name="console-static")



async def stage_names(api: Backends) -> list[str]:
    return [stage["name"] for stage in await api.approver.policy()]


@router.get("")
async def home() -> RedirectResponse:
    return RedirectResponse("/console/approvals", status_code=303)


@router.get("/login", response_class=HTMLResponse)
async def login_page(request: Request, next: str = "/console/approvals") -> HTMLResponse:
    return _page(request, "login.html", None, next=next, error=None)


@router.post("/login", response_model=None)
async def login(request: Request) -> Response:
    form = await _form(request)
    target = form.get("next") or "/console/approvals"
    if not target.startswith("/console/") or target.startswith("//"):  # never redirect off-site
        target = "/console/approvals"
    try:
        check_same_origin(request)
        token = form.get("token", "").strip()
        if not token:
            raise Refused(401, "paste your modelgate API token")
        secret = await start_session(request, token)
    except Refused as refused:
        headers = {"Retry-After": str(refused.retry_after)} if hasattr(refused, "retry_after") else None
        page = _page(request, "login.html", None, status_code=refused.status, next=target, error=refused.message)
        page.headers.update(headers or {})
        return page
    response = RedirectResponse(target, status_code=303)
    response.set_cookie(COOKIE, secret, httponly=True, samesite="strict", path="/console",
                        secure=original_scheme(request) == "https",
                        max_age=int(runtime_of(request).settings.session_ttl.total_seconds()))
    return response


@router.post("/logout")
async def logout(request: Request, me: Me) -> RedirectResponse:
    check_csrf(request, me, await _form(request))
    await end_session(request)
    response = RedirectResponse("/console/login", status_code=303)
    response.delete_cookie(COOKIE, path="/console")
    return response


@router.get("/approvals", response_class=HTMLResponse)
async def approvals(request: Request, me: Me) -> HTMLResponse:
    async with backends(request, me) as api:
        try:
            pending, yours, decided = await asyncio.gather(
                api.approver.approvals("pending"), api.approver.approvals("pending", approver=me.name),
                api.approver.approvals("decided"),
            )
        except ServiceError as exc:
            return _service_down(request, me, exc)
    mine = {a["approval_id"] for a in yours}
    others = [(a, me.why_not(a) or "not yours to decide") for a in pending if a["approval_id"] not in mine]
    recent = sorted(decided, key=lambda a: a.get("decided_at") or "", reverse=True)[:10]
    return _page(request, "approvals.html", me, yours=yours, others=others, recent=recent)


async def _approval_page(request: Request, me: SignedIn, approval_id: str, error: str | None = None,
                         status_code: int = 200) -> HTMLResponse:
    async with backends(request, me) as api:
        try:
            approval = await api.approver.approval(approval_id)
            group, version = approval["group"], approval["version"]
            record, history, deployments, stages = await asyncio.gather(
                api.registrar.version(group, version), api.registrar.history(group, version),
                api.deployer.deployments(group), stage_names(api),
            )
            live_all = live_by_stage(deployments)
            live = live_all.get(approval["stage"])
            live_record = await api.registrar.version(group, live["version"]) if live else None
        except ServiceError as exc:
            return _service_down(request, me, exc)
    checks = approval.get("checks") or []
    rows = metric_rows(record["metrics"], live_record["metrics"] if live_record else None, checks)
    plots = plots_of(record)
    return _page(
        request, "approval.html", me, status_code=status_code,
        approval=approval, record=record, history=history, live=live, live_all=live_all, rows=rows,
        checks=checks, stages=stages,
        why_not=me.why_not(approval) if approval["status"] == "pending" else None, error=error,
        roc=roc_svg(plots.roc) if plots.roc else None,
        confusion=confusion_svg(plots.confusion) if plots.confusion else None,
        bars=metric_bars_svg(rows, live["model_version_id"] if live else None) if rows else None,
    )


@router.get("/approvals/{approval_id}", response_class=HTMLResponse)
async def approval(request: Request, approval_id: str, me: Me) -> HTMLResponse:
    return await _approval_page(request, me, approval_id)


@router.post("/approvals/{approval_id}/decision", response_model=None)
async def decide(request: Request, approval_id: str, me: Me) -> Response:
    form = await _form(request)
    check_csrf(request, me, form)
    decision = form.get("decision")
    if decision not in ("approve", "reject"):
        return await _approval_page(request, me, approval_id, "Choose approve or reject.", 422)
    async with backends(request, me) as api:
        try:
            decided = await api.approver.decide(approval_id, decision, form.get("comment", "").strip() or None)
        except ApiError as refused:  # the approver's own reason: self-approval, wrong group, no comment, ...
            return await _approval_page(request, me, approval_id, refused.detail, refused.status)
        except ServiceError as exc:
            return _service_down(request, me, exc)
    target = f"/console/groups/{quote(decided['group'], safe='')}/versions/{quote(str(decided['version']), safe='')}"
    return RedirectResponse(f"{target}?decided={quote(decided['stage'])}&as={decided['status']}", status_code=303)


@router.get("/catalog", response_class=HTMLResponse)
async def catalog(request: Request, me: Me) -> HTMLResponse:
    async with backends(request, me) as api:
        try:
            groups, deployments, stages = await asyncio.gather(
                api.registrar.groups(), api.deployer.deployments(), stage_names(api)
            )
        except ServiceError as exc:
            return _service_down(request, me, exc)
    live = {g["name"]: live_by_stage([d for d in deployments if d["group"] == g["name"]]) for g in groups}
    return _page(request, "catalog.html", me, groups=groups, live=live, stages=stages)


@router.get("/groups/{group}", response_class=HTMLResponse)
async def group_page(request: Request, group: str, me: Me) -> HTMLResponse:
    async with backends(request, me) as api:
        try:
            versions, deployments, stages = await asyncio.gather(
                api.registrar.versions(group), api.deployer.deployments(group), stage_names(api)
            )
        except ServiceError as exc:
            return _service_down(request, me, exc)
        try:
            timelines = await timelines_of(api, group, stages)
        except ServiceError as exc:
            return _service_down(request, me, exc)
    live = live_by_stage(deployments)
    return _page(request, "group.html", me, group=group, versions=sorted(versions, key=lambda v: -v["version"]),
                 stages=stages, live=live, deployments=sorted(deployments, key=lambda d: d["created_at"], reverse=True),
                 timelines=timelines, periods=TIMELINE_PERIODS)


#: How many periods of each stage's timeline the group page shows.
TIMELINE_PERIODS = 5


async def timelines_of(api: Backends, group: str, stages: list[str]) -> dict[str, list[dict[str, Any]]]:
    """Each stage's latest periods (newest first): who served it, from when to when."""
    pages = await asyncio.gather(*(api.deployer.timeline(group, s, limit=TIMELINE_PERIODS) for s in stages))
    return {s: page["items"] for s, page in zip(stages, pages, strict=True)}


@router.get("/groups/{group}/versions/{version}", response_class=HTMLResponse)
async def version_page(request: Request, group: str, version: int, me: Me,
                       decided: str | None = None) -> HTMLResponse:
    async with backends(request, me) as api:
        try:
            record, history, deployments, waiting, stages = await asyncio.gather(
                api.registrar.version(group, version), api.registrar.history(group, version),
                api.deployer.deployments(group),
                api.approver.approvals("pending", model_version_id=f"{group}/{version}"), stage_names(api),
            )
        except ServiceError as exc:
            return _service_down(request, me, exc)
    live = live_by_stage(deployments)
    plots = plots_of(record)
    return _page(
        request, "version.html", me, record=record, history=history, live=live, waiting=waiting,
        stages=stages, decided=decided, as_status=request.query_params.get("as"),
        rows=metric_rows(record["metrics"], None, []),
        roc=roc_svg(plots.roc) if plots.roc else None,
        confusion=confusion_svg(plots.confusion) if plots.confusion else None,
    )


@router.get("/groups/{group}/versions/{version}/stages.json")
async def stages_json(request: Request, group: str, version: int, me: Me) -> JSONResponse:
    """What the version page polls to show a deployment as soon as it happens."""
    async with backends(request, me) as api:
        try:
            record = await api.registrar.version(group, version)
        except ServiceError as exc:
            return JSONResponse({"error": str(exc)}, status_code=502)
    return JSONResponse(record["stages"])
