"""A small local HTTP server that stands in for Comet's REST API in tests.

Comet's cloud is unreachable here, so this implements exactly the endpoints that comet_ml 3.58's `API`,
`APIExperiment`, `LoggedArtifact` and `Model` call for what modelgate uses (read from comet_ml's source:
comet_ml/connection/connection_api.py, comet_ml/api.py, comet_ml/api_objects/model/model.py):

    GET  /clientlib/isAlive/ver                      backend version check (every new REST client)
    GET  /api/rest/v2/experiment/metadata            API.get_experiment (by key)
    GET  /api/rest/v2/experiments                    API.get_experiment (by name, when the key is unknown)
    GET  /api/rest/v2/experiment/parameters          APIExperiment.get_parameters_summary
    GET  /api/rest/v2/experiment/metrics/summary     APIExperiment.get_metrics_summary
    GET  /api/rest/v2/experiment/log-other           APIExperiment.get_others_summary
    GET  /api/rest/v2/experiment/model               APIExperiment.get_model_names
    GET  /api/rest/v2/experiment/model/asset/list    APIExperiment.get_model_asset_list
    GET  /api/rest/v2/experiment/asset/list          APIExperiment.get_asset_list
    GET  /api/rest/v2/experiment/asset/get-asset     APIExperiment.get_asset
    GET  /api/rest/v2/registry-model/details         API.get_registry_model_details; Model.add_tag
    GET  /api/rest/v2/artifacts/version              API.get_artifact
    GET  /api/rest/v2/artifacts/version/files        LoggedArtifact.remote_assets
    GET  /api/rest/v2/registry-model/compact-details API.get_model (Model.from_registry)
    GET  /api/rest/v2/registry-model/item/details    Model.get_details / tags / status / set_status
    POST /api/rest/v2/write/registry-model/item/status       Model.set_status
    GET  /api/rest/v2/write/registry-model/item/stage        Model.add_tag (yes, a GET)
    GET  /api/rest/v2/write/registry-model/item/stage/delete Model.delete_tag

Anything else answers 404 and is recorded in `unknown`, so a test sees when comet_ml starts calling
something new. Every request is recorded in `requests`. Point comet_ml at it with
COMET_URL_OVERRIDE=<server.url> (which ends in /clientlib/, as Comet's own does).
"""

from __future__ import annotations

import json
import threading
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self
from urllib.parse import parse_qs, unquote, urlsplit

BACKEND_VERSION = "4.50.0"
REST = "/api/rest/v2/"
ARTIFACT_NOT_FOUND = 624523  # comet_ml turns this sdk_error_code into ArtifactNotFound


@dataclass
class Recorded:
    method: str
    path: str  # without /api/rest/v2/
    params: dict[str, str]
    body: Any = None


@dataclass
class FakeExperiment:
    key: str
    workspace: str
    project: str
    name: str | None = None
    params: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    others: dict[str, Any] = field(default_factory=dict)
    models: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # name -> model asset dicts
    assets: list[dict[str, Any]] = field(default_factory=list)
    asset_bytes: dict[str, bytes] = field(default_factory=dict)  # assetId -> content


