"""The SageMaker bridge's part of shared/infra.py on LocalStack: the EventBridge rule sends SageMaker's model
package events (of the configured groups only) to the bridge queue, whose policy lets only EventBridge send
for that rule; provisioning twice changes nothing."""

from __future__ import annotations

import json
import uuid

from shared import infra, topology


def test_the_rule_delivers_sagemaker_events_of_the_configured_groups_to_the_bridge_queue(localstack_endpoint) -> None:
    namespace = f"smb{uuid.uuid4().hex[:8]}"
    first = infra.provision(namespace, endpoint_url=localstack_endpoint, services=(), sagemaker_bridge=True,
                            sagemaker_groups=("fraud",))
    again = infra.provision(namespace, endpoint_url=localstack_endpoint, services=(), sagemaker_bridge=True,
                            sagemaker_groups=("fraud",))
    assert f"rule {topology.sagemaker_rule_name(namespace)}" in first.created and again.created == []
    sqs, events = infra.boto_client("sqs", localstack_endpoint), infra.boto_client("events", localstack_endpoint)
    attributes = sqs.get_queue_attributes(QueueUrl=first.sagemaker_queue_url, AttributeNames=["All"])["Attributes"]
    [statement] = json.loads(attributes["Policy"])["Statement"]
    assert statement["Principal"] == {"Service": "events.amazonaws.com"}
    assert statement["Condition"] == {"ArnEquals": {"aws:SourceArn": first.sagemaker_rule_arn}}
    assert json.loads(attributes["RedrivePolicy"])["deadLetterTargetArn"].endswith(topology.sagemaker_dlq_name(namespace))

    def put(group: str) -> None:
        arn = f"arn:aws:sagemaker:us-east-1:000000000000:model-package/{group}/1"
        detail = {"ModelPackageGroupName": group, "ModelPackageVersion": 1, "ModelPackageArn": arn}
        answer = events.put_events(Entries=[{"Source": topology.SAGEMAKER_SOURCE, "DetailType": topology.SAGEMAKER_DETAIL_TYPE,
                                             "Resources": [arn], "Detail": json.dumps(detail)}])
        assert answer["FailedEntryCount"] == 0

    put("other")  # not a configured group: the rule does not match
    put("fraud")
    received = sqs.receive_message(QueueUrl=first.sagemaker_queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=5)
    bodies = [json.loads(m["Body"]) for m in received.get("Messages", [])]
    assert [b["detail"]["ModelPackageGroupName"] for b in bodies] == ["fraud"]
    assert bodies[0]["source"] == "aws.sagemaker" and bodies[0]["detail-type"] == "SageMaker Model Package State Change"


def test_without_the_bridge_nothing_of_it_is_provisioned(localstack_endpoint) -> None:
    namespace = f"smb{uuid.uuid4().hex[:8]}"
    result = infra.provision(namespace, endpoint_url=localstack_endpoint, services=())
    assert result.sagemaker_queue_url == "" and not [c for c in result.created if "sagemaker" in c]
