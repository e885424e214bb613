"""The dataset-lineage asset a training script logs on its Comet experiment, and the registrar reads back.

Comet artifacts exist only online, so lineage travels as an asset named `modelgate-lineage.json`: a JSON list
of `{name, version, aliases, uri, metadata}` (one `DatasetVersion` each). The CLI's demo writes it and the
registrar reads it; both import the shape from here, so neither imports the other.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel, Field, ValidationError

LINEAGE_ASSET = "modelgate-lineage.json"


class DatasetVersion(BaseModel):
    name: str
    version: str | None = None
    aliases: list[str] = Field(default_factory=list)
    uri: str | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)


class LineageError(ValueError):
    """The asset is not a JSON list of dataset versions; the message says where and why."""


def log_dataset_lineage(experiment: Any, datasets: list[DatasetVersion | dict[str, Any]]) -> list[DatasetVersion]:
    """Log the datasets an experiment used as the `modelgate-lineage.json` asset (offline or online)."""
    entries = [d if isinstance(d, DatasetVersion) else DatasetVersion.model_validate(d) for d in datasets]
    body = json.dumps([e.model_dump() for e in entries], indent=2, default=str)
    experiment.log_asset_data(body, name=LINEAGE_ASSET, overwrite=True)
    return entries


def datasets_from_json(raw: bytes | str, where: str) -> list[DatasetVersion]:
    """The dataset versions in a lineage asset's content; LineageError when it is not a list of them."""
    try:
        items = json.loads(raw)
        if not isinstance(items, list):
            raise TypeError("expected a JSON list")
        return [DatasetVersion.model_validate(item) for item in items]
    except (ValueError, TypeError, ValidationError) as exc:
        raise LineageError(
            f"{LINEAGE_ASSET} in {where} is not a list of {{name, version, aliases, uri, metadata}}: {exc}"
        ) from exc