class FakeComet:
    """State plus a threaded HTTP server; use as a context manager or call start()/stop()."""

    def __init__(self, api_key: str = "test-comet-key"):
        self.api_key = api_key
        self.experiments: dict[str, FakeExperiment] = {}
        self.registry: dict[tuple[str, str], dict[str, Any]] = {}  # (workspace, name) -> model
        self.artifacts: dict[tuple[str, str, str], dict[str, Any]] = {}  # (workspace, name, version)
        self.requests: list[Recorded] = []
        self.unknown: list[Recorded] = []
        self._server: ThreadingHTTPServer | None = None

    # ------------------------------------------------------------ seeding

    def add_experiment(self, key: str, workspace: str, project: str, **fields: Any) -> FakeExperiment:
        self.experiments[key] = FakeExperiment(key, workspace, project, **fields)
        return self.experiments[key]

    def add_asset(self, key: str, file_name: str, content: bytes, asset_type: str = "asset") -> str:
        asset_id = uuid.uuid4().hex
        self.experiments[key].assets.append(
            {
                "fileName": file_name,
                "fileSize": len(content),
                "type": asset_type,
                "assetId": asset_id,
                "remote": False,
                "link": f"{self.url}asset/{asset_id}",
                "metadata": None,
                "step": None,
            }
        )
        self.experiments[key].asset_bytes[asset_id] = content
        return asset_id

    def add_remote_model(self, key: str, model_name: str, uri: str, metadata: dict[str, Any]) -> None:
        self.experiments[key].models.setdefault(model_name, []).append(
            {
                "fileName": uri.rsplit("/", 1)[-1],
                "fileSize": 0,
                "type": "model-element",
                "assetId": uuid.uuid4().hex,
                "remote": True,
                "link": uri,
                "metadata": json.dumps(metadata),
                "dir": f"models/{model_name}",
            }
        )

    def add_registry_version(
        self,
        workspace: str,
        name: str,
        version: str,
        experiment_key: str,
        experiment_model: str,
        status: str = "None",
        tags: list[str] | None = None,
    ) -> dict[str, Any]:
        model = self.registry.setdefault(
            (workspace, name), {"registryModelId": uuid.uuid4().hex, "modelName": name, "versions": []}
        )
        item = {
            "registryModelItemId": uuid.uuid4().hex,
            "version": version,
            "status": status,
            "tags": tags or [],
            "experimentModel": {
                "experimentKey": experiment_key,
                "experimentModelId": uuid.uuid4().hex,
                "experimentModelName": experiment_model,
            },
            "comment": "",
            "createdAt": 0,
            "lastUpdated": 0,
            "userName": "fake",
        }
        model["versions"].append(item)
        return item

    def add_artifact(
        self,
        workspace: str,
        name: str,
        version: str,
        aliases: list[str],
        metadata: dict[str, Any],
        remote_uri: str | None = None,
        artifact_type: str = "dataset",
    ) -> None:
        files = []
        if remote_uri:
            files.append(
                {
                    "fileName": remote_uri.rsplit("/", 1)[-1],
                    "fileSize": 0,
                    "link": remote_uri,
                    "remote": True,
                    "type": "asset",
                    "assetId": uuid.uuid4().hex,
                    "metadata": None,
                }
            )
        self.artifacts[(workspace, name, version)] = {
            "artifactVersionId": uuid.uuid4().hex,
            "artifactVersion": version,
            "alias": aliases,
            "metadata": json.dumps(metadata),
            "tags": [],
            "sizeInBytes": 0,
            "experimentKey": None,
            "artifact": {
                "artifactId": uuid.uuid4().hex,
                "artifactName": name,
                "artifactType": artifact_type,
                "workspaceName": workspace,
                "tags": [],
            },
            "files": files,
        }

    def version_item(self, workspace: str, name: str, version: str) -> dict[str, Any]:
        return next(v for v in self.registry[(workspace, name)]["versions"] if v["version"] == version)

    def calls(self, path: str) -> list[Recorded]:
        return [r for r in self.requests if r.path == path]

    # ------------------------------------------------------------ server

    @property
    def url(self) -> str:
        assert self._server is not None, "start() the server first"
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/clientlib/"

    def start(self) -> FakeComet:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                fake._handle(self, "GET")

            def do_POST(self) -> None:
                fake._handle(self, "POST")

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        ).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _handle(self, handler: BaseHTTPRequestHandler, method: str) -> None:
        parts = urlsplit(handler.path)
        params = {k: unquote(v[-1]) for k, v in parse_qs(parts.query).items()}
        length = int(handler.headers.get("Content-Length") or 0)
        body = json.loads(handler.rfile.read(length) or b"null") if length else None
        path = parts.path.removeprefix(REST)
        record = Recorded(method, path, params, body)
        self.requests.append(record)
        if path == "/clientlib/isAlive/ver":
            status, payload = 200, {"version": BACKEND_VERSION}
        elif handler.headers.get("Authorization") != self.api_key:
            status, payload = 401, {"msg": "bad api key", "code": 401}
        else:
            route = ROUTES.get((method, path))
            if route is None:
                self.unknown.append(record)
                status, payload = 404, {"msg": f"fake Comet has no {method} {path}", "code": 404}
            else:
                status, payload = route(self, params, body)
        if isinstance(payload, bytes):
            data, content_type = payload, "application/octet-stream"
        else:
            data, content_type = json.dumps(payload).encode(), "application/json"
        handler.send_response(status)
        handler.send_header("Content-Type", content_type)
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        handler.wfile.write(data)

    # ------------------------------------------------------------ endpoints

    def _experiment(self, params: dict[str, str]) -> FakeExperiment | None:
        return self.experiments.get(params.get("experimentKey", ""))

    def _metadata(self, params: dict[str, str], body: Any) -> tuple[int, Any]:
        exp = self._experiment(params)
        if exp is None:
            return 404, {"msg": "experiment not found", "code": 404}
        return 200, self._metadata_of(exp)

    def _project_experiments(self, params: dict[str, str], body: Any) -> tuple[int, Any]:
        wanted = (params.get("workspaceName"), params.get("projectName"))
        found = [e for e in self.experiments.values() if (e.workspace, e.project) == wanted]
        return 200, {"experiments": [self._metadata_of(e) for e in found]}

    def _metadata_of(self, exp: FakeExperiment) -> dict[str, Any]:
        return {
            "experimentKey": exp.key,
            "experimentName": exp.name,
            "projectName": exp.project,
            "projectId": f"p-{exp.project}",
            "workspaceName": exp.workspace,
            "archived": False,
            "durationMillis": 1000,
            "startTimeMillis": 0,
            "endTimeMillis": 1000,
            "optimizationId": None,
            "filePath": None,
            "fileName": None,
        }

    def _models(self, params: dict[str, str], body: Any) -> tuple[int, Any]:
        exp = self._experiment(params)
        models = [
            {"experimentModelId": name, "experimentKey": exp.key, "modelName": name}
            for name in (exp.models if exp else {})
        ]
        return 200, {"models": models}

    def _model_assets(self, params: dict[str, str], body: Any) -> tuple[int, Any]:
        exp = self._experiment(params)
        return 200, {"assets": (exp.models.get(params.get("modelName", ""), []) if exp else [])}

    def _asset_list(self, params: dict[str, str], body: Any) -> tuple[int, Any]:
        exp = self._experiment(params)
        assets = exp.assets if exp else []
        wanted = params.get("type", "all")
        return 200, {"assets": [a for a in assets if wanted == "all" or a["type"] == wanted]}

    def _get_asset(self, params: dict[str, str], body: Any) -> tuple[int, Any]:
        exp = self._experiment(params)
        content = exp.asset_bytes.get(params.get("assetId", "")) if exp else None
        return (200, content) if content is not None else (404, {"msg": "asset not found", "code": 404})

    def _registry_model(self, params: dict[str, str]) -> dict[str, Any] | None:
        return self.registry.get((params.get("workspaceName", ""), params.get("modelName", "")))

    def _registry_details(self, params: dict[str, str], body: Any) -> tuple[int, Any]:
        model = self._registry_model(params)
        if model is None:
            return 404, {"msg": "registry model not found", "code": 404}
        return 200, {**model, "workspaceName": params["workspaceName"], "isPublic": False}

    def _compact_details(self, params: dict[str, str], body: Any) -> tuple[int, Any]:
        model = self._registry_model(params)
        if model is None:
            return 404, {"msg": "registry model not found", "code": 404}
        return 200, {"registryModelId": model["registryModelId"], "modelName": model["modelName"]}

    def _item_details(self, params: dict[str, str], body: Any) -> tuple[int, Any]:
        model = self._registry_model(params)
        item = next(
            (v for v in (model or {}).get("versions", []) if v["version"] == params.get("version")), None
        )
        if item is None:
            return 404, {"msg": "registry model version not found", "code": 404}
        return 200, {**item, "experimentKey": item["experimentModel"]["experimentKey"]}

    def _item(self, item_id: str | None) -> dict[str, Any] | None:
        for model in self.registry.values():
            for item in model["versions"]:
                if item["registryModelItemId"] == item_id:
                    return item
        return None

    def _set_status(self, params: dict[str, str], body: Any) -> tuple[int, Any]:
        item = self._item((body or {}).get("modelItemId"))
        if item is None:
            return 400, {"msg": "unknown modelItemId", "code": 400}
        item["status"] = body["status"]
        return 200, {}

    def _add_tag(self, params: dict[str, str], body: Any) -> tuple[int, Any]:
        item = self._item(params.get("modelItemId"))
        if item is None:
            return 400, {"msg": "unknown modelItemId", "code": 400}
        if params["stage"] not in item["tags"]:
            item["tags"].append(params["stage"])
        return 200, {}

    def _delete_tag(self, params: dict[str, str], body: Any) -> tuple[int, Any]:
        item = self._item(params.get("modelItemId"))
        if item is None:
            return 400, {"msg": "unknown modelItemId", "code": 400}
        item["tags"] = [t for t in item["tags"] if t != params["stage"]]
        return 200, {}

    def _artifact(self, params: dict[str, str]) -> dict[str, Any] | None:
        workspace, name = params.get("workspace", ""), params.get("artifactName", "")
        if "version" in params:
            return self.artifacts.get((workspace, name, params["version"]))
        alias = params.get("alias", "latest")
        found = [a for (w, n, _), a in self.artifacts.items() if (w, n) == (workspace, name)]
        if alias == "latest" and found:
            return found[-1]
        return next((a for a in found if alias in a["alias"]), None)

    def _artifact_version(self, params: dict[str, str], body: Any) -> tuple[int, Any]:
        artifact = self._artifact(params)
        if artifact is None:
            return 400, {"msg": "artifact not found", "code": 400, "sdk_error_code": ARTIFACT_NOT_FOUND}
        return 200, {k: v for k, v in artifact.items() if k != "files"}

    def _artifact_files(self, params: dict[str, str], body: Any) -> tuple[int, Any]:
        artifact = self._artifact(params)
        return 200, {"files": artifact["files"] if artifact else []}


