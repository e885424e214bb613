"""The deployer's own parts, built once by bootstrap.py and reached by routes through DeployerDep."""

from __future__ import annotations

import asyncio
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from typing import Any

from services.deployer.deploy import DeployOptions
from services.deployer.settings import DeployerSettings
from services.deployer.targets import Target
from shared.runtime import Runtime


@dataclass
class Deployer:
    runtime: Runtime[DeployerSettings]
    ssm: Any
    targets: dict[str, Target]
    options: DeployOptions
    wake: asyncio.Event = field(default_factory=asyncio.Event)  # set when a deployment is recorded
    accounts: dict[str, Any] = field(default_factory=dict)  # account -> AccountClients (services/deployer/accounts.py)
    stack: AsyncExitStack = field(default_factory=AsyncExitStack)  # closes the other accounts' clients

    async def close(self) -> None:
        for target in {id(t.unwrapped): t.unwrapped for t in self.targets.values()}.values():
            await target.close()
        await self.stack.aclose()
