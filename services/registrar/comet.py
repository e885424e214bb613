"""Register model versions from Comet experiments: offline archives and the online API.

Offline: `parse_offline_archive` reads the zip a `comet_ml.OfflineExperiment` writes (experiment.json +
messages.json + the files of logged assets) without any network access.
Online: `fetch_online` reads the same facts through `comet_ml.API`; the server comes from
`COMET_URL_OVERRIDE` (or `server_url=`), the key from `COMET_API_KEY` (or `api_key=`).

Dataset lineage. Comet artifacts (`log_artifact`) exist only online, so lineage travels as an asset:
the training script calls `shared.lineage.log_dataset_lineage(experiment, datasets)`, which logs `modelgate-lineage.json`,
a JSON list of `{name, version, aliases, uri, metadata}`. It works the same on an `OfflineExperiment` and an
online `Experiment`. Online, each entry is also looked up as a Comet artifact (`API.get_artifact`, by name and
version) and, when found, its version, aliases and metadata come from Comet, so aliases moved since training
show up. See docs/comet.md.

`comet_ml` is imported lazily (it patches imports and hooks at import time) and with
`COMET_ERROR_TRACKING_ENABLE=false` defaulted, so importing it never reaches Comet's error tracker (Sentry).
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import threading
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field, ValidationError

from shared.lineage import (
    LINEAGE_ASSET,
    DatasetVersion,
    LineageError,
    datasets_from_json,
    log_dataset_lineage,  # noqa: F401  (modelgate/fraud/tracking.py still imports it here)
)

PLOT_TYPES = {"confusion-matrix", "curve"}  # small JSON assets kept inline for the console's plots
MAX_INLINE_BYTES = 1_000_000
AUTO_METRICS = {"process duration"}  # logged by comet_ml itself, not by the training script
SKIPPED_ASSET_TYPES = {"source_code"}


class CometArchiveError(ValueError):
    """The archive cannot be registered; the message says what to fix (the registrar answers 4xx)."""


class CometArchiveTooLarge(CometArchiveError):
    """The archive would inflate past a limit (a zip bomb, or simply too much): 413, nothing inflated."""


@dataclass(frozen=True)
class ArchiveLimits:
    """What an uploaded archive may hold, checked before anything is inflated (declared sizes and member
    count from the zip's directory) and while members are read (actual sizes)."""

    max_members: int = 10_000
    max_uncompressed_bytes: int = 512 * 1024 * 1024  # all members together, as declared
    max_member_bytes: int = 64 * 1024 * 1024  # each member read (experiment.json, messages.json, plots, lineage)

    def check(self, archive: zipfile.ZipFile, where: str) -> None:
        members = archive.infolist()
        if len(members) > self.max_members:
            raise CometArchiveTooLarge(f"{where} has {len(members):,} files, more than {self.max_members:,}: "
                                       "upload the OfflineExperiment's archive as it wrote it, without extra files")
        declared = sum(m.file_size for m in members)
        if declared > self.max_uncompressed_bytes:
            raise CometArchiveTooLarge(f"{where} inflates to {declared:,} bytes, more than {self.max_uncompressed_bytes:,}: "
                                       "log large files elsewhere (log_remote_asset) and upload a smaller archive")

    def read(self, archive: zipfile.ZipFile, name: str, where: str) -> bytes:
        """One member, inflated no further than its declared size and max_member_bytes."""
        info = archive.getinfo(name)
        limit = min(info.file_size, self.max_member_bytes)
        if info.file_size > self.max_member_bytes:
            raise CometArchiveTooLarge(f"{name} in {where} inflates to {info.file_size:,} bytes, more than "
                                       f"{self.max_member_bytes:,}: log less in the experiment, or split it")
        try:
            with archive.open(info) as member:
                data = member.read(limit + 1)
        except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, NotImplementedError) as exc:
            raise CometArchiveError(f"{name} in {where} cannot be read ({exc}); upload the archive unchanged") from exc
        if len(data) > limit:
            raise CometArchiveTooLarge(f"{name} in {where} inflates to more than it declares ({info.file_size:,} bytes)")
        return data


