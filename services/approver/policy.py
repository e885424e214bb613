"""The promotion policy: which stages, in which order, and how each is approved."""

from __future__ import annotations

import operator
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, Field, field_validator

from shared.events import MetricCheck

OPS = {">=": operator.ge, ">": operator.gt, "<=": operator.le, "<": operator.lt, "==": operator.eq}


class StagePolicy(BaseModel):
    name: str
    approval: Literal["automatic", "manual"]
    thresholds: dict[str, str] = Field(default_factory=dict)
    approvers: int = 1
    group: str | None = None

    @field_validator("thresholds")
    @classmethod
    def _parse_check(cls, value: dict[str, str]) -> dict[str, str]:
        for metric, rule in value.items():
            split_rule(rule)
        return value

    def checks(self, metrics: dict[str, float]) -> list[MetricCheck]:
        result = []
        for metric, rule in self.thresholds.items():
            op, threshold = split_rule(rule)
            value = metrics.get(metric)
            passed = value is not None and OPS[op](value, threshold)
            result.append(MetricCheck(metric=metric, op=op, threshold=threshold, value=value, passed=passed))
        return result

    def describe(self) -> str:
        if self.approval == "automatic":
            rules = " and ".join(f"{m} {r}" for m, r in self.thresholds.items()) or "always"
            return f"{self.name}: automatic when {rules}"
        return f"{self.name}: {self.approvers} distinct approver(s) from {self.group or 'any group'}"


def split_rule(rule: str) -> tuple[str, float]:
    rule = rule.strip()
    for op in (">=", "<=", "==", ">", "<"):
        if rule.startswith(op):
            return op, float(rule[len(op) :])
    raise ValueError(f"threshold {rule!r} must look like '>= 0.8' (one of {', '.join(OPS)})")


class Policy(BaseModel):
    stages: list[StagePolicy]

    def stage(self, name: str) -> StagePolicy:
        for stage in self.stages:
            if stage.name == name:
                return stage
        raise KeyError(name)

    def next_stage(self, name: str) -> StagePolicy | None:
        names = [s.name for s in self.stages]
        index = names.index(name) + 1
        return self.stages[index] if index < len(names) else None


def load_policy(path: Path) -> Policy:
    return Policy.model_validate(yaml.safe_load(path.read_text()))
