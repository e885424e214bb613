"""The events topic's ARN comes from the service's own queue URL, whatever form the URL takes."""

import pytest

from shared.aws import topic_arn
from shared.settings import ServiceSettings


@pytest.mark.parametrize(
    "queue_url",
    [
        "https://sqs.eu-west-1.amazonaws.com/123456789012/prod-approver",
        "http://127.0.0.1:4566/queue/eu-west-1/123456789012/prod-approver",
        "http://sqs.eu-west-1.localhost.localstack.cloud:4566/123456789012/prod-approver",
    ],
)
def test_the_topic_is_in_the_account_of_the_services_own_queue(queue_url):
    settings = ServiceSettings(service="approver", namespace="prod", aws_region="eu-west-1")
    assert topic_arn(queue_url, settings) == "arn:aws:sns:eu-west-1:123456789012:prod-events"
