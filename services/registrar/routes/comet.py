"""The registrar's Comet routes: register a version from an OfflineExperiment archive, or from Comet itself.

Both turn the experiment into an ordinary `Registration` (source "comet") and go through the same artifact
check and `catalog.register` as `POST /v1/groups/{group}/versions`. Where each Comet fact lands in the
version record: docs/comet.md, "Where it lands".
"""

from __future__ import annotations

import asyncio
import json
from typing import Annotated, Any

import structlog
from fastapi import APIRouter, File, Form, HTTPException, Path, UploadFile
from pydantic import BaseModel, Field, ValidationError, model_validator

from services.registrar import access
from services.registrar.catalog import GROUP_NAME, Registration, Tags, UnknownGroup, register
from services.registrar.comet import (
    ArchiveLimits,
    CometArchiveError,
    CometArchiveTooLarge,
    CometFetchError,
    CometRegistration,
    fetch_online_async,
    import_comet,
    parse_offline_archive,
)
from services.registrar.deps import ReadableErrors, Registrar, RegistrarDep
from services.registrar.schemas import VersionOut
from services.registrar.settings import RegistrarSettings
from services.registrar.writebacks import link_comet_import
from shared.http import CurrentPrincipal
from shared.identity import Principal
from shared.limits import LIMITS, JsonMap, Name, Text, too_large

log = structlog.get_logger()

def archive_limits(settings: RegistrarSettings) -> ArchiveLimits:
    return ArchiveLimits(settings.comet_archive_max_members, settings.comet_archive_max_uncompressed_bytes,
                         settings.comet_archive_max_member_bytes)
GroupName = Annotated[str, Path(pattern=GROUP_NAME, examples=["fraud-detector"])]


class FromComet(BaseModel):
    """Which Comet experiment to register: by experiment key (or name), or by registry model version."""

    workspace: Name = Field(min_length=1, examples=["acme"])
    project: Name = Field(min_length=1, examples=["fraud-detection"])
    experiment_key: Name | None = Field(None, description="The experiment's key, or its name.")
    registry_model: Name | None = Field(None, description="A Comet registry model name, instead of a key.")
    registry_version: Name | None = Field(None, description="Its version, e.g. 1.0.0; default: the latest.")
    registered_by: Name | None = Field(None, description="Optional: your own name (the credential names the registrant).")
    framework: Name | None = Field(None, description="Default: the logged model's metadata 'framework'.")
    description: Text | None = Field(None, description="Default: 'Comet experiment <name> (<key>)'.")
    tags: Tags = Field(default_factory=dict)
    model_card: JsonMap = Field(default_factory=dict, description="summary, intended_use, ...")

    @model_validator(mode="after")
    def _one_experiment(self) -> FromComet:
        if (self.experiment_key is None) == (self.registry_model is None):
            raise ValueError("give exactly one of experiment_key or registry_model")
        return self


def plots(reg: CometRegistration) -> list[dict[str, Any]]:
    """The experiment's confusion matrices and curves, ready to draw (the last one logged per name)."""
    found: dict[tuple[str, str], dict[str, Any]] = {}
    for asset in reg.assets:
        data = asset.data if isinstance(asset.data, dict) else {}
        if asset.type == "confusion-matrix" and "matrix" in data:
            found[("confusion_matrix", asset.name)] = {
                "kind": "confusion_matrix",
                "name": asset.name,
                "title": data.get("title") or "Confusion Matrix",
                "labels": data.get("labels") or [],
                "matrix": data["matrix"],
                "row_label": data.get("rowLabel") or "Actual Category",
                "column_label": data.get("columnLabel") or "Predicted Category",
            }
        elif asset.type == "curve" and "x" in data and "y" in data:
            name = data.get("name") or asset.name
            found[("curve", name)] = {"kind": "curve", "name": name, "x": data["x"], "y": data["y"]}
    return list(found.values())


def to_registration(
    reg: CometRegistration,
    registered_by: str | None,
    *,
    framework: str | None = None,
    description: str | None = None,
    tags: dict[str, str] | None = None,
    model_card: dict[str, Any] | None = None,
) -> Registration:
    """The registrar's registration of a Comet experiment. Plot data goes to the model card's
    custom_details.plots; the experiment's summary (assets without their data) to lineage.comet."""
    fields = reg.registration_fields()
    for asset in fields["lineage"]["comet"]["assets"]:
        asset.pop("data", None)
    card = dict(model_card or {})
    card["custom_details"] = {**(card.get("custom_details") or {}), "plots": plots(reg)}
    name = reg.experiment_name or reg.experiment_key
    try:
        return Registration(
            **fields,
            registered_by=registered_by,
            source="comet",
            framework=framework or reg.model.metadata.get("framework"),
            description=description or f"Comet experiment {name} ({reg.experiment_key})",
            tags=tags or {},
            model_card=card,
        )
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        raise HTTPException(422, f"the experiment cannot be registered as it is: {problems}") from None


def _json_object(raw: str | None, field: str) -> dict[str, Any]:
    if not raw:
        return {}
    try:
        value = json.loads(raw)
    except ValueError as exc:
        raise HTTPException(422, f"form field '{field}' must be a JSON object: {exc}") from None
    if not isinstance(value, dict):
        raise HTTPException(422, f"form field '{field}' must be a JSON object, not {type(value).__name__}")
    return value


