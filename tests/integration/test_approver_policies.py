"""The promotion policy at work, on SQLite and on PostgreSQL: automatic and manual stages, thresholds,
N distinct approvers, self-approval, expiry and escalation, supersession, and the audit trail."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
from sqlalchemy import text, update
from sqlalchemy.exc import DBAPIError, IntegrityError

from services.approver.expiry import ExpiryWorker
from services.approver.models import ApprovalRequest
from shared.errors import Refused
from shared.events import utcnow
from tests.helpers import eventually
from tests.integration.test_approver_harness import URLS, Approver, write_policy


@pytest.fixture
async def approver(database_url):
    approver = await Approver.start(database_url)
    yield approver
    await approver.close()


@pytest.mark.parametrize(
    "metrics, decision, reason",
    [
        ({"auc": 0.93}, "Approved", "every threshold holds: auc=0.93 (>= 0.8)"),
        ({"auc": 0.8}, "Approved", "every threshold holds: auc=0.8 (>= 0.8)"),
        ({"auc": 0.79}, "Rejected", "thresholds not met: auc=0.79 (needs >= 0.8)"),
        ({"accuracy": 0.99}, "Rejected", "thresholds not met: auc=missing (needs >= 0.8)"),
    ],
)
async def test_dev_is_decided_automatically_on_its_thresholds(approver, metrics, decision, reason):
    await approver.register("fraud", 1, metrics)
    [decided] = await approver.published("ApprovalDecided")
    assert (decided.payload.stage, decided.payload.decision, decided.payload.comment) == ("dev", decision, reason)
    assert decided.payload.automatic and decided.payload.decided_by == ["policy"]
    assert decided.payload.policy_rule == "dev: automatic when auc >= 0.8"
    assert await approver.published("ApprovalRequested") == []


async def test_after_a_deployment_the_next_stage_asks_with_what_an_approver_needs(approver):
    await approver.register("fraud", 1)
    await approver.deployed("fraud", 1, "dev")
    await approver.deployed("fraud", 1, "test")  # fraud/1 is live in test...
    await approver.register("fraud", 2, {"auc": 0.95})
    await approver.deployed("fraud", 2, "dev")  # ...when fraud/2 asks for test
    [asked] = await approver.published("ApprovalRequested", "fraud/2")
    p = asked.payload
    assert (p.stage, p.required_approvals, p.approver_group, p.registered_by) == ("test", 1, "ml-leads", "ana")
    assert [(c.metric, c.op, c.threshold, c.value, c.passed) for c in p.checks] == [("auc", ">=", 0.8, 0.95, True)]
    assert p.live_model_version_id == "fraud/1"
    assert p.model_card_summary == "Gradient boosting on card transactions."
    assert p.lineage["datasets"] == [{"name": "tx", "version": "3"}]
    assert p.decide_url == f"http://approver.test/v1/approvals/{p.approval_id}/decision"
    assert p.decide_command == f"modelgate approve {p.approval_id}"
    assert p.console_url == f"http://console.test/approvals/{p.approval_id}"
    assert p.expires_at - asked.occurred_at == pytest.approx(timedelta(hours=72), abs=timedelta(seconds=5))
    assert asked.causation_id is not None and asked.correlation_id == "fraud/2"


async def test_test_is_approved_by_one_approver_of_its_group(approver):
    await approver.register("fraud", 1)
    await approver.deployed("fraud", 1, "dev")
    request = await approver.request("fraud/1", "test")
    with pytest.raises(Refused, match="kim is not in approver group 'ml-leads'") as refused:
        await approver.vote(request.id, "kim")
    assert refused.value.status == 403
    await approver.vote(request.id, "lee", comment="looks good")
    [_, decided] = await approver.published("ApprovalDecided")
    assert (decided.payload.stage, decided.payload.decision, decided.payload.decided_by) == ("test", "Approved", ["lee"])
    assert not decided.payload.automatic and decided.payload.comment == "looks good"


async def test_prod_needs_two_distinct_approvers_and_the_registrant_never_counts(approver):
    await approver.register("fraud", 1, by="ana")
    await approver.deployed("fraud", 1, "dev")
    await approver.vote((await approver.request("fraud/1", "test")).id, "lee")
    await approver.deployed("fraud", 1, "test")
    prod = await approver.request("fraud/1", "prod")
    with pytest.raises(Refused, match="ana registered fraud/1 and cannot approve it") as refused:
        await approver.vote(prod.id, "ana")  # in model-risk, but the registrant
    assert refused.value.status == 403
    assert (await approver.vote(prod.id, "kim")).status == "pending"
    with pytest.raises(Refused, match="kim has already voted") as twice:
        await approver.vote(prod.id, "kim")
    assert twice.value.status == 409
    assert (await approver.vote(prod.id, "raj")).status == "Approved"
    decided = (await approver.published("ApprovalDecided"))[-1]
    assert (decided.payload.stage, decided.payload.decided_by) == ("prod", ["kim", "raj"])


async def test_one_rejection_with_a_comment_rejects_the_stage_and_stops_the_journey(approver):
    await approver.register("fraud", 1)
    await approver.deployed("fraud", 1, "dev")
    test = await approver.request("fraud/1", "test")
    with pytest.raises(Refused, match="a rejection needs a comment") as refused:
        await approver.vote(test.id, "lee", "Rejected", comment="  ")
    assert refused.value.status == 422
    await approver.vote(test.id, "lee", "Rejected", comment="drift on the March data")
    decided = (await approver.published("ApprovalDecided"))[-1]
    assert (decided.payload.decision, decided.payload.comment) == ("Rejected", "drift on the March data")
    with pytest.raises(Refused, match="already Rejected") as late:
        await approver.vote(test.id, "ana", comment="too late")
    assert late.value.status == 409
    assert [e.payload.stage for e in await approver.published("ApprovalRequested")] == ["test"]


async def test_a_manual_stage_whose_thresholds_fail_is_rejected_without_asking_anyone(approver, tmp_path):
    approver.policy = write_policy(
        tmp_path, [{"name": "review", "approval": "manual", "group": "ml-leads", "thresholds": {"auc": ">= 0.9", "latency_ms": "< 50"}}]
    )
    await approver.register("fraud", 1, {"auc": 0.95, "latency_ms": 80})
    [decided] = await approver.published("ApprovalDecided")
    assert decided.payload.decision == "Rejected" and decided.payload.automatic
    assert decided.payload.comment == "thresholds not met: latency_ms=80.0 (needs < 50)"
    assert await approver.published("ApprovalRequested") == []


async def test_a_request_past_its_expiry_is_rejected_when_the_policy_says_reject(approver):
    await approver.register("fraud", 1)
    await approver.deployed("fraud", 1, "dev")
    test = await approver.request("fraud/1", "test")
    assert await approver.expire_due(test.expires_at - timedelta(seconds=1)) == []
    assert await approver.expire_due(test.expires_at) == ["expired"]
    decided = (await approver.published("ApprovalDecided"))[-1]
    assert decided.payload.decision == "Rejected" and decided.payload.expired and decided.payload.automatic
    assert decided.payload.comment.startswith("expired: ml-leads did not decide by ")
    with pytest.raises(Refused, match="already Rejected: expired") as late:
        await approver.vote(test.id, "lee")
    assert late.value.status == 409
    assert await approver.expire_due(test.expires_at + timedelta(days=9)) == []


async def test_an_expired_prod_request_is_escalated_to_the_wider_group_then_rejected_if_it_expires_again(approver):
    await approver.register("fraud", 1)
    await approver.deployed("fraud", 1, "dev")
    await approver.vote((await approver.request("fraud/1", "test")).id, "lee")
    await approver.deployed("fraud", 1, "test")
    prod = await approver.request("fraud/1", "prod")
    await approver.vote(prod.id, "kim")
    with pytest.raises(Refused, match="rob is not in approver group 'model-risk'"):
        await approver.vote(prod.id, "rob")

    assert await approver.expire_due(prod.expires_at) == ["escalated"]
    escalated = (await approver.published("ApprovalRequested"))[-1]
    p = escalated.payload
    assert (p.approval_id, p.escalated, p.approver_group, p.escalated_from_group) == (prod.id, True, "risk-committee", "model-risk")
    assert p.approved_by == ["kim"] and p.expires_at > prod.expires_at
    assert (await approver.vote(prod.id, "rob")).status == "Approved"  # the wider group may now decide
    assert (await approver.published("ApprovalDecided"))[-1].payload.decided_by == ["kim", "rob"]


async def test_an_escalated_request_that_expires_again_is_rejected(approver):
    await approver.register("fraud", 1)
    await approver.deployed("fraud", 1, "dev")
    await approver.vote((await approver.request("fraud/1", "test")).id, "lee")
    await approver.deployed("fraud", 1, "test")
    prod = await approver.request("fraud/1", "prod")
    assert await approver.expire_due(prod.expires_at) == ["escalated"]
    escalated = await approver.request("fraud/1", "prod")
    assert await approver.expire_due(escalated.expires_at) == ["expired"]
    decided = (await approver.published("ApprovalDecided"))[-1]
    assert decided.payload.expired and decided.payload.comment.startswith("expired: model-risk and risk-committee did not decide")


async def prod_request(approver: Approver, version: int) -> ApprovalRequest:
    await approver.register("fraud", version)
    await approver.deployed("fraud", version, "dev")
    await approver.vote((await approver.request(f"fraud/{version}", "test")).id, "lee")
    await approver.deployed("fraud", version, "test")
    return await approver.request(f"fraud/{version}", "prod")


async def test_a_newer_version_supersedes_a_pending_prod_request_which_can_then_never_be_approved(approver):
    older = await prod_request(approver, 1)
    await approver.vote(older.id, "kim")
    newer = await prod_request(approver, 2)
    closed = await approver.request("fraud/1", "prod")
    assert (closed.status, closed.superseded_by, closed.closed_reason) == ("Rejected", "fraud/2", "superseded by fraud/2")
    decided = (await approver.published("ApprovalDecided", "fraud/1"))[-1]
    assert (decided.payload.stage, decided.payload.decision, decided.payload.superseded_by) == ("prod", "Rejected", "fraud/2")
    assert decided.correlation_id == "fraud/1"
    asked = (await approver.published("ApprovalRequested", "fraud/2"))[-1]
    assert asked.payload.supersedes == ["fraud/1"]
    with pytest.raises(Refused, match="already Rejected: superseded by fraud/2") as refused:
        await approver.vote(older.id, "raj")
    assert refused.value.status == 409
    assert [e.payload.decision for e in await approver.published("ApprovalDecided", "fraud/1") if e.payload.stage == "prod"] == ["Rejected"]
    assert (await approver.request("fraud/2", "prod")).id == newer.id and newer.status == "pending"


async def test_an_older_version_reaching_prod_after_a_newer_one_is_superseded_at_once(approver):
    await prod_request(approver, 2)
    await prod_request(approver, 1)
    late = await approver.request("fraud/1", "prod")
    assert (late.status, late.superseded_by) == ("Rejected", "fraud/2")
    assert [e.payload.stage for e in await approver.published("ApprovalRequested", "fraud/1")] == ["test"]
    assert (await approver.request("fraud/2", "prod")).status == "pending"


async def test_without_supersede_versions_wait_side_by_side(approver):
    for version in (1, 2):
        await approver.register("fraud", version)
        await approver.deployed("fraud", version, "dev")
    assert [(await approver.request(f"fraud/{v}", "test")).status for v in (1, 2)] == ["pending", "pending"]


async def test_one_open_request_per_group_and_stage_is_enforced_by_the_database(approver):
    first, second = await prod_request(approver, 1), await prod_request(approver, 2)
    async with approver.uow() as uow:  # what a concurrent twin would do: it fails, and the bus retries it
        reopen = update(ApprovalRequest).where(ApprovalRequest.id == first.id).values(open_slot="open", status="pending")
        with pytest.raises(IntegrityError):
            await uow.session.execute(reopen)
    assert second.open_slot == "open"


async def test_redelivered_and_repeated_events_open_nothing_twice(approver):
    registered = await approver.register("fraud", 1)
    await approver.deliver(registered)
    deployed = await approver.deployed("fraud", 1, "dev")
    await approver.deliver(deployed)
    await approver.deployed("fraud", 1, "dev")  # a new Deployed event for the same stage
    assert [e.event_type for e in await approver.published()] == ["ApprovalDecided", "ApprovalRequested"]


async def test_a_rollback_opens_no_stage(approver):
    await approver.register("fraud", 1)
    await approver.deployed("fraud", 1, "dev", rollback=True)
    assert await approver.published("ApprovalRequested") == []


async def test_every_step_of_a_journey_is_in_the_audit_trail_with_its_policy_rule(approver):
    older = await prod_request(approver, 1)
    await approver.vote(older.id, "kim", comment="fine")
    await prod_request(approver, 2)
    trail = await approver.audit(model_version_id="fraud/1")
    assert [(e.action, e.stage, e.actor, e.decision) for e in trail] == [
        ("requested", "dev", "policy", None),
        ("decided", "dev", "policy", "Approved"),
        ("requested", "test", "policy", None),
        ("vote", "test", "lee", "Approved"),
        ("decided", "test", "lee", "Approved"),
        ("requested", "prod", "policy", None),
        ("vote", "prod", "kim", "Approved"),
        ("superseded", "prod", "policy", "Rejected"),
    ]
    assert trail[6].reason == "fine" and trail[6].details["approvals"] == 1
    assert trail[7].reason == "superseded by fraud/2"
    assert all(e.policy_rule and e.policy_rule.startswith(e.stage) for e in trail)
    assert trail[5].policy_rule.startswith("prod: 2 distinct approver(s) from model-risk, registrant excluded")


async def test_the_audit_trail_is_append_only_in_the_database(approver):
    await approver.register("fraud", 1)
    trail = await approver.audit()
    for statement in ("UPDATE audit_log SET actor = 'mallory'", "DELETE FROM audit_log"):
        async with approver.sessionmaker() as session:
            with pytest.raises(DBAPIError, match="append-only"):
                await session.execute(text(statement))
    assert await approver.audit() == trail


async def test_the_audit_trail_filters_by_time_range(approver):
    before = utcnow()
    await approver.register("fraud", 1)
    after = utcnow()
    assert len(await approver.audit(model_version_id="fraud/1", since=before, until=after)) == 2
    assert await approver.audit(model_version_id="fraud/1", since=after) == []
    assert await approver.audit(model_version_id="fraud/1", until=before) == []
    assert len(await approver.audit(group="fraud")) == 2
    assert await approver.audit(group="fra") == []


async def test_the_background_loop_expires_what_is_due_and_stops_when_told(approver, tmp_path):
    approver.policy = write_policy(
        tmp_path,
        [
            {"name": "dev", "approval": "automatic", "thresholds": {"auc": ">= 0.8"}},
            {"name": "test", "approval": "manual", "group": "ml-leads", "expires_after": "1s", "on_expiry": "reject"},
        ],
    )
    await approver.register("fraud", 1)
    await approver.deployed("fraud", 1, "dev")
    stop = asyncio.Event()
    loop = asyncio.create_task(ExpiryWorker(approver.uow, approver.policy, URLS, every=0.05).run(stop))

    async def rejected() -> bool:
        return (await approver.request("fraud/1", "test")).status == "Rejected"

    await eventually(rejected, timeout=20)
    stop.set()
    await asyncio.wait_for(loop, timeout=10)
    assert (await approver.published("ApprovalDecided"))[-1].payload.expired


async def test_a_threshold_relative_to_live_compares_with_the_version_serving_the_stage(approver, tmp_path):
    approver.policy = write_policy(tmp_path, [{"name": "dev", "approval": "automatic", "thresholds": {"auc": ">= live + 0.002", "recall": ">= 0.5"}}])
    await approver.register("fraud", 1, {"auc": 0.9, "recall": 0.6})  # nothing live: only the absolute threshold
    await approver.deployed("fraud", 1, "dev")
    await approver.register("fraud", 2, {"auc": 0.901, "recall": 0.6})
    await approver.register("fraud", 3, {"auc": 0.95, "recall": 0.6})
    first, second, third = await approver.published("ApprovalDecided")
    assert first.payload.decision == "Approved" and first.payload.comment == "every threshold holds: recall=0.6 (>= 0.5)"
    assert second.payload.decision == "Rejected"
    assert second.payload.comment == "thresholds not met: auc=0.901 (needs >= 0.902: >= live + 0.002 with fraud/1 at 0.9)"
    assert third.payload.decision == "Approved"
    assert await approver.published("ApprovalRequested") == []  # automatic: nobody is asked
    request = await approver.request("fraud/3", "dev")
    auc = next(c for c in request.checks if c["metric"] == "auc")
    assert (auc["live_value"], auc["live_model_version_id"], auc["passed"]) == (0.9, "fraud/1", True)


async def test_an_approval_carries_the_stages_rollout_to_the_deployer(approver, tmp_path):
    canary = {"strategy": "canary", "share": 10, "bake": "10m", "guardrails": {"interval": "30s", "error_rate": 0.02}}
    approver.policy = write_policy(tmp_path, [
        {"name": "dev", "approval": "automatic", "thresholds": {"auc": ">= 0.8"}},
        {"name": "test", "approval": "manual", "group": "ml-leads", "rollout": canary},
    ])
    await approver.register("fraud", 1)
    await approver.deployed("fraud", 1, "dev")
    test = await approver.request("fraud/1", "test")
    await approver.vote(test.id, "lee")
    dev, decided = await approver.published("ApprovalDecided")
    assert dev.payload.rollout is None  # all at once, as before
    assert decided.payload.rollout is not None and decided.payload.rollout.model_dump() == {
        "strategy": "canary", "steps": [10.0], "bake_seconds": 600.0,
        "guardrails": {"interval_seconds": 30.0, "rules": {"error_rate": "<= 0.02"}, "min_requests": 20, "min_labels": 20},
    }
