"""The limits table (shared/limits.py) and the parsing it protects: documented, configurable, linear, and
the event parser never fails with anything but its validation error, whatever JSON it is given."""

from __future__ import annotations

import io
import json
import re
import time
import zipfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from services.registrar.comet import CometArchiveError, parse_offline_archive
from services.registrar.search import InvalidQuery, parse_metric_filter
from shared.events import parse_event
from shared.limits import MAX_JSON_DEPTH, Limits, body_limit_of, json_problem
from tests.factories import model_registered, sample_events

DOC = Path(__file__).resolve().parents[2] / "docs" / "limits.md"


def test_every_limit_is_in_docs_limits_md_with_its_setting_and_default():
    doc = DOC.read_text()
    for name, field in Limits.model_fields.items():
        row = next((line for line in doc.splitlines() if f"`MODELGATE_{name.upper()}`" in line), None)
        assert row is not None, f"docs/limits.md has no row for MODELGATE_{name.upper()}"
        assert f"{field.default:,}" in row or str(field.default) in row, row


def test_limits_come_from_the_environment_and_the_depth_stays_parseable(monkeypatch):
    monkeypatch.setenv("MODELGATE_MAX_TAGS", "5")
    assert Limits().max_tags == 5
    monkeypatch.setenv("MODELGATE_MAX_JSON_DEPTH", str(MAX_JSON_DEPTH + 1))
    with pytest.raises(ValidationError):
        Limits()


def test_every_service_parses_an_event_carrying_lineage_at_the_deepest_depth_a_setting_allows():
    """The registrar accepts up to max_json_depth (at most MAX_JSON_DEPTH); the approver must read the event."""
    lineage: dict = {}
    for _ in range(MAX_JSON_DEPTH - 1):
        lineage = {"x": lineage}
    registered = model_registered()
    event = registered.model_copy(update={"payload": registered.payload.model_copy(update={"lineage": {"comet": lineage}})})
    assert parse_event(event.model_dump_json()).payload.lineage == {"comet": lineage}


def test_the_comet_archive_upload_has_its_own_body_limit():
    assert body_limit_of("POST", "/v1/groups/fraud/versions/comet-archive") == "max_upload_bytes"
    assert body_limit_of("POST", "/v1/groups/fraud/versions") == "max_body_bytes"


def test_metric_filters_parse_as_before():
    assert parse_metric_filter("auc>=0.9") == ("auc", ">=", 0.9)
    assert parse_metric_filter("  f1 score  <  .5 ") == ("f1 score", "<", 0.5)
    assert parse_metric_filter("loss==1e-3") == ("loss", "==", 0.001)
    assert parse_metric_filter("x=-2") == ("x", "=", -2.0)
    for bad in ("auc", ">=0.9", "auc>=", "auc>=nan", "auc>=inf", "auc>=1_0", "auc>=0.9x", "auc>>1", "a>=1e", "a>=1e999"):
        with pytest.raises(InvalidQuery):
            parse_metric_filter(bad)


def test_metric_filters_parse_in_linear_time():
    """The old regex took ~1 s for 8,000 spaces and grew with the square: 100 KB would take minutes."""
    started = time.monotonic()
    for hostile in ("a" + " " * 100_000 + "x", " " * 100_000 + "=1", "a>=" + "1" * 100_000 + "x", "a" * 100_000):
        with pytest.raises(InvalidQuery):
            parse_metric_filter(hostile)
    assert time.monotonic() - started < 2.0


def test_free_form_json_of_any_depth_is_checked_without_recursion():
    deep: list = []
    for _ in range(100_000):
        deep = [deep]
    problem = json_problem({"a": deep})
    assert problem is not None and "MODELGATE_MAX_JSON_DEPTH" in problem
    assert json_problem({"ok": [1, "two", {"three": 3.0}]}) is None


def archive(experiment: object, messages: str = "") -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as z:
        z.writestr("experiment.json", json.dumps(experiment))
        z.writestr("messages.json", messages)
    return out.getvalue()


@pytest.mark.parametrize(("experiment", "messages"), [([], ""), ("text", ""), (None, ""), ({}, "[1, 2]\n"), ({}, '"x"\n')])
def test_an_archive_whose_json_is_not_objects_is_refused_saying_why(experiment, messages):
    with pytest.raises(CometArchiveError, match="must be a JSON object"):
        parse_offline_archive(archive(experiment, messages))


# ---------------------------------------------------------------- the event parser, fuzzed

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=10), inner, max_size=5),
    max_leaves=30,
)


def _mutations(event: dict) -> st.SearchStrategy[dict]:
    """A valid event with one field replaced by arbitrary JSON, at the top level or in the payload."""
    top = st.sampled_from(sorted(event)).flatmap(lambda k: JSON.map(lambda v: {**event, k: v}))
    payload = event["payload"]
    inner = st.sampled_from(sorted(payload)).flatmap(lambda k: JSON.map(lambda v: {**event, "payload": {**payload, k: v}}))
    return top | inner


EVENTS = [json.loads(e.model_dump_json()) for e in sample_events()]
BYTES = st.binary(max_size=200) | st.text(max_size=200).map(str.encode)


@seed(16)
@settings(max_examples=400, deadline=None, suppress_health_check=list(HealthCheck), database=None)
@given(st.one_of(JSON.map(json.dumps), st.sampled_from(EVENTS).flatmap(_mutations).map(json.dumps), BYTES,
                 st.integers(1, 5000).map(lambda n: "[" * n + "]" * n),
                 st.integers(1, 5000).map(lambda n: '{"payload":' * n + "1" + "}" * n)))
def test_parse_event_raises_only_its_validation_error(body):
    try:
        event = parse_event(body)
    except ValidationError:
        return
    assert re.fullmatch(r"[A-Za-z]+", event.event_type)


async def test_an_s3_name_the_client_refuses_is_a_422_not_a_try_again():
    """pin_artifact on its own (the policy check usually refuses it first): S3's client refuses the name
    before asking anyone, which is not an outage."""
    from aiobotocore.session import get_session
    from fastapi import HTTPException

    from services.registrar.pinning import pin_artifact

    session = get_session()
    async with session.create_client("s3", region_name="us-east-1", endpoint_url="http://127.0.0.1:9",
                                     aws_access_key_id="x", aws_secret_access_key="x") as s3:
        with pytest.raises(HTTPException) as refused:
            await pin_artifact(s3, "s3://bad!bucket/k")
    assert refused.value.status_code == 422