def _comet_configured() -> bool:
    comet_ml = import_comet()
    return bool(comet_ml.config.get_api_key(None, comet_ml.config.get_config()))


router = APIRouter(tags=["comet"], route_class=ReadableErrors)


async def _register(
    registrar: Registrar, caller: Principal, group: str, body: Registration, imported: FromComet | None = None,
    reg: CometRegistration | None = None,
) -> VersionOut:
    """Registers `body`; for an online import (`imported`, read as `reg`), links the version to the registry
    version the registrar read, the only Comet entry its write-backs may change (services/registrar/writebacks.py)."""
    async with registrar.runtime.sessionmaker() as session:
        body, team = await access.authorise_registration(session, caller, group, body)
    pin = await registrar.check_artifact(body.artifact_uri)
    async with registrar.runtime.uow() as uow:
        try:
            version = await register(uow, group, body, registrar.settings.auto_create_groups, team=team, pin=pin)
        except UnknownGroup as exc:
            raise HTTPException(404, str(exc)) from None
        if imported is not None and reg is not None:
            link_comet_import(uow.session, version, reg, imported.workspace, caller.name)
        await uow.commit()
    return VersionOut.of(version)


@router.post(
    "/v1/groups/{group}/versions/comet-archive",
    status_code=201,
    response_model=VersionOut,
    responses={413: {"description": "archive too large"}, 422: {"description": "not a usable archive"}},
)
async def register_comet_archive(
    group: GroupName,
    registrar: RegistrarDep,
    caller: CurrentPrincipal,
    archive: Annotated[UploadFile, File(description="The .zip an OfflineExperiment wrote, unchanged.")],
    registered_by: Annotated[Name | None, Form(description="Optional: your own name")] = None,
    model_name: Annotated[Name | None, Form(description="Which logged model, when there are several.")] = None,
    framework: Annotated[Name | None, Form(description="Default: the model metadata's 'framework'.")] = None,
    description: Annotated[Text | None, Form()] = None,
    tags: Annotated[Text | None, Form(description='JSON object, e.g. {"team": "risk"}.')] = None,
    model_card: Annotated[Text | None, Form(description="JSON object: summary, intended_use, ...")] = None,
) -> VersionOut:
    """Register the next version of a group from a comet_ml OfflineExperiment archive (multipart upload).

    The archive's remote model (`log_remote_model`, an `s3://` URI that must exist) is the artifact; its
    parameters, metrics, datasets (`modelgate-lineage.json`) and plots come along. A bad archive is refused
    with 422 saying why, and nothing is registered."""
    content = await archive.read(LIMITS.max_upload_bytes + 1)  # the upload itself is capped as it arrives
    if len(content) > LIMITS.max_upload_bytes:
        raise HTTPException(413, too_large("max_upload_bytes"))
    card, tag_map = _json_object(model_card, "model_card"), _json_object(tags, "tags")
    try:
        reg = await asyncio.to_thread(parse_offline_archive, content, model_name, archive_limits(registrar.settings))
    except CometArchiveTooLarge as exc:
        raise HTTPException(413, str(exc)) from None
    except CometArchiveError as exc:
        raise HTTPException(422, str(exc)) from None
    log.info("comet_archive_read", group=group, experiment_key=reg.experiment_key, model=reg.model.name)
    body = to_registration(
        reg, registered_by, framework=framework, description=description, tags=tag_map, model_card=card
    )
    return await _register(registrar, caller, group, body)


@router.post(
    "/v1/groups/{group}/versions/comet",
    status_code=201,
    response_model=VersionOut,
    responses={422: {"description": "no such experiment, or no model"}, 502: {}, 503: {}},
)
async def register_from_comet(group: GroupName, body: FromComet, registrar: RegistrarDep, caller: CurrentPrincipal) -> VersionOut:
    """Register the next version of a group from a Comet experiment, read through comet_ml.API from the
    server in the registrar's COMET_URL_OVERRIDE with its COMET_API_KEY."""
    if not await asyncio.to_thread(_comet_configured):
        raise HTTPException(
            503,
            "Comet is not configured on the registrar: set COMET_API_KEY "
            "(and COMET_URL_OVERRIDE for a self-hosted Comet) in its environment",
        )
    from comet_ml.exceptions import CometException
    from requests import RequestException

    try:
        reg = await fetch_online_async(
            body.workspace,
            body.project,
            experiment_key=body.experiment_key,
            registry_model=body.registry_model,
            version=body.registry_version,
        )
    except CometFetchError as exc:
        raise HTTPException(422, str(exc)) from None
    except (CometException, RequestException) as exc:
        log.warning("comet_unavailable", error=repr(exc))
        raise HTTPException(502, f"Comet did not answer as expected: {type(exc).__name__}: {exc}") from None
    log.info("comet_experiment_read", group=group, experiment_key=reg.experiment_key, model=reg.model.name)
    registration = to_registration(
        reg,
        body.registered_by,
        framework=body.framework,
        description=body.description,
        tags=body.tags,
        model_card=body.model_card,
    )
    return await _register(registrar, caller, group, registration, body, reg)
