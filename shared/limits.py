"""Every input limit of modelgate in one table (docs/limits.md lists them; tests/unit/test_limits.py checks
the two agree). Each is a setting, `MODELGATE_<NAME>` in the environment, read once when a process starts.

Promises:
- A request over a limit is answered 413 (body size) or 422 (everything else), and the answer names the
  limit, its value, its setting and how to stay under it; nothing over a limit reaches a handler.
- Request bodies are capped while they arrive (`BodyLimit`): a client that sends more than its route allows
  is cut off at the limit, whatever its Content-Length says.
- `bounded_json` (free-form maps: params, metadata, lineage, model card) checks depth, keys per map, items
  per list and string lengths in one walk. `MAX_JSON_DEPTH` is the ceiling every event parser can read
  (pydantic-core parses JSON up to 200 levels; an envelope adds a few), so whatever the registrar accepts the
  approver, deployer and notifier can parse.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import HTTPException, Query
from pydantic import AfterValidator, Field
from pydantic_core import PydanticCustomError
from pydantic_settings import BaseSettings, SettingsConfigDict
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

#: No setting may raise json_depth above this: the event parsers (pydantic-core, 200 levels) must read
#: every event whose payload nests user JSON json_depth deep.
MAX_JSON_DEPTH = 64


class Limits(BaseSettings):
    """The limits, with their defaults. The description of each field is its row in docs/limits.md."""

    model_config = SettingsConfigDict(env_prefix="MODELGATE_", extra="ignore")

    max_body_bytes: int = Field(1024 * 1024, ge=1024, description="Bytes of a request body (JSON routes).")
    max_upload_bytes: int = Field(100 * 1024 * 1024, ge=1024, description="Bytes of an upload (the Comet archive).")
    max_json_depth: int = Field(32, ge=2, le=MAX_JSON_DEPTH, description="Nesting depth of a free-form JSON value (params, metadata, lineage, model card).")
    max_map_keys: int = Field(200, ge=1, description="Keys in any one map of a free-form JSON value, and items in any one list.")
    max_name_length: int = Field(200, ge=1, description="Characters of a name: a map key, metric name, tag key, owner, framework.")
    max_text_length: int = Field(10_000, ge=1, description="Characters of a text: description, each model card field, a string inside free-form JSON.")
    max_tag_value_length: int = Field(500, ge=1, description="Characters of a tag value.")
    max_metrics: int = Field(500, ge=1, description="Metrics of one version.")
    max_tags: int = Field(100, ge=1, description="Tags of one version or group.")
    max_owners: int = Field(100, ge=1, description="Owners of one group.")
    max_datasets: int = Field(100, ge=1, description="Datasets in one version's lineage.")
    max_containers: int = Field(15, ge=1, le=15, description="Steps of one version's inference pipeline (`containers`; SageMaker allows 15).")
    max_container_environment: int = Field(100, ge=1, le=100, description="Environment variables of one pipeline step (SageMaker allows 100).")
    max_search_terms: int = Field(50, ge=1, description="Words of `q` plus `tag` and `metric` filters in one search.")
    max_query_length: int = Field(1000, ge=1, description="Characters of `q`, and of each `tag` or `metric` filter.")
    max_page_size: int = Field(1000, ge=1, description="`limit` of every list.")
    max_offset: int = Field(1_000_000, ge=0, description="`offset` of every list.")

    def breach(self, name: str, found: object, advice: str) -> str:
        """The sentence of a refusal: what was sent, which limit, how to stay under it."""
        return (f"{found}; the limit is {getattr(self, name)} (MODELGATE_{name.upper()}, docs/limits.md): {advice}")


LIMITS = Limits()


# ---------------------------------------------------------------- request bodies

@dataclass(frozen=True)
class RouteBody:
    """A route whose body may be larger than max_body_bytes: its method, a path pattern and its limit."""

    method: str
    path: re.Pattern[str]
    limit: str  # a field of Limits


ROUTE_BODIES = (RouteBody("POST", re.compile(r"/v1/groups/[^/]+/versions/comet-archive"), "max_upload_bytes"),)


def body_limit_of(method: str, path: str) -> str:
    """The Limits field that caps this request's body."""
    for route in ROUTE_BODIES:
        if route.method == method and route.path.fullmatch(path):
            return route.limit
    return "max_body_bytes"


def too_large(limit: str) -> str:
    what = "upload" if limit == "max_upload_bytes" else "request body"
    return LIMITS.breach(limit, f"the {what} is too large", "send less (split it, or move large data to S3 and send its URI)")