class CometFetchError(LookupError):
    """The experiment or registry model asked for is not in Comet, or has no usable model."""


class CometModel(BaseModel):
    name: str
    uri: str
    metadata: dict[str, Any] = Field(default_factory=dict)


class CometAsset(BaseModel):
    name: str
    type: str
    step: int | None = None
    asset_id: str | None = None
    uri: str | None = None  # remote assets only
    data: Any = None  # parsed JSON of confusion matrices and curves


class CometRegistration(BaseModel):
    experiment_key: str
    experiment_name: str | None = None
    project: str | None = None
    workspace: str | None = None
    tags: list[str] = Field(default_factory=list)
    params: dict[str, Any] = Field(default_factory=dict)
    metrics: dict[str, float] = Field(default_factory=dict)
    others: dict[str, Any] = Field(default_factory=dict)
    model: CometModel
    assets: list[CometAsset] = Field(default_factory=list)
    datasets: list[DatasetVersion] = Field(default_factory=list)
    registry_model: str | None = None
    registry_version: str | None = None

    def registration_fields(self) -> dict[str, Any]:
        """The parts of a registrar registration body this experiment provides."""
        comet = self.model_dump(exclude={"params", "metrics", "datasets"})
        return {
            "artifact_uri": self.model.uri,
            "metrics": self.metrics,
            "params": self.params,
            "lineage": {
                "source": "comet",
                "comet": comet,
                "datasets": [d.model_dump() for d in self.datasets],
            },
        }


def import_comet() -> Any:
    """Import comet_ml with its error tracking off unless the environment says otherwise."""
    os.environ.setdefault("COMET_ERROR_TRACKING_ENABLE", "false")
    import comet_ml

    return comet_ml


def _datasets_from_json(raw: bytes | str, where: str) -> list[DatasetVersion]:
    try:
        return datasets_from_json(raw, where)
    except LineageError as exc:
        raise CometArchiveError(str(exc)) from exc


def _json_or_none(raw: bytes) -> Any:
    if len(raw) > MAX_INLINE_BYTES:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return None


def _metadata(value: Any) -> dict[str, Any]:
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return {"value": value}
    return value if isinstance(value, dict) else {}


def _pick_model(models: dict[str, Any], wanted: str | None, where: str) -> str:
    if wanted is not None:
        if wanted not in models:
            raise CometArchiveError(
                f"{where} has no model named {wanted!r}; it has {sorted(models) or 'none'}"
            )
        return wanted
    if not models:
        raise CometArchiveError(
            f"{where} has no model logged: call experiment.log_remote_model(name, uri, metadata=...) "
            "with the model's storage URI (e.g. s3://bucket/key) before ending the experiment"
        )
    if len(models) > 1:
        raise CometArchiveError(f"{where} has several models {sorted(models)}: say which one to register")
    return next(iter(models))


# ---------------------------------------------------------------- offline


def parse_offline_archive(source: str | Path | bytes, model_name: str | None = None,
                          limits: ArchiveLimits = ArchiveLimits()) -> CometRegistration:
    """Read an OfflineExperiment zip (a path or its bytes) into a CometRegistration; an archive that would
    inflate past `limits` raises CometArchiveTooLarge before anything is inflated."""
    where = "the archive" if isinstance(source, bytes) else f"archive {str(source)!r}"
    try:
        archive = zipfile.ZipFile(io.BytesIO(source) if isinstance(source, bytes) else source)
    except (zipfile.BadZipFile, OSError) as exc:
        raise CometArchiveError(
            f"{where} is not a zip file ({exc}); upload the .zip that comet_ml.OfflineExperiment wrote"
        ) from exc
    with archive:
        limits.check(archive, where)
        experiment, messages = _read_archive(archive, where, limits)
        facts = _OfflineFacts(archive, where, limits)
        try:
            for message in messages:
                facts.add(message)
        except (KeyError, TypeError, AttributeError, ValidationError) as exc:
            raise CometArchiveError(f"{where} has a malformed messages.json entry ({exc!r})") from exc
    return facts.registration(experiment, model_name)


