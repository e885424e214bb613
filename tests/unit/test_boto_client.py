"""shared.infra.boto_client: LocalStack's clients come from localstack-client, real AWS's from plain boto3.

No request is sent: what is checked is where a client would send its requests and with which keys.
"""

from __future__ import annotations

from unittest import mock

import boto3
import localstack_client.session
import pytest

from shared.infra import boto_client


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("AWS_ENDPOINT_URL", "LOCALSTACK_HOST", "USE_SSL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-1")


def made_by_localstack_client(service: str, endpoint: str | None = None):  # type: ignore[no-untyped-def]
    with mock.patch.object(localstack_client.session, "Session", wraps=localstack_client.session.Session) as spy:
        client = boto_client(service, endpoint)
    return client, spy.called


def test_on_the_host_an_explicit_endpoint_goes_through_localstack_client() -> None:
    client, through_localstack_client = made_by_localstack_client("sqs", "http://127.0.0.1:4566")
    assert through_localstack_client
    assert client.meta.endpoint_url == "http://127.0.0.1:4566"
    assert client.meta.region_name == "eu-west-1"
    assert client._request_signer._credentials.access_key == "test"


def test_in_a_container_aws_endpoint_url_names_localstack(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://localstack:4566")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "000000000000")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "anything")
    client, through_localstack_client = made_by_localstack_client("secretsmanager")
    assert through_localstack_client
    assert client.meta.endpoint_url == "http://localstack:4566"
    assert client._request_signer._credentials.access_key == "000000000000"


def test_without_an_endpoint_it_is_plain_boto3_for_real_aws() -> None:
    with mock.patch.object(boto3, "client", wraps=boto3.client) as plain:
        client, through_localstack_client = made_by_localstack_client("s3")
    assert not through_localstack_client
    assert plain.call_args.kwargs == {"region_name": "eu-west-1"}  # the default credential chain, no keys
    assert client.meta.endpoint_url == "https://s3.eu-west-1.amazonaws.com"


def test_an_explicit_endpoint_wins_over_another_in_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """localstack-client prefers $AWS_ENDPOINT_URL to the host it is given: the caller's endpoint must win."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://localstack:4566")
    client = boto_client("sns", "http://127.0.0.1:4599/")
    assert client.meta.endpoint_url == "http://127.0.0.1:4599"


@pytest.mark.parametrize("endpoint", ["https://example.com/prefix", "http://127.0.0.1:5000"])
def test_any_other_endpoint_is_honoured(endpoint: str) -> None:
    assert boto_client("ecs", endpoint).meta.endpoint_url == endpoint
