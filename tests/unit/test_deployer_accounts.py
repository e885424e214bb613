"""Stages in other AWS accounts: MODELGATE_TARGETS's two forms, the targets built for them, and the role's
credentials assumed once, kept, and assumed again shortly before they expire."""

from __future__ import annotations

from contextlib import AsyncExitStack
from datetime import UTC, datetime, timedelta

import pytest
from pydantic import ValidationError

from services.deployer.accounts import AccountClients, WrongAccount, open_accounts
from services.deployer.settings import DeployerSettings, StageTarget
from services.deployer.targets import (
    InAccount,
    LocalTarget,
    ParameterStoreTarget,
    SageMakerTarget,
    build_targets,
)

ROLE = "arn:aws:iam::222222222222:role/modelgate-deployer"
PROD = {"target": "parameter-store", "account": "222222222222", "role_arn": ROLE, "external_id": "mg-ext"}


def settings(tmp_path, **targets) -> DeployerSettings:  # type: ignore[no-untyped-def]
    return DeployerSettings(targets=targets, local_run_dir=tmp_path, aws_endpoint_url="http://127.0.0.1:4566",
                            sagemaker_role_arn="arn:aws:iam::000000000000:role/serve", sagemaker_image_uri="img")


def test_the_plain_string_form_keeps_working_and_an_object_names_the_account(tmp_path):
    s = settings(tmp_path, dev="local", prod=PROD)
    assert s.targets["dev"] == "local" and s.stage_target("dev") == StageTarget(target="local")
    assert s.stage_target("prod").account == "222222222222" and s.stage_target("test") == StageTarget()
    assert s.target_kinds == {"local", "parameter-store"} and set(s.other_accounts) == {"222222222222"}
    assert "sts" in s.aws_services and "sts" not in settings(tmp_path, dev="local").aws_services


@pytest.mark.parametrize(("prod", "says"), [
    ({"target": "ecs", "account": "222222222222"}, "needs both `account` and `role_arn`"),
    ({**PROD, "account": "333333333333"}, "is not in account 333333333333"),
    ({"target": "parameter-store", "external_id": "x1"}, "external_id is for the role of another account"),
    ({**PROD, "role_arn": "modelgate-deployer"}, "role_arn"),
    ({**PROD, "target": "kubernetes"}, "target"),
])
def test_a_stage_in_another_account_is_refused_unless_it_names_the_account_and_a_role_of_it(tmp_path, prod, says):
    with pytest.raises(ValidationError, match=says):
        settings(tmp_path, prod=prod)


def test_one_account_is_reached_through_one_role(tmp_path):
    other = {**PROD, "role_arn": "arn:aws:iam::222222222222:role/another"}
    with pytest.raises(ValidationError, match="through two roles"):
        settings(tmp_path, test=PROD, prod=other)


class FakeSts:
    def __init__(self, lifetime: timedelta, account: str = "222222222222"):
        self.calls: list[dict] = []
        self.lifetime, self.account = lifetime, account

    async def assume_role(self, **params):  # type: ignore[no-untyped-def]
        self.calls.append(params)
        n = len(self.calls)
        return {"Credentials": {"AccessKeyId": f"AK{n}", "SecretAccessKey": f"sk{n}", "SessionToken": f"t{n}",
                                "Expiration": datetime.now(UTC) + self.lifetime},
                "AssumedRoleUser": {"Arn": f"arn:aws:sts::{self.account}:assumed-role/modelgate-deployer/s"}}


async def test_the_role_is_assumed_with_its_external_id_on_first_use_kept_then_assumed_again_before_expiry(tmp_path):
    sts = FakeSts(timedelta(hours=1))
    account = AccountClients(StageTarget(**PROD), sts, settings(tmp_path, prod=PROD), ("ssm",))
    assert sts.calls == []  # nothing asked of STS before a call needs the account
    first = await account.credentials.get_frozen_credentials()
    again = await account.credentials.get_frozen_credentials()
    assert (first.access_key, again.access_key) == ("AK1", "AK1") and len(sts.calls) == 1
    assert sts.calls[0]["RoleArn"] == ROLE and sts.calls[0]["ExternalId"] == "mg-ext"
    assert sts.calls[0]["DurationSeconds"] == 3600 and sts.calls[0]["RoleSessionName"].startswith("modelgate-")
    sts.lifetime = timedelta(minutes=5)  # the next ones expire soon: refreshed at every use until they last
    account.credentials._expiry_time = datetime.now(UTC) + timedelta(minutes=8)  # within the last 10 minutes
    assert (await account.credentials.get_frozen_credentials()).access_key == "AK2" and account.assumed == 2