def _read_archive(archive: zipfile.ZipFile, where: str, limits: ArchiveLimits) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    names = set(archive.namelist())
    for required in ("experiment.json", "messages.json"):
        if required not in names:
            raise CometArchiveError(
                f"{where} has no {required}: it is not an OfflineExperiment archive "
                "(upload the .zip from the experiment's offline_directory, unchanged)"
            )
    try:
        experiment = json.loads(limits.read(archive, "experiment.json", where))
        lines = limits.read(archive, "messages.json", where).decode().splitlines()
        messages = [json.loads(line) for line in lines if line.strip()]
    except CometArchiveError:
        raise
    except (ValueError, RecursionError) as exc:
        raise CometArchiveError(f"{where} has malformed experiment.json or messages.json: {exc}") from exc
    if not isinstance(experiment, dict) or not all(isinstance(m, dict) for m in messages):
        raise CometArchiveError(f"{where} is not an OfflineExperiment archive: experiment.json must be a JSON object "
                                "and messages.json one JSON object per line (upload the .zip comet_ml wrote, unchanged)")
    return experiment, messages


@dataclass
class _OfflineFacts:
    """What an OfflineExperiment's messages.json says, gathered message by message."""

    archive: zipfile.ZipFile
    where: str
    limits: ArchiveLimits
    name: str | None = None
    params: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    others: dict[str, Any] = field(default_factory=dict)
    models: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    assets: list[CometAsset] = field(default_factory=list)
    datasets: list[DatasetVersion] = field(default_factory=list)
    names: set[str] = field(init=False)

    def __post_init__(self) -> None:
        self.names = set(self.archive.namelist())

    def add(self, message: dict[str, Any]) -> None:
        kind, payload = message.get("type"), message.get("payload") or {}
        if kind == "parameter_msg":
            param = payload["param"]
            if param.get("source") != "auto-logged":
                self.params[param["paramName"]] = param["paramValue"]
        elif kind == "metric_msg":
            self._metric(payload["metric"])
        elif kind == "log_other":
            if payload["key"] == "Name":
                self.name = payload["value"]
            elif payload["key"] != "offline_experiment" and not payload["key"].startswith("sys."):
                self.others[payload["key"]] = payload["value"]  # "sys.*" are comet_ml's own notes
        elif kind == "remote_model":
            self.models.setdefault(payload["model_name"], []).extend(payload.get("remote_assets") or [])
        elif kind in ("file_upload", "remote_file"):
            self._asset(kind, payload)

    def _metric(self, metric: dict[str, Any]) -> None:
        try:
            value = float(metric["metricValue"])
        except (TypeError, ValueError):
            return
        if metric["metricName"] not in AUTO_METRICS:
            self.metrics[metric["metricName"]] = value

    def _asset(self, kind: str, payload: dict[str, Any]) -> None:
        extra = payload.get("additional_params") or {}
        asset_type = extra.get("type") or payload.get("upload_type") or "asset"
        file_name = extra.get("fileName") or ""
        if asset_type in SKIPPED_ASSET_TYPES:
            return
        asset = CometAsset(
            name=file_name, type=asset_type, step=extra.get("step"), asset_id=extra.get("assetId"),
            uri=payload.get("remote_uri"),
        )
        member = payload.get("file_path")
        if kind == "file_upload" and member in self.names:
            if file_name == LINEAGE_ASSET:
                self.datasets = _datasets_from_json(self.limits.read(self.archive, member, self.where), self.where)
            elif asset_type in PLOT_TYPES:
                asset.data = _json_or_none(self.limits.read(self.archive, member, self.where))
        self.assets.append(asset)

    def registration(self, experiment: dict[str, Any], model_name: str | None) -> CometRegistration:
        chosen = _pick_model(self.models, model_name, self.where)
        remote = self.models[chosen]
        if not remote or not remote[0].get("remoteUrl"):
            raise CometArchiveError(
                f"model {chosen!r} in {self.where} has no remote URI; log it with log_remote_model"
            )
        return CometRegistration(
            experiment_key=experiment.get("offline_id") or experiment.get("experiment_key") or "",
            experiment_name=self.name,
            project=experiment.get("project_name"),
            workspace=experiment.get("workspace"),
            tags=list(experiment.get("tags") or []),
            params=self.params,
            metrics=self.metrics,
            others=self.others,
            model=CometModel(name=chosen, uri=remote[0]["remoteUrl"], metadata=_metadata(remote[0].get("metadata"))),
            assets=self.assets,
            datasets=self.datasets,
        )


