"""The SDK's public surface is pinned: a change to it is deliberate.

What `import modelgate` offers (its `__all__`, the methods of Client and AsyncClient with their signatures,
the fields of the answer models) must equal tests/unit/sdk_surface.json. When you change it on purpose, run
`.venv/bin/python tests/unit/test_sdk_surface.py` to rewrite the file, and say so in docs/sdk.md (removing or
renaming anything breaks users' scripts: add, deprecate, then remove).
"""

from __future__ import annotations

import inspect
import json
from pathlib import Path
from typing import Any

import modelgate

PINNED = Path(__file__).with_name("sdk_surface.json")
MODELS = ("Version", "Approval", "Deployment", "HistoryEntry", "GateVerdict", "Period")


def surface() -> dict[str, Any]:
    found: dict[str, Any] = {"__all__": sorted(modelgate.__all__)}
    for cls in (modelgate.Client, modelgate.AsyncClient):
        found[cls.__name__] = {name: str(inspect.signature(getattr(cls, name))) for name in sorted(dir(cls))
                               if not name.startswith("_") and callable(getattr(cls, name))}
    for name in MODELS:
        found[name] = sorted(getattr(modelgate, name).model_fields)
    return found


def test_the_public_surface_is_the_pinned_one():
    assert surface() == json.loads(PINNED.read_text()), (
        "the SDK's public surface changed: if on purpose, run .venv/bin/python tests/unit/test_sdk_surface.py "
        "and document the change in docs/sdk.md"
    )


def test_every_public_method_says_what_it_does():
    for cls in (modelgate.AsyncClient,):
        undocumented = [n for n in surface()[cls.__name__] if not (getattr(cls, n).__doc__ or "").strip()]
        assert undocumented in ([], ["aclose"]), f"{cls.__name__} methods without a docstring: {undocumented}"


if __name__ == "__main__":
    PINNED.write_text(json.dumps(surface(), indent=2, sort_keys=True) + "\n")
    print(f"wrote {PINNED}")
