"""Reflect approval decisions and deployments on the Comet registry model version (status and tags).

Configured by COMET_API_KEY and COMET_WORKSPACE (and COMET_URL_OVERRIDE for a self-hosted or stand-in
server; comet_ml reads it itself). Without a key and a workspace every call does nothing.

- approval decided: tag `<stage>-approved` or `<stage>-rejected`;
- deployed: tag `<stage>` (e.g. `dev`, `prod`) and status per stage (`STAGE_STATUS`: dev → Development,
  test → Staging, prod → Production; stages without a status only get the tag).

`model_name` and `version` are Comet's registry model name and version string (e.g. "1.0.0"), and
`experiment_key` the experiment that registry version came from when the registrar imported it (its
`comet_links` row, services/registrar/writebacks.py). Before writing, the registry version's details are read
from Comet's REST API (`registry-model/item/details`): unless its source experiment is `experiment_key`,
nothing is written and CometWritebackRefused says why. Calls are idempotent: a tag or status already present is
not written again, so a write-back done twice (the worker calls this after the event's transaction commits,
at least once) changes nothing twice.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

from services.registrar.comet import comet_api, comet_server

STAGE_STATUS = {"dev": "Development", "test": "Staging", "prod": "Production"}


class CometWritebackError(RuntimeError):
    """Comet refused or could not be reached; the caller may retry."""


class CometWritebackRefused(ValueError):
    """The registry version is not proven to be the one the modelgate version came from: never written.
    Retrying does not help; the message says why."""


def source_experiment(details: dict[str, Any]) -> str | None:
    """The experiment a registry model version was registered from, in `registry-model/item/details`."""
    return details.get("experimentKey") or (details.get("experimentModel") or {}).get("experimentKey")


class CometWriteback:
    def __init__(
        self,
        api_key: str | None,
        workspace: str | None,
        server_url: str | None = None,
        stage_status: dict[str, str] | None = None,
    ):
        self.api_key = api_key
        self.workspace = workspace
        self.server_url = server_url  # None: COMET_URL_OVERRIDE, else Comet's cloud
        self.stage_status = STAGE_STATUS if stage_status is None else stage_status
        self._models: dict[str, Any] = {}

    @classmethod
    def from_env(cls) -> CometWriteback:
        env = os.environ.get
        return cls(
            env("COMET_API_KEY") or None, env("COMET_WORKSPACE") or None, env("COMET_URL_OVERRIDE") or None
        )

    @property
    def enabled(self) -> bool:
        return bool(self.api_key and self.workspace)

    async def on_approval_decided(
        self, model_name: str, version: str, stage: str, decision: str, *, experiment_key: str | None
    ) -> list[str]:
        """Tag the version `<stage>-approved` or `<stage>-rejected`; returns the changes made."""
        approved = decision.lower().startswith("approve")
        tag = f"{stage}-{'approved' if approved else 'rejected'}"
        return await self._apply(model_name, version, experiment_key, tags=[tag], status=None)

    async def on_deployed(self, model_name: str, version: str, stage: str, *, experiment_key: str | None) -> list[str]:
        """Tag the version with the stage and set the stage's status; returns the changes made."""
        return await self._apply(model_name, version, experiment_key, tags=[stage], status=self.stage_status.get(stage))

    async def _apply(
        self, model_name: str, version: str, experiment_key: str | None, tags: list[str], status: str | None
    ) -> list[str]:
        if not self.enabled:
            return []
        return await asyncio.to_thread(self._apply_sync, model_name, str(version), experiment_key, tags, status)

    def _model(self, model_name: str) -> Any:
        if model_name not in self._models:
            with comet_server(self.server_url):  # the Model builds its own REST client from the environment
                api = comet_api(self.api_key)
                self._models[model_name] = api.get_model(self.workspace, model_name)
        return self._models[model_name]

    def _apply_sync(
        self, model_name: str, version: str, experiment_key: str | None, tags: list[str], status: str | None
    ) -> list[str]:
        from comet_ml.exceptions import CometException

        changes: list[str] = []
        try:
            model = self._model(model_name)
            details = model.get_details(version)
            self._check_source(model_name, version, details, experiment_key)
            for tag in tags:
                if tag not in (details.get("tags") or []):
                    model.add_tag(version, tag)
                    changes.append(f"tag:{tag}")
            if status and details.get("status") != status:
                model.set_status(version, status)
                changes.append(f"status:{status}")
        except (CometException, OSError) as exc:
            raise CometWritebackError(
                f"Comet write-back to {self.workspace}/{model_name} {version} failed: {exc}"
            ) from exc
        return changes

    def _check_source(self, model_name: str, version: str, details: dict[str, Any], expected: str | None) -> None:
        where = f"Comet registry model {self.workspace}/{model_name} {version}"
        if not expected:
            raise CometWritebackRefused(f"{where}: no experiment to check it against (not linked by the registrar's "
                                        "Comet import); not written")
        found = source_experiment(details or {})
        if found != expected:
            raise CometWritebackRefused(f"{where} comes from experiment {found!r}, not {expected!r} (the experiment "
                                        "the version was imported from); not written. Re-register from Comet if "
                                        "the registry version was replaced")