# ---------------------------------------------------------------- online


_ENV_LOCK = threading.Lock()


@contextmanager
def comet_server(server_url: str | None) -> Iterator[None]:
    """Point comet_ml objects created inside at `server_url` (comet_ml reads COMET_URL_OVERRIDE when it
    builds its REST client, so this sets it for that moment, under a lock). None: leave the environment."""
    if not server_url:
        yield
        return
    with _ENV_LOCK:
        previous = os.environ.get("COMET_URL_OVERRIDE")
        os.environ["COMET_URL_OVERRIDE"] = server_url
        try:
            yield
        finally:
            if previous is None:
                os.environ.pop("COMET_URL_OVERRIDE", None)
            else:
                os.environ["COMET_URL_OVERRIDE"] = previous


def comet_api(api_key: str | None = None, server_url: str | None = None) -> Any:
    """A `comet_ml.API` without caching, talking to `server_url` or else COMET_URL_OVERRIDE."""
    comet_ml = import_comet()
    with comet_server(server_url):
        return comet_ml.API(api_key=api_key, cache=False)


def _value(raw: Any) -> Any:
    """Comet's REST summaries return values as strings; give numbers back their type."""
    if isinstance(raw, str):
        try:
            return json.loads(raw)
        except ValueError:
            return raw
    return raw


def _semver_key(version: str) -> tuple[int, ...]:
    return tuple(int(p) if p.isdigit() else 0 for p in version.split("-")[0].split("."))


def _resolve_dataset(api: Any, workspace: str, entry: DatasetVersion) -> DatasetVersion:
    """Refresh a lineage entry from the Comet artifact of the same name and version, when there is one."""
    from comet_ml.exceptions import ArtifactNotFound, GetArtifactException

    try:
        artifact = api.get_artifact(workspace, entry.name, version=entry.version)
    except (ArtifactNotFound, GetArtifactException):
        return entry
    uri = entry.uri or next((a.link for a in artifact.remote_assets if a.link), None)
    return DatasetVersion(
        name=artifact.name,
        version=str(artifact.version),
        aliases=sorted(artifact.aliases),
        uri=uri,
        metadata={**entry.metadata, **dict(artifact.metadata or {})},
    )


