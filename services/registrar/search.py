"""Finding versions: filters, sort and pagination, each filter served by an index."""

from __future__ import annotations

import math
import operator
import re
import string
import unicodedata
from collections.abc import Callable
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from sqlalchemy import Select, and_, exists, func, intersect, select, text
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from services.registrar.models import ModelVersion, VersionMetric, VersionStage, VersionTag, VersionWord
from shared.limits import LIMITS, SearchText, counted

_NUMBER_CHARACTERS = frozenset("0123456789.eE+-")
_OPERATORS: dict[str, Callable[[Any, Any], Any]] = {
    ">=": operator.ge, ">": operator.gt, "<=": operator.le, "<": operator.lt, "==": operator.eq, "=": operator.eq
}


_ALPHABET = string.digits + string.ascii_lowercase  # the characters of words, in the order databases sort them


def words(text: str) -> list[str]:
    """The searchable words of a text: runs of letters and digits, lower-case, accents dropped."""
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode().lower()
    return list(dict.fromkeys(w[:100] for w in re.findall(r"[a-z0-9]+", ascii_text)))


def _after_words_starting_with(prefix: str) -> str | None:
    """The first string after every word that starts with `prefix` ("holi" -> "holj"); None if no end."""
    for i in range(len(prefix) - 1, -1, -1):
        if prefix[i] != "z":
            return prefix[:i] + _ALPHABET[_ALPHABET.index(prefix[i]) + 1]
    return None


class InvalidQuery(ValueError):
    """A search the registrar cannot run; the message says what to fix (answered with 422)."""


Terms = Annotated[list[SearchText], counted("max_search_terms", "filters"), Field(json_schema_extra={"maxItems": LIMITS.max_search_terms})]


class VersionQuery(BaseModel):
    """Filters combine with AND. Repeat `tag` and `metric` to require several."""

    model_config = ConfigDict(extra="forbid")

    group: str | None = Field(None, description="Only this model group.")
    status: Literal["PendingManualApproval", "Approved", "Rejected"] | None = Field(None, description="Approval status.")
    stage: str | None = Field(None, description="Versions that have reached this stage (any status)...", examples=["prod"])
    stage_status: str | None = Field(None, description="...with this status there.", examples=["Deployed"])
    tag: Terms = Field(default_factory=list, description="`key=value`, or `key` for any value.", examples=[["team=risk"]])
    metric: Terms = Field(default_factory=list, description="`name OP number`, OP one of >= > <= < ==.", examples=[["auc>=0.9"]])
    q: SearchText | None = Field(
        None,
        min_length=1,
        description="Words, or beginnings of words, all found in the version's description or its group's name.",
        examples=["fraud retrain"],
    )
    registered_by: str | None = None
    source: Literal["manual", "comet", "sagemaker"] | None = None
    sort: str = Field(
        "created_at",
        description="`created_at`, `version` (by group, then version) or `metrics.<name>` (leaves out versions without it).",
    )
    order: Literal["asc", "desc"] = "desc"
    limit: int = Field(50, ge=1, le=LIMITS.max_page_size)
    offset: int = Field(0, ge=0, le=LIMITS.max_offset)

    @model_validator(mode="after")
    def _terms_fit(self) -> VersionQuery:
        terms = len(self.tag) + len(self.metric) + len(words(self.q or ""))
        if terms > LIMITS.max_search_terms:
            raise ValueError(LIMITS.breach("max_search_terms", f"{terms} search terms (words of q, tag and metric filters)",
                                           "search with fewer words and filters, and narrow down the results"))
        return self


def parse_metric_filter(text: str) -> tuple[str, str, float]:
    """`name OP number` in one pass over the text (no regex: nothing can make it backtrack)."""
    at = next((i for i, c in enumerate(text) if c in "<>="), None)
    name = text[:at].strip() if at is not None else ""
    op = "" if at is None else text[at : at + 2] if text[at : at + 2] in (">=", "<=", "==") else text[at]
    value = text[at + len(op) :].strip() if at is not None else ""
    if name and value and set(value) <= _NUMBER_CHARACTERS and value[-1] not in "eE+-":
        try:
            number = float(value)
        except ValueError:
            pass
        else:
            if math.isfinite(number):
                return name, op, number
    shown = text if len(text) <= 80 else f"{text[:80]}..."
    raise InvalidQuery(f"metric filter {shown!r} is not NAME OP NUMBER with OP one of >= > <= < ==, e.g. auc>=0.9")


