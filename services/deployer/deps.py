"""What the deployer's routes take besides shared.http's SessionDep and UowDep."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends

from services.deployer.context import Deployer
from shared.http import context_of

DeployerDep = Annotated[Deployer, Depends(context_of)]