def fetch_online(
    workspace: str,
    project: str,
    experiment_key: str | None = None,
    registry_model: str | None = None,
    version: str | None = None,
    *,
    api_key: str | None = None,
    server_url: str | None = None,
) -> CometRegistration:
    """Read an experiment from Comet: by key (or name), or through a registry model version (latest when
    `version` is None). Raises CometFetchError when it or its remote model is missing."""
    api = comet_api(api_key, server_url)
    model_name = None
    if registry_model is not None:
        experiment_key, model_name, version = _registry_version(api, workspace, registry_model, version)
    if not experiment_key:
        raise ValueError("give experiment_key or registry_model")
    experiment = api.get_experiment(workspace, project, experiment_key)
    if experiment is None:
        raise CometFetchError(f"no experiment {experiment_key!r} in {workspace}/{project}")
    where = f"experiment {experiment.id}"
    model = _online_model(experiment, model_name, where)
    assets, datasets = _online_assets(experiment, where)
    others = {o["name"]: o["valueCurrent"] for o in experiment.get_others_summary()}
    return CometRegistration(
        experiment_key=experiment.id,
        experiment_name=experiment.name,
        project=experiment.project_name or project,
        workspace=experiment.workspace or workspace,
        params={p["name"]: _value(p["valueCurrent"]) for p in experiment.get_parameters_summary()},
        metrics=_online_metrics(experiment),
        others={k: v for k, v in others.items() if k not in ("Name", "offline_experiment") and not k.startswith("sys.")},
        model=model,
        assets=assets,
        datasets=[_resolve_dataset(api, workspace, d) for d in datasets],
        registry_model=registry_model,
        registry_version=version if registry_model else None,
    )


def _registry_version(api: Any, workspace: str, registry_model: str, version: str | None) -> tuple[str, str, str]:
    """The experiment key, model name and version of a registry model version (the latest when None)."""
    details = api.get_registry_model_details(workspace, registry_model)
    versions = (details or {}).get("versions") or []
    if version is None and versions:
        version = max((v["version"] for v in versions), key=_semver_key)
    chosen = next((v for v in versions if v["version"] == version), None)
    if chosen is None:
        raise CometFetchError(f"registry model {workspace}/{registry_model} has no version {version!r}")
    return chosen["experimentModel"]["experimentKey"], chosen["experimentModel"]["experimentModelName"], version  # type: ignore[return-value]


def _online_model(experiment: Any, model_name: str | None, where: str) -> CometModel:
    models = {name: None for name in experiment.get_model_names()}
    try:
        model_name = _pick_model(models, model_name, where)
    except CometArchiveError as exc:
        raise CometFetchError(str(exc)) from exc
    remote = [
        a for a in experiment.get_model_asset_list(model_name) or [] if a.get("remote") and a.get("link")
    ]
    if not remote:
        raise CometFetchError(
            f"model {model_name!r} of {where} has no remote asset: log it with log_remote_model"
        )
    return CometModel(name=model_name, uri=remote[0]["link"], metadata=_metadata(remote[0].get("metadata")))


def _online_assets(experiment: Any, where: str) -> tuple[list[CometAsset], list[DatasetVersion]]:
    assets: list[CometAsset] = []
    datasets: list[DatasetVersion] = []
    for raw in experiment.get_asset_list():
        asset = CometAsset(
            name=raw["fileName"],
            type=raw.get("type") or "asset",
            step=raw.get("step"),
            asset_id=raw.get("assetId"),
            uri=raw.get("link") if raw.get("remote") else None,
        )
        if asset.type in SKIPPED_ASSET_TYPES:
            continue
        if asset.name == LINEAGE_ASSET:
            datasets = _datasets_from_json(experiment.get_asset(asset.asset_id), where)
        elif asset.type in PLOT_TYPES and (raw.get("fileSize") or 0) <= MAX_INLINE_BYTES:
            asset.data = _json_or_none(experiment.get_asset(asset.asset_id))
        assets.append(asset)
    return assets, datasets


def _online_metrics(experiment: Any) -> dict[str, float]:
    metrics: dict[str, float] = {}
    for m in experiment.get_metrics_summary():
        try:
            if m["name"] not in AUTO_METRICS:
                metrics[m["name"]] = float(m["valueCurrent"])
        except (TypeError, ValueError):
            continue
    return metrics


async def fetch_online_async(*args: Any, **kwargs: Any) -> CometRegistration:
    """`fetch_online` in a worker thread (comet_ml is synchronous)."""
    return await asyncio.to_thread(fetch_online, *args, **kwargs)
