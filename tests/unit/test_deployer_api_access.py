"""The deployer's HTTP API through its own bootstrap: nobody rolls prod back without the operator role for
prod, and the rollback's requester is the credential's principal, never a name in the body."""

from __future__ import annotations

import httpx
import pytest
from sqlalchemy.ext.asyncio import async_sessionmaker

from services.deployer.bootstrap import bootstrap
from services.deployer.settings import DeployerSettings
from shared.app import build_app
from shared.db import create_tables, make_engine
from shared.identity import Principal
from shared.runtime import Runtime
from tests.inprocess import FakeSsm
from tests.principals import OPS, StaticAuthenticator, bearer

TEST_OPERATOR = Principal(name="tess", roles=("operator:test",))
VIEWER = Principal(name="vic", roles=("viewer",))
ROLLBACK = "/v1/groups/fraud/stages/prod/rollback"


@pytest.fixture
async def deployer(tmp_path):
    url = f"sqlite+aiosqlite:///{tmp_path}/deployer.db"
    engine = make_engine(url)
    await create_tables(engine)
    runtime = Runtime(settings=DeployerSettings(database_url=url), engine=engine,
                      sessionmaker=async_sessionmaker(engine, expire_on_commit=False), aws={"ssm": FakeSsm()})
    people = {p.name: p for p in (OPS, TEST_OPERATOR, VIEWER)}
    wiring = await bootstrap(runtime, authenticator=StaticAuthenticator(people))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=build_app(runtime, wiring)), base_url="http://d") as client:
        yield client
    await wiring.on_stop()
    await engine.dispose()


async def test_nobody_rolls_prod_back_without_the_operator_role_for_prod(deployer):
    anonymous = await deployer.post(ROLLBACK, json={"reason": "why not"})
    assert anonymous.status_code == 401 and "Authorization: Bearer" in anonymous.json()["detail"]
    viewer = await deployer.post(ROLLBACK, json={}, headers=bearer(VIEWER))
    assert viewer.status_code == 403 and "needs the operator:prod role" in viewer.json()["detail"]
    other_stage = await deployer.post(ROLLBACK, json={}, headers=bearer(TEST_OPERATOR))
    assert other_stage.status_code == 403 and "tess may not roll back fraud in prod" in other_stage.json()["detail"]
    spoofed = await deployer.post(ROLLBACK, json={"requested_by": "someone-else"}, headers=bearer(OPS))
    assert spoofed.status_code == 403 and "is not you (ops)" in spoofed.json()["detail"]
    allowed = await deployer.post(ROLLBACK, json={"reason": "alarm"}, headers=bearer(OPS))
    assert allowed.status_code == 404  # let through: there is simply nothing live in prod to roll back
    assert (await deployer.get("/v1/deployments", headers={"Authorization": ""})).status_code == 401
