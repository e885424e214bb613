"""The policy file: the default that ships, and validation errors that say what to fix."""

from __future__ import annotations

from datetime import timedelta

import pytest
import yaml

from services.approver.policy import PolicyError, load_policy
from services.approver.settings import DEFAULT_POLICY, ApproverSettings


def test_the_default_policy_is_the_one_the_product_brief_promises():
    policy = load_policy(DEFAULT_POLICY)
    dev, test, prod = policy.stages
    assert [s.name for s in policy.stages] == ["dev", "test", "prod"]
    assert (dev.approval, dev.thresholds) == ("automatic", {"auc": ">= 0.8"})
    assert (test.approval, test.approvers, test.group) == ("manual", 1, "ml-leads")
    assert (prod.approval, prod.approvers, prod.group) == ("manual", 2, "model-risk")
    assert (prod.expires_after, prod.on_expiry, prod.escalate_to, prod.supersede) == (timedelta(hours=72), "escalate", "risk-committee", True)
    assert [c.passed for c in dev.checks({"auc": 0.8})] == [True]
    assert [c.passed for c in dev.checks({"auc": 0.7999})] == [False]
    assert policy.next_stage("dev") is test and policy.next_stage("prod") is None


def test_the_policy_file_comes_from_the_environment(tmp_path, monkeypatch):
    path = tmp_path / "mine.yaml"
    path.write_text("stages:\n  - {name: only, approval: manual, group: ops}\n")
    monkeypatch.setenv("MODELGATE_POLICY_FILE", str(path))
    settings = ApproverSettings(database_url="sqlite+aiosqlite:///unused.db")
    assert [s.name for s in load_policy(settings.policy_file).stages] == ["only"]


@pytest.mark.parametrize(
    "stages, message",
    [
        ([{"name": "dev", "approval": "automatic"}], "stages[0] (dev): stage 'dev' is automatic: give it at least one threshold"),
        ([{"name": "dev", "approval": "automatic", "thresholds": {"auc": ">= 0.8"}, "group": "x"}], "remove ['group'] (they apply to manual stages)"),
        ([{"name": "test", "approval": "manual"}], "stage 'test' is manual: name the approver group"),
        ([{"name": "test", "approval": "manual", "group": "g", "approver": 2}], "stages[0] (test).approver: unknown key"),
        ([{"name": "test", "approval": "manual", "group": "g", "approvers": 0}], "stages[0] (test).approvers: Input should be greater than or equal to 1"),
        ([{"name": "dev", "approval": "auto", "thresholds": {"auc": ">= 0.8"}}], "stages[0] (dev).approval: Input should be 'automatic' or 'manual'"),
        ([{"name": "dev", "approval": "automatic", "thresholds": {"auc": "at least 0.8"}}], "threshold 'at least 0.8' must be an operator and a number, e.g. '>= 0.8'"),
        ([{"name": "dev", "approval": "automatic", "thresholds": {"auc": ">= high"}}], "threshold '>= high' must be an operator and a number"),
        ([{"name": "p", "approval": "manual", "group": "g", "expires_after": "3 weeks"}], "duration '3 weeks' must be a positive number and a unit, e.g. 45s, 30m, 72h or 7d"),
        ([{"name": "p", "approval": "manual", "group": "g", "on_expiry": "reject"}], "stage 'p' has on_expiry but no expires_after"),
        ([{"name": "p", "approval": "manual", "group": "g", "expires_after": "1h", "on_expiry": "escalate"}], "name the wider group with escalate_to"),
        ([{"name": "p", "approval": "manual", "group": "g", "expires_after": "1h", "escalate_to": "h"}], "has escalate_to but on_expiry is not 'escalate'"),
        ([{"name": "p", "approval": "manual", "group": "g", "expires_after": "1h", "on_expiry": "escalate", "escalate_to": "g"}], "escalates to its own group 'g'"),
        ([{"name": "p", "approval": "manual", "group": "g"}, {"name": "p", "approval": "manual", "group": "h"}], "stage names must be unique; ['p'] appear more than once"),
        ([{"name": "Prod Stage", "approval": "manual", "group": "g"}], "stages[0] (Prod Stage).name: String should match pattern"),
        ([], "stages: List should have at least 1 item"),
    ],
)
def test_an_invalid_policy_says_where_and_what_to_fix(tmp_path, stages, message):
    path = tmp_path / "policy.yaml"
    path.write_text(yaml.safe_dump({"stages": stages}))
    with pytest.raises(PolicyError) as error:
        load_policy(path)
    assert message in str(error.value)
    assert str(error.value).startswith(f"policy file {path} is invalid (see docs/policy.md):")


@pytest.mark.parametrize(
    "content, message",
    [
        ("stages: [", "is not valid YAML"),
        ("- dev\n- test\n", "must be a mapping with a 'stages' list"),
        ("stage: []\n", "stage: unknown key"),
    ],
)
def test_a_malformed_policy_file_says_what_is_wrong(tmp_path, content, message):
    path = tmp_path / "policy.yaml"
    path.write_text(content)
    with pytest.raises(PolicyError, match=message):
        load_policy(path)


def test_a_missing_policy_file_names_the_variable_to_set(tmp_path):
    with pytest.raises(PolicyError, match="does not exist; point MODELGATE_POLICY_FILE at one"):
        load_policy(tmp_path / "nope.yaml")


def test_each_stage_describes_its_rule_in_words():
    dev, test, prod = load_policy(DEFAULT_POLICY).stages
    assert dev.describe() == "dev: automatic when auc >= 0.8"
    assert test.describe() == "test: 1 distinct approver(s) from ml-leads, registrant excluded; when auc >= 0.8; expires after 3d, then reject"
    assert prod.describe() == (
        "prod: 2 distinct approver(s) from model-risk, registrant excluded; when auc >= 0.8; "
        "expires after 3d, then escalate to risk-committee; a newer version supersedes a pending one"
    )
