"""The catalog's domain rules on an SQLite file: registration, validation, order-tolerant stage updates."""

from __future__ import annotations

from datetime import timedelta

import pytest
from pydantic import ValidationError
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import async_sessionmaker

from services.registrar.bootstrap import HANDLERS
from services.registrar.catalog import IdempotencyConflict, Registration, UnknownGroup, register
from services.registrar.models import HistoryEntry, ModelGroup, ModelVersion
from services.registrar.search import InvalidQuery, _after_words_starting_with, parse_metric_filter, words
from shared.db import OutboxRow, UnitOfWork, make_engine
from shared.migrations import prepare_database
from tests.factories import approval_decided


@pytest.fixture
async def sessionmaker(tmp_path):
    engine = make_engine(f"sqlite+aiosqlite:///{tmp_path}/registrar.db")
    await prepare_database(engine, "registrar")
    yield async_sessionmaker(engine, expire_on_commit=False)
    await engine.dispose()


def body(**fields) -> Registration:
    return Registration(**{"artifact_uri": "s3://b/m.bin", "registered_by": "ana", **fields})


async def registered(sessionmaker, group: str = "fraud", **fields) -> ModelVersion:
    async with UnitOfWork(sessionmaker) as uow:
        version = await register(uow, group, body(**fields))
        await uow.commit()
    return version


async def count(sessionmaker, table) -> int:
    async with sessionmaker() as session:
        return await session.scalar(select(func.count()).select_from(table))


async def test_versions_are_numbered_from_one_per_group(sessionmaker):
    numbers = [(await registered(sessionmaker, group)).id for group in ("fraud", "churn", "fraud", "fraud")]
    assert numbers == ["fraud/1", "churn/1", "fraud/2", "fraud/3"]
    async with sessionmaker() as session:
        assert (await session.get(ModelGroup, "fraud")).latest_version == 3


async def test_a_failure_after_the_version_was_added_leaves_nothing_behind(sessionmaker):
    async with UnitOfWork(sessionmaker) as uow:
        def broken_outbox(event):
            raise RuntimeError("disk full")

        uow.publish = broken_outbox
        with pytest.raises(RuntimeError):
            await register(uow, "fraud", body())
    assert [await count(sessionmaker, t) for t in (ModelGroup, ModelVersion, HistoryEntry, OutboxRow)] == [0, 0, 0, 0]
    assert (await registered(sessionmaker)).version == 1  # the number was given back


async def test_unknown_group_is_refused_when_groups_are_not_created_on_first_registration(sessionmaker):
    async with UnitOfWork(sessionmaker) as uow:
        with pytest.raises(UnknownGroup, match="create it first"):
            await register(uow, "fraud", body(), auto_create_group=False)
    assert await count(sessionmaker, ModelGroup) == 0


async def test_a_retry_with_the_same_idempotency_key_returns_the_first_version(sessionmaker):
    for _ in range(2):
        async with UnitOfWork(sessionmaker) as uow:
            version = await register(uow, "fraud", body(metrics={"auc": 0.9}), idempotency_key="k-1")
            await uow.commit()
        assert version.id == "fraud/1"
    async with UnitOfWork(sessionmaker) as uow:
        with pytest.raises(IdempotencyConflict, match="different registration"):
            await register(uow, "fraud", body(metrics={"auc": 0.7}), idempotency_key="k-1")
    assert await count(sessionmaker, ModelVersion) == 1 and await count(sessionmaker, OutboxRow) == 1


async def test_the_same_idempotency_key_from_two_principals_makes_two_independent_versions(sessionmaker):
    async with UnitOfWork(sessionmaker) as uow:
        ana = await register(uow, "fraud", body(metrics={"auc": 0.9}), idempotency_key="job-7")
        await uow.commit()
    for _ in range(2):  # a different body, and its retry: neither is a conflict with ana's key
        async with UnitOfWork(sessionmaker) as uow:
            bot = await register(uow, "fraud", body(registered_by="ci-bot", metrics={"auc": 0.7}), idempotency_key="job-7")
            await uow.commit()
        assert bot.id == "fraud/2" and bot.registered_by == "ci-bot"
    async with UnitOfWork(sessionmaker) as uow:
        assert (await register(uow, "fraud", body(metrics={"auc": 0.9}), idempotency_key="job-7")).id == ana.id
    assert await count(sessionmaker, ModelVersion) == 2


