"""Rollouts in the policy file, and thresholds relative to the live version (champion/challenger)."""

from __future__ import annotations

import pytest
import yaml

from services.approver.policy import PolicyError, load_policy
from shared.thresholds import parse_rule

CANARY = {"strategy": "canary", "share": 10, "bake": "10m",
          "guardrails": {"interval": "30s", "error_rate": 0.02, "latency_p99_ms": "<= live * 1.5", "psi": 0.2,
                         "disagreement": 0.1, "labels": {"auc": ">= live - 0.01"}}}


def write(tmp_path, stages):  # type: ignore[no-untyped-def]
    path = tmp_path / "policy.yaml"
    path.write_text(yaml.safe_dump({"stages": stages}))
    return path


def stage(**more):  # type: ignore[no-untyped-def]
    return {"name": "dev", "approval": "automatic", "thresholds": {"auc": ">= 0.8"}, **more}


@pytest.mark.parametrize(
    "rule, live, value, holds",
    [
        (">= 0.8", None, 0.8, True),
        (">= 0.8", None, 0.79, False),
        (">= live + 0.002", 0.9, 0.902, True),
        (">= live + 0.002", 0.9, 0.9019, False),
        (">= live * 1.01", 0.9, 0.909, True),
        (">= live * 1.01", 0.9, 0.908, False),
        ("<= live", 120.0, 120.0, True),
        ("<= live - 5", 120.0, 116.0, False),
        (">= live + 0.002", None, 0.99, None),  # nothing live: cannot be judged
        (">= live + 0.002", 0.9, None, False),  # a missing metric fails
    ],
)
def test_a_rule_is_absolute_or_relative_to_the_live_version(rule, live, value, holds):
    assert parse_rule(rule).holds(value, live) is holds


@pytest.mark.parametrize("rule", ["at least 0.8", ">= high", ">= live +", ">= live / 2", "live >= 0.8", ">= 0.8 live"])
def test_a_malformed_rule_says_what_a_rule_looks_like(rule):
    with pytest.raises(ValueError, match=r"e.g. '>= 0.8', or relative to the live version, e.g. '>= live \+ 0.002'"):
        parse_rule(rule)


def test_a_relative_threshold_compares_with_the_live_version_and_is_left_out_when_nothing_is_live(tmp_path):
    dev = load_policy(write(tmp_path, [stage(thresholds={"auc": ">= live + 0.002", "recall": ">= 0.5"})])).stages[0]
    first = dev.checks({"auc": 0.7, "recall": 0.6})
    assert [(c.metric, c.passed) for c in first] == [("recall", True)]  # no champion yet
    better, worse = dev.checks({"auc": 0.95, "recall": 0.6}, {"auc": 0.9}, "fraud/1"), dev.checks({"auc": 0.901, "recall": 0.6}, {"auc": 0.9}, "fraud/1")
    assert [(c.metric, c.passed, c.threshold) for c in better][0] == ("auc", True, pytest.approx(0.902))
    assert (better[0].rule, better[0].live_value, better[0].live_model_version_id) == (">= live + 0.002", 0.9, "fraud/1")
    assert [c.passed for c in worse] == [False, True]


def test_a_canary_is_carried_as_steps_bake_and_guardrail_rules(tmp_path):
    dev = load_policy(write(tmp_path, [stage(rollout=CANARY)])).stages[0]
    spec = dev.rollout.spec()
    assert spec is not None and (spec.strategy, spec.steps, spec.bake_seconds) == ("canary", [10.0], 600.0)
    assert spec.guardrails.interval_seconds == 30 and spec.guardrails.rules == {
        "error_rate": "<= 0.02", "latency_p99_ms": "<= live * 1.5", "psi": "<= 0.2", "disagreement": "<= 0.1", "auc": ">= live - 0.01",
    }
    assert "rollout: canary 10 % for 10m, then 100 %" in dev.describe()


def test_linear_steps_and_shadow_mirror(tmp_path):
    guard = {"error_rate": 0.05}
    linear, shadow, default = load_policy(write(tmp_path, [
        stage(rollout={"strategy": "linear", "step": 25, "bake": "1m", "guardrails": guard}),
        {**stage(rollout={"strategy": "shadow", "mirror": 100, "bake": "5m", "guardrails": guard}), "name": "test"},
        {**stage(), "name": "prod"},
    ])).stages
    assert linear.rollout.spec().steps == [25.0, 50.0, 75.0] and linear.rollout.spec().bake_seconds == 60
    assert shadow.rollout.spec().steps == [100.0] and shadow.rollout.spec().strategy == "shadow"
    assert default.rollout.strategy == "all-at-once" and default.rollout.spec() is None  # today's behaviour


@pytest.mark.parametrize(
    "rollout, message",
    [
        ({"strategy": "blue-green"}, "stages[0] (dev).rollout.strategy: Input should be 'all-at-once', 'canary', 'linear' or 'shadow'"),
        ({"strategy": "canary", "bake": "10m", "guardrails": {"psi": 0.2}}, "rollout canary: give share (share: 10)"),
        ({"strategy": "canary", "share": 10, "step": 5, "bake": "1m", "guardrails": {"psi": 0.2}}, "rollout canary: remove ['step'] (canary takes bake and share)"),
        ({"strategy": "linear", "step": 20}, "rollout linear: give bake (bake: 10m)"),
        ({"strategy": "canary", "share": 100, "bake": "1m", "guardrails": {"psi": 0.2}}, "rollout.share: Input should be less than 100"),
        ({"strategy": "canary", "share": 10, "bake": "10 minutes", "guardrails": {"psi": 0.2}}, "duration '10 minutes' must be a positive number and a unit"),
        ({"strategy": "shadow", "mirror": 50, "bake": "1m"}, "rollout shadow: give guardrails"),
        ({"strategy": "all-at-once", "guardrails": {"psi": 0.2}}, "rollout all-at-once has nothing to bake"),
        ({"strategy": "canary", "share": 10, "bake": "1m", "guardrails": {"interval": "5s"}}, "guardrails: name at least one of error_rate"),
        ({"strategy": "canary", "share": 10, "bake": "1m", "guardrails": {"psi": "below 0.2"}}, "threshold 'below 0.2' must be an operator and a number"),
        ({"strategy": "canary", "share": 10, "bake": "1m", "guardrails": {"error_rate": -1}}, "a guardrail's maximum must be 0 or more"),
        ({"strategy": "canary", "share": 10, "bake": "1m", "guardrails": {"labels": {"f1": ">= 0.5"}}}, "labels: ['f1'] unknown"),
        ({"strategy": "canary", "share": 10, "bake": "1m", "guardrails": {"psi": 0.2, "latency": 100}}, "rollout.guardrails.latency: unknown key"),
    ],
)
def test_an_invalid_rollout_says_where_and_what_to_fix(tmp_path, rollout, message):
    with pytest.raises(PolicyError) as error:
        load_policy(write(tmp_path, [stage(rollout=rollout)]))
    assert message in str(error.value)