async def test_credentials_of_another_account_than_configured_are_refused(tmp_path):
    account = AccountClients(StageTarget(**PROD), FakeSts(timedelta(hours=1), account="999999999999"),
                             settings(tmp_path, prod=PROD), ("ssm",))
    with pytest.raises(WrongAccount, match="account 999999999999, not 222222222222"):
        await account.credentials.get_frozen_credentials()


async def test_a_stage_in_another_account_gets_its_target_and_pointer_client_of_that_account(tmp_path):
    sagemaker_prod = {**PROD, "target": "sagemaker", "execution_role_arn": "arn:aws:iam::222222222222:role/serve"}
    s = settings(tmp_path, dev="local", test={**PROD, "target": "local"}, prod=sagemaker_prod)
    async with AsyncExitStack() as stack:
        accounts = await open_accounts(s, FakeSts(timedelta(hours=1)), stack)
        home = {"s3": object(), "ssm": object(), "sagemaker": object()}
        targets = build_targets(s, home, accounts)
    assert isinstance(targets["dev"], LocalTarget) and targets["dev"].account is None and targets["dev"].ssm is None
    test, prod = targets["test"], targets["prod"]
    assert isinstance(test, InAccount) and test.unwrapped is targets["dev"]  # one local target: servers run here
    assert (test.name, test.account, test.ssm) == ("local", "222222222222", accounts["222222222222"]["ssm"])
    assert isinstance(prod, InAccount) and isinstance(prod.inner, SageMakerTarget)
    assert prod.inner.client is accounts["222222222222"]["sagemaker"] and prod.inner.role_arn.endswith("222222222222:role/serve")
    assert isinstance(build_targets(settings(tmp_path, prod=PROD), home, accounts)["prod"].unwrapped, ParameterStoreTarget)


def test_a_registration_names_an_inference_pipeline_whose_last_step_is_the_model():
    from services.registrar.catalog import Registration
    from shared.limits import LIMITS

    steps = [{"name": "scaler", "artifact_uri": "s3://b/scaler.skops"}, {"name": "model", "artifact_uri": "s3://b/model.ubj"}]
    assert [c.name for c in Registration(artifact_uri="s3://b/model.ubj", containers=steps).containers] == ["scaler", "model"]
    with pytest.raises(ValidationError, match="the last step is the model"):
        Registration(artifact_uri="s3://b/other.ubj", containers=steps)
    with pytest.raises(ValidationError, match="each step needs its own name"):
        Registration(artifact_uri="s3://b/model.ubj", containers=[steps[1], steps[1]])
    with pytest.raises(ValidationError, match="name"):
        Registration(artifact_uri="s3://b/model.ubj", containers=[{"name": "has space", "artifact_uri": "s3://b/model.ubj"}])
    too_many = [{"name": f"s{n}", "artifact_uri": "s3://b/model.ubj"} for n in range(LIMITS.max_containers + 1)]
    with pytest.raises(ValidationError, match="MODELGATE_MAX_CONTAINERS"):
        Registration(artifact_uri="s3://b/model.ubj", containers=too_many)


async def test_target_ecs_refuses_a_pipeline_rather_than_serve_its_model_without_the_steps_before_it():
    from services.deployer.targets import DeployError, DeploySpec, EcsTarget
    from shared.events import Container

    steps = (Container(name="scaler", artifact_uri="s3://b/s.skops"), Container(name="model", artifact_uri="s3://b/m.ubj"))
    spec = DeploySpec("d1", "fraud", "prod", 1, "fraud/1", "s3://b/m.ubj", containers=steps)
    with pytest.raises(DeployError, match="inference pipeline of 2 steps.*target local or sagemaker"):
        await EcsTarget(None, "serving", "{name}", "mg").deploy(spec)
