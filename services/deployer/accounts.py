"""Stages in other AWS accounts: the clients of an account reached through a role it trusts.

A stage's target may name an account and a role of it (MODELGATE_TARGETS, settings.StageTarget). This
module promises:
- the deployer assumes the role (STS AssumeRole, with the ExternalId when one is set) through its own
  aiobotocore STS client, on the first call made in that account, not at start-up: an account that does not
  answer yet keeps no stage from deploying, and no other account's stage waits for it;
- the credentials are kept until shortly before they expire (botocore's refreshable credentials: refreshed
  15 minutes before expiry when a call comes, and necessarily within the last 10), then assumed again; every
  client of the account shares them;
- credentials for another account than the one configured (a role ARN that is not what it says) are refused;
- the account's clients (ssm for the pointer, sagemaker or ecs for its target) talk to the same endpoint as
  the deployer's own (AWS_ENDPOINT_URL), with the assumed credentials only.
"""

from __future__ import annotations

from contextlib import AsyncExitStack
from typing import Any

import structlog
from aiobotocore.config import AioConfig
from aiobotocore.credentials import AioDeferredRefreshableCredentials
from aiobotocore.session import get_session

from services.deployer.settings import DeployerSettings, StageTarget
from shared.aws import client_kwargs

log = structlog.get_logger()


class WrongAccount(Exception):
    """The role's credentials are another account's than the stage's configuration says."""


class AccountClients:
    """One other account's AWS clients, opened once (`open`), used like shared.aws.AwsClients."""

    def __init__(self, place: StageTarget, sts: Any, settings: DeployerSettings, services: tuple[str, ...]):
        assert place.account and place.role_arn
        self.account: str = place.account
        self.role_arn: str = place.role_arn
        self.external_id = place.external_id
        self.sts = sts
        self.settings = settings
        self.services = services
        self.assumed = 0  # how many times the role was assumed (a refresh is one more)
        self.credentials = AioDeferredRefreshableCredentials(self._assume, "sts-assume-role")
        self._clients: dict[str, Any] = {}

    async def _assume(self) -> dict[str, str]:
        """Credentials of the role, in botocore's refreshable-credentials shape."""
        extra = {"ExternalId": self.external_id} if self.external_id else {}
        response = await self.sts.assume_role(
            RoleArn=self.role_arn, RoleSessionName=f"modelgate-{self.settings.namespace}"[:64],
            DurationSeconds=self.settings.assume_role_seconds, **extra,
        )
        found = response.get("AssumedRoleUser", {}).get("Arn", "").split(":")
        if len(found) > 4 and found[4] and found[4] != self.account:
            raise WrongAccount(f"assuming {self.role_arn} gave credentials of account {found[4]}, not {self.account}: "
                               "check the stage's account and role_arn in MODELGATE_TARGETS")
        c = response["Credentials"]
        self.assumed += 1
        log.info("role_assumed", account=self.account, role_arn=self.role_arn, expires=c["Expiration"].isoformat())
        return {"access_key": c["AccessKeyId"], "secret_key": c["SecretAccessKey"], "token": c["SessionToken"],
                "expiry_time": c["Expiration"].isoformat()}

    async def open(self, stack: AsyncExitStack) -> AccountClients:
        """Creates the clients (no AWS call yet: the role is assumed on the first one); `stack` closes them."""
        session = get_session()
        session._credentials = self.credentials  # aiobotocore has no public way to hand a session refreshable credentials
        config = AioConfig(connect_timeout=5, read_timeout=30, retries={"max_attempts": 3, "mode": "standard"})
        for name in self.services:
            kwargs = {k: v for k, v in client_kwargs(self.settings, name).items() if not k.startswith("aws_")}
            self._clients[name] = await stack.enter_async_context(session.create_client(name, config=config, **kwargs))
        return self

    def __getitem__(self, name: str) -> Any:
        return self._clients[name]

    def __contains__(self, name: object) -> bool:
        return name in self._clients


async def open_accounts(settings: DeployerSettings, sts: Any, stack: AsyncExitStack) -> dict[str, AccountClients]:
    """account -> its clients, for every account a stage of MODELGATE_TARGETS lives in."""
    opened: dict[str, AccountClients] = {}
    for account, place in settings.other_accounts.items():
        kinds = {settings.stage_target(s).target for s in settings.targets if settings.stage_target(s).account == account}
        services = ("ssm",) + tuple(k for k in ("sagemaker", "ecs") if k in kinds)
        opened[account] = await AccountClients(place, sts, settings, services).open(stack)
    return opened