def _summary(kind: str) -> Any:
    """experiment/parameters, metrics/summary and log-other share a shape; Comet sends values as strings."""

    def route(fake: FakeComet, params: dict[str, str], body: Any) -> tuple[int, Any]:
        exp = fake._experiment(params)
        if exp is None:
            return 404, {"msg": "experiment not found", "code": 404}
        values = dict(getattr(exp, kind))
        if kind == "others" and exp.name:
            values["Name"] = exp.name
        return 200, {
            "values": [
                {
                    "name": k,
                    "valueCurrent": v if isinstance(v, str) else json.dumps(v),
                    "valueMax": None,
                    "valueMin": None,
                }
                for k, v in values.items()
            ]
        }

    return route


ROUTES: dict[tuple[str, str], Any] = {
    ("GET", "experiment/metadata"): FakeComet._metadata,
    ("GET", "experiments"): FakeComet._project_experiments,
    ("GET", "experiment/parameters"): _summary("params"),
    ("GET", "experiment/metrics/summary"): _summary("metrics"),
    ("GET", "experiment/log-other"): _summary("others"),
    ("GET", "experiment/model"): FakeComet._models,
    ("GET", "experiment/model/asset/list"): FakeComet._model_assets,
    ("GET", "experiment/asset/list"): FakeComet._asset_list,
    ("GET", "experiment/asset/get-asset"): FakeComet._get_asset,
    ("GET", "registry-model/details"): FakeComet._registry_details,
    ("GET", "registry-model/compact-details"): FakeComet._compact_details,
    ("GET", "registry-model/item/details"): FakeComet._item_details,
    ("POST", "write/registry-model/item/status"): FakeComet._set_status,
    ("GET", "write/registry-model/item/stage"): FakeComet._add_tag,
    ("GET", "write/registry-model/item/stage/delete"): FakeComet._delete_tag,
    ("GET", "artifacts/version"): FakeComet._artifact_version,
    ("GET", "artifacts/version/files"): FakeComet._artifact_files,
}
