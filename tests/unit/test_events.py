import pytest
from pydantic import ValidationError

from shared.events import (
    ApprovalDecided,
    ApprovalDecidedPayload,
    ModelRegistered,
    ModelRegisteredPayload,
    parse_event,
)


def registered(**payload_overrides) -> ModelRegistered:
    payload = {
        "group": "fraud",
        "version": 3,
        "model_version_id": "fraud/3",
        "artifact_uri": "s3://b/k",
        "registered_by": "ana",
        "metrics": {"auc": 0.91},
    } | payload_overrides
    return ModelRegistered(producer="registrar", correlation_id="fraud/3", payload=ModelRegisteredPayload(**payload))


def test_an_event_round_trips_through_json_as_its_own_type():
    event = registered()
    parsed = parse_event(event.model_dump_json())
    assert isinstance(parsed, ModelRegistered)
    assert parsed == event


def test_producers_are_strict_about_unknown_fields():
    with pytest.raises(ValidationError, match="no field"):
        registered(unexpected="x")


def test_consumers_ignore_fields_they_do_not_know():
    body = registered().model_dump_json().replace('"payload":{', '"added_later":1,"payload":{"new_field":[1],')
    assert parse_event(body).payload.metrics == {"auc": 0.91}


@pytest.mark.parametrize(
    "body",
    ["not json", '{"event_type": "Nope"}', registered().model_dump_json().replace('"version":3', '"version":"three"')],
)
def test_unknown_or_invalid_events_do_not_parse(body):
    with pytest.raises(ValidationError):
        parse_event(body)


def test_a_caused_event_keeps_the_journey_and_points_at_its_cause():
    cause = registered()
    decided = cause.caused(
        ApprovalDecided,
        "approver",
        ApprovalDecidedPayload(
            group="fraud",
            version=3,
            model_version_id="fraud/3",
            approval_id="a1",
            stage="dev",
            decision="Approved",
            decided_by=["policy"],
            automatic=True,
            policy_rule="dev: automatic",
            artifact_uri="s3://b/k",
        ),
    )
    assert decided.correlation_id == "fraud/3"
    assert decided.causation_id == cause.event_id
    assert decided.event_id != cause.event_id