class BodyLimit:
    """ASGI middleware: 413 for a body over its route's limit, by Content-Length before anything is read, or
    while it arrives (the app's read fails at the limit, so nothing over it is buffered)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = body_limit_of(scope["method"], scope["path"])
        cap = getattr(LIMITS, limit)
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > cap):
            await JSONResponse({"detail": too_large(limit)}, status_code=413)(scope, receive, send)
            return
        received = 0

        async def capped() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > cap:
                    raise HTTPException(413, too_large(limit))
            return message

        await self.app(scope, capped, send)


# ---------------------------------------------------------------- strings, maps and free-form JSON

def _refuse(name: str, found: str, advice: str) -> PydanticCustomError:
    return PydanticCustomError("limit", "{message}", {"message": LIMITS.breach(name, found, advice)})


def _text_fits(limit: str) -> Any:
    def check(value: str) -> str:
        if len(value) > getattr(LIMITS, limit):
            raise _refuse(limit, f"{len(value)} characters", "shorten it")
        return value
    return AfterValidator(check)


def _schema(**bounds: int) -> Any:
    """The bound in the OpenAPI schema (for clients and the fuzzer); the check is the validator's."""
    return Field(json_schema_extra=bounds)  # type: ignore[arg-type]


Name = Annotated[str, _text_fits("max_name_length"), _schema(maxLength=LIMITS.max_name_length)]
Text = Annotated[str, _text_fits("max_text_length"), _schema(maxLength=LIMITS.max_text_length)]
TagValue = Annotated[str, _text_fits("max_tag_value_length"), _schema(maxLength=LIMITS.max_tag_value_length)]
SearchText = Annotated[str, _text_fits("max_query_length"), _schema(maxLength=LIMITS.max_query_length)]


def counted(limit: str, what: str) -> Any:
    """Annotated metadata capping a list's or map's size by `limit` (a field of Limits)."""
    def check(value: Any) -> Any:
        if len(value) > getattr(LIMITS, limit):
            raise _refuse(limit, f"{len(value)} {what}", f"send fewer {what}")
        return value
    return AfterValidator(check)


def _shown(where: str) -> str:
    return where if len(where) <= 60 else f"{where[:28]}...{where[-28:]}"


def json_problem(value: Any) -> str | None:
    """What breaks a limit in a free-form JSON value, or None: one walk, no recursion (so any depth is safe)."""
    stack: list[tuple[Any, int, str]] = [(value, 1, "")]
    while stack:
        item, depth, where = stack.pop()
        if isinstance(item, dict | list) and depth > LIMITS.max_json_depth:
            return LIMITS.breach("max_json_depth", f"{_shown(where) or 'it'} nests deeper than that",
                                 "flatten it, or store the structure as an S3 object and send its URI")
        if isinstance(item, dict):
            if len(item) > LIMITS.max_map_keys:
                return LIMITS.breach("max_map_keys", f"{_shown(where) or 'it'} has {len(item)} keys", "send fewer")
            for key, inner in item.items():
                if len(str(key)) > LIMITS.max_name_length:
                    return LIMITS.breach("max_name_length", f"a key of {_shown(where) or 'it'} is {len(str(key))} characters", "shorten it")
                stack.append((inner, depth + 1, f"{where}.{key}" if where else str(key)))
        elif isinstance(item, list):
            if len(item) > LIMITS.max_map_keys:
                return LIMITS.breach("max_map_keys", f"{_shown(where) or 'it'} has {len(item)} items", "send fewer")
            stack.extend((inner, depth + 1, f"{where}[{i}]") for i, inner in enumerate(item))
        elif isinstance(item, str) and len(item) > LIMITS.max_text_length:
            return LIMITS.breach("max_text_length", f"{_shown(where) or 'it'} is {len(item)} characters", "shorten it")
    return None


def _json_fits(value: Any) -> Any:
    problem = json_problem(value)
    if problem is not None:
        raise PydanticCustomError("limit", "{message}", {"message": problem})
    return value


#: A free-form JSON map (params, metadata...): within the depth, keys, items and string limits.
JsonMap = Annotated[dict[str, Any], AfterValidator(_json_fits)]


def _at_most(limit: str, advice: str) -> Any:
    def check(value: int) -> int:
        if value > getattr(LIMITS, limit):
            raise _refuse(limit, f"{value} asked for", advice)
        return value
    return AfterValidator(check)


#: `limit` and `offset` of every list route (`limit: PageLimit = 100, offset: PageOffset = 0`).
PageLimit = Annotated[int, _at_most("max_page_size", "ask for fewer rows per page and follow the next page"),
                      Query(ge=1, json_schema_extra={"minimum": 1, "maximum": LIMITS.max_page_size},
                            description=f"Rows per page, at most {LIMITS.max_page_size} (MODELGATE_MAX_PAGE_SIZE).")]
PageOffset = Annotated[int, _at_most("max_offset", "narrow the filters to reach rows further on"),
                       Query(ge=0, json_schema_extra={"minimum": 0, "maximum": LIMITS.max_offset},
                             description=f"Rows to skip, at most {LIMITS.max_offset} (MODELGATE_MAX_OFFSET).")]


#: The response header of a list with more rows: the `offset` of the next page.
NEXT_OFFSET = "X-Next-Offset"


def one_page(rows: list[Any], limit: int, offset: int, response: Response) -> list[Any]:
    """The page of `rows` (read with `limit + 1`), with NEXT_OFFSET set on `response` when there are more."""
    if len(rows) > limit:
        response.headers[NEXT_OFFSET] = str(offset + limit)
        return rows[:limit]
    return rows
