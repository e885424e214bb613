"""kill -9 and AWS outages while journeys run: short versions of `make chaos` (bench/chaos.py)."""

from __future__ import annotations

import pytest

from bench.chaos import print_report, run_chaos
from bench.common import private_localstack


async def test_services_killed_at_random_lose_nothing_and_repeat_nothing(localstack_endpoint):
    report = await run_chaos(localstack_endpoint, journeys=40, rate=1.5, kill_every=2, min_kills=4, timeout=300)  # registering spans kills
    print_report(report, "kill -9 every 2 s")
    assert sum(report.kills.values()) >= 4
    assert report.registered == report.at_end_state == 40
    assert report.deployed_twice == 0 and report.history_repeats == 0
    assert report.deliveries_missing == 0 and report.deliveries_duplicated == 0
    assert report.webhook_distinct == report.deliveries_expected == 120
    assert report.groups_checked == 41 and report.stage_truth_violations == []  # 40 journeys' groups, the surge's


@pytest.fixture
def own_localstack():
    """A LocalStack of this test's own: pausing the shared one would stop everyone else's tests."""
    with private_localstack() as localstack:
        yield localstack


async def test_aws_stopping_mid_flow_is_reported_and_loses_no_journey(own_localstack):
    report = await run_chaos(
        own_localstack.endpoint, journeys=30, rate=5, kill_every=None, pause=(own_localstack.pid, 2.0, 14.0),
        timeout=300, extra_env={"MODELGATE_POLL_WAIT_SECONDS": "2"},
    )
    print_report(report, "LocalStack stopped for 14 s")
    assert report.not_ready_seen == {"registrar": True, "approver": True, "deployer": True, "notifier": True}
    assert report.registered == report.at_end_state == 30
    assert report.deployed_twice == 0 and report.deliveries_missing == 0 and report.deliveries_duplicated == 0
    assert report.stage_truth_violations == []