async def search_versions(
    session: AsyncSession, query: VersionQuery, only_groups: list[str] | None = None
) -> tuple[list[ModelVersion], int | None]:
    """One page of matching versions (in `only_groups`, when given), and the offset of the next page (None on
    the last one)."""
    if session.bind.dialect.name == "postgresql":  # for a page of 50, starting workers or compiling costs more
        await session.execute(
            text("SELECT set_config('max_parallel_workers_per_gather', '0', true), set_config('jit', 'off', true)")
        )
    stmt = await _statement(session, query)
    if only_groups is not None:
        stmt = stmt.where(ModelVersion.group_name.in_(only_groups))
    rows = list(await session.scalars(stmt.limit(query.limit + 1).offset(query.offset)))
    if len(rows) > query.limit:
        return rows[: query.limit], query.offset + query.limit
    return rows, None


# How a search avoids reading many rows, on SQLite (no statistics on values) as on PostgreSQL: the filters
# on metrics, tags, stages and words are counted in their indexes (up to SMALL). When one matches fewer than
# FEW versions, or the small ones have fewer than FEW in common, the query starts from those versions and
# sorts them. Otherwise versions are read in the order asked for, each checked against the filters, until
# the page is full.
SMALL = 10_000
FEW = 2_000


async def _statement(session: AsyncSession, query: VersionQuery) -> Select[tuple[ModelVersion]]:
    v = ModelVersion
    stmt = select(v)
    for column, wanted in ((v.group_name, query.group), (v.approval_status, query.status),
                           (v.registered_by, query.registered_by), (v.source, query.source)):
        if wanted is not None:
            stmt = stmt.where(column == wanted)
    filters = _row_filters(query)
    if query.sort in ("created_at", "version") and (few := await _few_matches(session, filters)) is not None:
        stmt = stmt.where(v.id.in_(few))
    for table, conditions in filters:
        stmt = stmt.where(exists().where(table.version_id == v.id, *conditions))
    return _sorted(stmt, query)


Filter = tuple[Any, list[Any]]  # (VersionMetric | VersionTag | VersionStage | VersionWord, conditions on it)


def _row_filters(query: VersionQuery) -> list[Filter]:
    filters: list[Filter] = []
    if query.stage or query.stage_status:
        conditions = [VersionStage.stage == query.stage] if query.stage else []
        if query.stage_status:
            conditions.append(VersionStage.status == query.stage_status)
        filters.append((VersionStage, conditions))
    for tag in query.tag:
        key, has_value, value = tag.partition("=")
        if not key:
            raise InvalidQuery(f"tag filter {tag!r} has no key: use key=value or key")
        filters.append((VersionTag, [VersionTag.key == key, *([VersionTag.value == value] if has_value else [])]))
    for threshold in query.metric:
        name, op, number = parse_metric_filter(threshold)
        filters.append((VersionMetric, [VersionMetric.name == name, _OPERATORS[op](VersionMetric.value, number)]))
    if query.q is not None:
        if not words(query.q):
            raise InvalidQuery(f"q={query.q!r} has no letters or digits to search for")
        for word in words(query.q):
            end = _after_words_starting_with(word)
            filters.append((VersionWord, [VersionWord.word >= word, *([VersionWord.word < end] if end else [])]))
    return filters


async def _few_matches(session: AsyncSession, filters: list[Filter]) -> Select[Any] | list[str] | None:
    """The ids that every small filter matches (or the query for them), if there are fewer than FEW."""
    if not filters:
        return None
    each = [select(table.version_id).where(*conditions) for table, conditions in filters]
    capped = (select(func.count()).select_from(m.limit(SMALL).subquery()).scalar_subquery() for m in each)
    counts = (await session.execute(select(*capped))).one()  # one round trip
    small = sorted((found, i) for i, found in enumerate(counts) if found < SMALL)
    if not small:
        return None
    fewest, first = small[0]
    if fewest < FEW:  # start from the smallest; the other filters are checked on its few versions
        return each[first]
    if len(small) == 1:
        return None
    ids = list(await session.scalars(intersect(*(each[i] for _, i in small)).limit(FEW)))
    return ids if len(ids) < FEW else None


def _sorted(stmt: Select[tuple[ModelVersion]], query: VersionQuery) -> Select[tuple[ModelVersion]]:
    def direction(column: Any) -> Any:
        return column.desc() if query.order == "desc" else column.asc()

    v = ModelVersion
    if query.sort == "created_at":
        return stmt.order_by(direction(v.created_at), direction(v.id))
    if query.sort == "version":  # by group, then version: what the (group_name, version) index gives
        return stmt.order_by(direction(v.group_name), direction(v.version))
    if query.sort.startswith("metrics.") and len(query.sort) > len("metrics."):
        by = aliased(VersionMetric)
        stmt = stmt.join(by, and_(by.version_id == v.id, by.name == query.sort.removeprefix("metrics.")))
        return stmt.order_by(direction(by.value), direction(v.id))
    raise InvalidQuery(f"cannot sort by {query.sort!r}: use created_at, version or metrics.<name>")
