"""The promotion policy: which stages, in which order, and how each is approved (docs/policy.md)."""

from __future__ import annotations

import operator
import re
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from shared.events import MetricCheck

OPS = {">=": operator.ge, ">": operator.gt, "<=": operator.le, "<": operator.lt, "==": operator.eq}
UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


class PolicyError(ValueError):
    """A policy file that cannot be used; the message says what to fix."""


class StagePolicy(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]*$", max_length=40)
    approval: Literal["automatic", "manual"]
    thresholds: dict[str, str] = Field(default_factory=dict)
    approvers: int = Field(1, ge=1, le=20)
    group: str | None = None
    expires_after: timedelta | None = None
    on_expiry: Literal["escalate", "reject"] = "reject"
    escalate_to: str | None = None
    supersede: bool = False

    @field_validator("thresholds")
    @classmethod
    def _parse_thresholds(cls, value: dict[str, str]) -> dict[str, str]:
        for rule in value.values():
            split_rule(rule)
        return value

    @field_validator("expires_after", mode="before")
    @classmethod
    def _parse_duration(cls, value: Any) -> timedelta | None:
        return None if value is None else parse_duration(value)

    @model_validator(mode="after")
    def _consistent(self) -> StagePolicy:
        given = self.model_fields_set
        if self.approval == "automatic":
            if not self.thresholds:
                raise ValueError(f"stage '{self.name}' is automatic: give it at least one threshold, e.g. auc: '>= 0.8'")
            manual_only = sorted(given & {"approvers", "group", "expires_after", "on_expiry", "escalate_to", "supersede"})
            if manual_only:
                raise ValueError(f"stage '{self.name}' is automatic: remove {manual_only} (they apply to manual stages)")
            return self
        if not self.group:
            raise ValueError(f"stage '{self.name}' is manual: name the approver group, e.g. group: ml-leads")
        if "on_expiry" in given and self.expires_after is None:
            raise ValueError(f"stage '{self.name}' has on_expiry but no expires_after (e.g. expires_after: 72h)")
        if self.on_expiry == "escalate" and not self.escalate_to:
            raise ValueError(f"stage '{self.name}' escalates on expiry: name the wider group with escalate_to")
        if self.escalate_to and self.on_expiry != "escalate":
            raise ValueError(f"stage '{self.name}' has escalate_to but on_expiry is not 'escalate'")
        if self.escalate_to and self.escalate_to == self.group:
            raise ValueError(f"stage '{self.name}' escalates to its own group '{self.group}': name a wider group")
        return self

    def checks(self, metrics: dict[str, float]) -> list[MetricCheck]:
        result = []
        for metric, rule in self.thresholds.items():
            op, threshold = split_rule(rule)
            value = metrics.get(metric)
            passed = value is not None and OPS[op](value, threshold)
            result.append(MetricCheck(metric=metric, op=op, threshold=threshold, value=value, passed=passed))
        return result

    def describe(self) -> str:
        """The rule in words, as recorded on every request, decision and audit entry."""
        when = " and ".join(f"{m} {r.strip()}" for m, r in self.thresholds.items())
        if self.approval == "automatic":
            return f"{self.name}: automatic when {when}"
        parts = [f"{self.name}: {self.approvers} distinct approver(s) from {self.group}, registrant excluded"]
        if when:
            parts.append(f"when {when}")
        if self.expires_after is not None:
            then = f"escalate to {self.escalate_to}" if self.on_expiry == "escalate" else "reject"
            parts.append(f"expires after {format_duration(self.expires_after)}, then {then}")
        if self.supersede:
            parts.append("a newer version supersedes a pending one")
        return "; ".join(parts)


class Policy(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    stages: list[StagePolicy] = Field(min_length=1)

    @field_validator("stages")
    @classmethod
    def _unique_names(cls, stages: list[StagePolicy]) -> list[StagePolicy]:
        names = [s.name for s in stages]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"stage names must be unique; {twice} appear more than once")
        return stages

    def stage(self, name: str) -> StagePolicy:
        for stage in self.stages:
            if stage.name == name:
                return stage
        raise KeyError(name)

    def next_stage(self, name: str) -> StagePolicy | None:
        names = [s.name for s in self.stages]
        index = names.index(name) + 1
        return self.stages[index] if index < len(names) else None


def split_rule(rule: str) -> tuple[str, float]:
    text = str(rule).strip()
    for op in (">=", "<=", "==", ">", "<"):
        if text.startswith(op):
            try:
                return op, float(text[len(op) :])
            except ValueError:
                break
    raise ValueError(f"threshold {rule!r} must be an operator and a number, e.g. '>= 0.8' (operators: {', '.join(OPS)})")


def parse_duration(value: Any) -> timedelta:
    if isinstance(value, timedelta):
        return value
    match = re.fullmatch(r"\s*(\d+)\s*([smhd])\s*", str(value))
    if not match or int(match.group(1)) == 0:
        raise ValueError(f"duration {value!r} must be a positive number and a unit, e.g. 45s, 30m, 72h or 7d")
    return timedelta(seconds=int(match.group(1)) * UNITS[match.group(2)])


def format_duration(duration: timedelta) -> str:
    seconds = int(duration.total_seconds())
    for unit in ("d", "h", "m"):
        if seconds % UNITS[unit] == 0:
            return f"{seconds // UNITS[unit]}{unit}"
    return f"{seconds}s"


def load_policy(path: Path) -> Policy:
    """Reads and checks a policy file; a PolicyError says which entry is wrong and how to fix it."""
    try:
        data = yaml.safe_load(Path(path).read_text())
    except FileNotFoundError:
        raise PolicyError(f"policy file {path} does not exist; point MODELGATE_POLICY_FILE at one") from None
    except yaml.YAMLError as exc:
        raise PolicyError(f"policy file {path} is not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise PolicyError(f"policy file {path} must be a mapping with a 'stages' list (see docs/policy.md)")
    try:
        return Policy.model_validate(data)
    except ValidationError as exc:
        problems = [f"  {_where(error['loc'], data)}: {_message(error)}" for error in exc.errors()]
        raise PolicyError(f"policy file {path} is invalid (see docs/policy.md):\n" + "\n".join(problems)) from None


def _where(loc: tuple[Any, ...], data: dict[str, Any]) -> str:
    """'stages[1] (test).approvers' rather than pydantic's ('stages', 1, 'approvers')."""
    text = ""
    node: Any = data
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
            node = node[part] if isinstance(node, list) and part < len(node) else None
            if isinstance(node, dict) and "name" in node:
                text += f" ({node['name']})"
        else:
            text += f".{part}" if text else str(part)
            node = node.get(part) if isinstance(node, dict) else None
    return text or "policy"


def _message(error: Any) -> str:
    message = str(error["msg"]).removeprefix("Value error, ")
    if error["type"] == "extra_forbidden":
        return "unknown key (check its spelling; see docs/policy.md for the keys a stage takes)"
    return message
