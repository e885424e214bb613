"""The events' JSON Schemas, committed under schemas/, and the check that a change keeps old consumers working.

    python -m shared.schemas          # regenerate schemas/<EventType>.v<schema_version>.json

A consumer built against a committed schema keeps working when every field it could rely on is still
there: a property it knew keeps its type, a required property stays required, and a closed set of
values (an enum or a const) does not grow. Adding optional fields is always fine.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from shared.events import EVENT_CLASSES
from shared.settings import REPO_ROOT

SCHEMA_DIR = REPO_ROOT / "schemas"


def schema_version(cls: type) -> int:
    return cls.model_fields["schema_version"].default


def generate() -> dict[str, dict[str, Any]]:
    return {
        f"{name}.v{schema_version(cls)}.json": cls.model_json_schema(mode="serialization")
        for name, cls in EVENT_CLASSES.items()
    }


def committed() -> dict[str, dict[str, Any]]:
    return {path.name: json.loads(path.read_text()) for path in sorted(SCHEMA_DIR.glob("*.json"))}


def write() -> list[str]:
    SCHEMA_DIR.mkdir(exist_ok=True)
    written = []
    for name, schema in generate().items():
        path = SCHEMA_DIR / name
        text = json.dumps(schema, indent=2, sort_keys=True) + "\n"
        if not path.exists() or path.read_text() != text:
            path.write_text(text)
            written.append(name)
    return written


def breaking_changes(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """What in `new` would break a consumer written against `old` (empty: compatible)."""
    return _compare(old, new, old.get("$defs", {}), new.get("$defs", {}), "$")


def _resolve(node: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in node:
        node = defs[node["$ref"].split("/")[-1]]
    return node


def _variants(node: dict[str, Any], defs: dict[str, Any]) -> list[dict[str, Any]]:
    node = _resolve(node, defs)
    options = node.get("anyOf") or node.get("oneOf")
    return [_resolve(o, defs) for o in options] if options else [node]


def _types(node: dict[str, Any], defs: dict[str, Any]) -> set[str]:
    types: set[str] = set()
    for variant in _variants(node, defs):
        kind = variant.get("type", "any")
        types.update(kind if isinstance(kind, list) else [kind])
    return types


def _compare(old: dict, new: dict, old_defs: dict, new_defs: dict, path: str) -> list[str]:
    problems: list[str] = []
    old_node, new_node = _resolve(old, old_defs), _resolve(new, new_defs)
    added_types = _types(new_node, new_defs) - _types(old_node, old_defs)
    if added_types and "any" not in _types(old_node, old_defs):
        problems.append(f"{path}: may now be {sorted(added_types)}, which old consumers do not accept")
    for key in ("enum", "const"):
        old_values = _closed_values(old_node, old_defs, key)
        new_values = _closed_values(new_node, new_defs, key)
        if old_values is not None and (new_values is None or not new_values <= old_values):
            problems.append(f"{path}: values grew beyond {sorted(map(str, old_values))}")
    old_props, new_props = old_node.get("properties", {}), new_node.get("properties", {})
    for name in old_node.get("required", []):
        if name not in new_node.get("required", []):
            problems.append(f"{path}.{name}: was required, old consumers rely on it")
    for name, old_prop in old_props.items():
        if name in new_props:
            problems.extend(_compare(old_prop, new_props[name], old_defs, new_defs, f"{path}.{name}"))
    if "items" in old_node and "items" in new_node:
        problems.extend(_compare(old_node["items"], new_node["items"], old_defs, new_defs, f"{path}[]"))
    return problems


def _closed_values(node: dict, defs: dict, key: str) -> set[Any] | None:
    values: set[Any] = set()
    for variant in _variants(node, defs):
        if key not in variant:
            if variant.get("type") == "null":
                continue
            return None
        values.update(variant[key] if key == "enum" else [variant[key]])
    return values


def main() -> None:
    written = write()
    print("\n".join(f"wrote schemas/{name}" for name in written) or "schemas are up to date")
    sys.exit(0)


if __name__ == "__main__":
    main()
