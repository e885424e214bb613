"""The committed JSON Schemas are what other teams' consumers are built against."""

import copy

import jsonschema

from shared import schemas
from shared.events import EVENT_CLASSES


def test_committed_schemas_are_current():
    assert schemas.committed().keys() >= schemas.generate().keys(), "run: python -m shared.schemas"
    for name, schema in schemas.generate().items():
        assert schemas.committed()[name] == schema, f"{name} changed: run 'python -m shared.schemas' and commit it"


def test_no_model_change_breaks_a_consumer_of_a_committed_schema():
    current = schemas.generate()
    for name, old in schemas.committed().items():
        if name in current:
            assert schemas.breaking_changes(old, current[name]) == [], name


def test_events_produced_today_validate_against_the_committed_schemas(sample_events):
    committed = schemas.committed()
    for event in sample_events:
        schema = committed[f"{event.event_type}.v{event.schema_version}.json"]
        jsonschema.validate(event.model_dump(mode="json"), schema)


def test_the_checker_catches_what_breaks_consumers():
    old = schemas.committed()["ApprovalDecided.v1.json"]
    new = copy.deepcopy(old)
    payload = new["$defs"]["ApprovalDecidedPayload"]
    payload["properties"]["decision"]["enum"].append("Deferred")
    payload["required"].remove("stage")
    payload["properties"]["version"] = {"type": "string"}
    problems = " ".join(schemas.breaking_changes(old, new))
    assert "decision" in problems and "stage" in problems and "version" in problems


def test_adding_an_optional_field_is_compatible():
    old = schemas.committed()["Deployed.v1.json"]
    new = copy.deepcopy(old)
    new["$defs"]["DeployedPayload"]["properties"]["region"] = {"type": "string", "default": "eu-west-1"}
    assert schemas.breaking_changes(old, new) == []


def test_every_event_type_has_a_committed_schema():
    names = {name.split(".")[0] for name in schemas.committed()}
    assert names == set(EVENT_CLASSES)