async def test_the_event_carries_metrics_tags_lineage_and_model_card_summary(sessionmaker):
    version = await registered(
        sessionmaker,
        metrics={"auc": 0.93},
        tags={"team": "risk"},
        model_card={"intended_use": "flag transactions for review"},
        lineage={"experiment_key": "e1", "datasets": [{"name": "tx", "version": "3", "aliases": ["raw"]}]},
    )
    async with sessionmaker() as session:
        row = await session.scalar(select(OutboxRow))
    assert row.event_type == "ModelRegistered" and version.id in row.body
    payload = __import__("json").loads(row.body)["payload"]
    assert payload["metrics"] == {"auc": 0.93} and payload["tags"] == {"team": "risk"}
    assert payload["lineage"]["datasets"][0]["aliases"] == ["raw"]
    assert payload["model_card_summary"] == "flag transactions for review"


@pytest.mark.parametrize(
    "fields, problem",
    [
        ({"metrics": {"auc": "high"}}, "metric 'auc' must be a number"),
        ({"metrics": {"auc": True}}, "metric 'auc' must be a number"),
        ({"metrics": {"auc": float("nan")}}, "finite"),
        ({"model_card": {"risk_rating": "Huge"}}, "'High', 'Medium', 'Low' or 'Unknown'"),
        ({"model_card": {"limitations": ["a list"]}}, "model_card.limitations"),
        ({"source": "jenkins"}, "'manual', 'comet' or 'sagemaker'"),
        ({"metric": {"auc": 0.9}}, "Extra inputs are not permitted"),
        ({"lineage": {"datasets": [{"version": "3"}]}}, "Field required"),
    ],
)
def test_a_malformed_registration_says_what_is_wrong(fields, problem):
    with pytest.raises(ValidationError, match=problem):
        body(**fields)


def test_comet_lineage_keeps_everything_and_exposes_the_experiment_key():
    lineage = body(lineage={"source": "comet", "comet": {"experiment_key": "abc", "project": "p"}, "datasets": []}).lineage
    dumped = lineage.model_dump(exclude_none=True)
    assert dumped["experiment_key"] == "abc" and dumped["comet"]["project"] == "p" and dumped["source"] == "comet"


@pytest.mark.parametrize(
    "text, parsed",
    [("auc>=0.9", ("auc", ">=", 0.9)), (" f1 < .5 ", ("f1", "<", 0.5)), ("loss==1e-3", ("loss", "==", 0.001)),
     ("val/auc>0.8", ("val/auc", ">", 0.8))],
)
def test_metric_filters(text, parsed):
    assert parse_metric_filter(text) == parsed


@pytest.mark.parametrize("text", ["auc", "auc>>0.9", "auc>=high", ">=0.9", "auc~0.9"])
def test_malformed_metric_filters_are_refused_with_an_example(text):
    with pytest.raises(InvalidQuery, match=r"e\.g\. auc>=0\.9"):
        parse_metric_filter(text)


def test_text_is_searched_by_words_lower_case_without_accents():
    assert words("Holiday re-train, Été 2024! holiday") == ["holiday", "re", "train", "ete", "2024"]
    assert words("%%") == []


@pytest.mark.parametrize("prefix, end", [("holi", "holj"), ("a9", "aa"), ("az", "b"), ("2", "3"), ("zz", None)])
def test_words_starting_with_a_prefix_sort_before_its_end(prefix, end):
    assert _after_words_starting_with(prefix) == end


async def deliver(sessionmaker, event) -> None:
    async with UnitOfWork(sessionmaker) as uow:
        await HANDLERS[event.event_type](event, uow)
        await uow.commit()


async def test_a_late_event_does_not_undo_a_newer_stage_status(sessionmaker):
    await registered(sessionmaker)
    approved = approval_decided(stage="test", decision="Approved")
    rejected_earlier = approval_decided(stage="test", decision="Rejected")
    rejected_earlier = rejected_earlier.model_copy(update={"occurred_at": approved.occurred_at - timedelta(seconds=5)})
    await deliver(sessionmaker, approved)
    await deliver(sessionmaker, rejected_earlier)
    async with sessionmaker() as session:
        version = await session.get(ModelVersion, "fraud/1")
        history = (await session.scalars(select(HistoryEntry.event_type).order_by(HistoryEntry.id))).all()
    assert version.stages["test"]["status"] == "Approved" and version.approval_status == "Approved"
    assert history == ["ModelRegistered", "ApprovalDecided", "ApprovalDecided"]  # the audit trail keeps both


async def test_a_rejection_in_any_stage_makes_the_version_rejected(sessionmaker):
    await registered(sessionmaker)
    await deliver(sessionmaker, approval_decided(stage="dev", decision="Approved"))
    await deliver(sessionmaker, approval_decided(stage="test", decision="Rejected", approval_id="a2"))
    async with sessionmaker() as session:
        version = await session.get(ModelVersion, "fraud/1")
    assert {s: d["status"] for s, d in version.stages.items()} == {"dev": "Approved", "test": "Rejected"}
    assert version.approval_status == "Rejected"
    assert version.stages["dev"]["decided_by"] == ["policy"]
