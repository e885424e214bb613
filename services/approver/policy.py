"""The promotion policy: which stages, in which order, and how each is approved (docs/policy.md)."""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from shared.events import GuardrailSpec, MetricCheck, RolloutSpec
from shared.thresholds import OPS, parse_rule

UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


class PolicyError(ValueError):
    """A policy file that cannot be used; the message says what to fix."""


#: The guardrails a rollout may watch: serving health and model behaviour, against the live version.
SERVING_GUARDRAILS = ("error_rate", "latency_p99_ms", "psi", "disagreement")
#: Delayed-label metrics, computed over the requests whose outcome was posted back (POST /feedback).
LABEL_METRICS = ("auc", "recall", "precision", "accuracy")


class GuardrailPolicy(BaseModel):
    """`guardrails:` of a stage's rollout; a number is a maximum (`error_rate: 0.02` = `"<= 0.02"`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    interval: timedelta = timedelta(seconds=30)
    min_requests: int = Field(20, ge=1, le=1_000_000)
    min_labels: int = Field(20, ge=1, le=1_000_000)
    error_rate: str | None = None
    latency_p99_ms: str | None = None
    psi: str | None = None
    disagreement: str | None = None
    labels: dict[str, str] = Field(default_factory=dict)

    @field_validator("interval", mode="before")
    @classmethod
    def _parse_interval(cls, value: Any) -> timedelta:
        return parse_duration(value)

    @field_validator("error_rate", "latency_p99_ms", "psi", "disagreement", mode="before")
    @classmethod
    def _maximum_or_rule(cls, value: Any) -> str | None:
        if value is None:
            return None
        if isinstance(value, int | float) and not isinstance(value, bool):
            if value < 0:
                raise ValueError(f"a guardrail's maximum must be 0 or more, not {value}")
            return f"<= {value}"
        parse_rule(value)
        return str(value).strip()

    @field_validator("labels")
    @classmethod
    def _label_rules(cls, value: dict[str, str]) -> dict[str, str]:
        unknown = sorted(set(value) - set(LABEL_METRICS))
        if unknown:
            raise ValueError(f"labels: {unknown} unknown; the delayed-label metrics are {', '.join(LABEL_METRICS)}")
        for rule in value.values():
            parse_rule(rule)
        return value

    def rules(self) -> dict[str, str]:
        serving = {name: getattr(self, name) for name in SERVING_GUARDRAILS if getattr(self, name) is not None}
        return serving | dict(self.labels)


class RolloutPolicy(BaseModel):
    """`rollout:` of a stage: how an approved version goes live (docs/policy.md, "Rollouts")."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    strategy: Literal["all-at-once", "canary", "linear", "shadow"] = "all-at-once"
    share: float | None = Field(None, gt=0, lt=100)  # canary: the new version's share (%) while it bakes
    step: float | None = Field(None, gt=0, lt=100)  # linear: each step adds this share (%)
    mirror: float | None = Field(None, gt=0, le=100)  # shadow: the share (%) of requests mirrored to it
    bake: timedelta | None = None  # canary/shadow: how long it bakes; linear: how long each step bakes
    guardrails: GuardrailPolicy | None = None

    @field_validator("bake", mode="before")
    @classmethod
    def _parse_bake(cls, value: Any) -> timedelta | None:
        return None if value is None else parse_duration(value)

    @model_validator(mode="after")
    def _consistent(self) -> RolloutPolicy:
        needs = {"all-at-once": set(), "canary": {"share", "bake"}, "linear": {"step", "bake"}, "shadow": {"mirror", "bake"}}
        wanted = needs[self.strategy]
        given = self.model_fields_set - {"strategy", "guardrails"}
        missing = sorted(wanted - given)
        extra = sorted(given - wanted)
        takes = f"{self.strategy} takes " + (" and ".join(sorted(wanted)) if wanted else "no share, step, mirror or bake")
        if missing:
            example = {"share": "share: 10", "step": "step: 25", "mirror": "mirror: 100", "bake": "bake: 10m"}
            raise ValueError(f"rollout {self.strategy}: give {' and '.join(missing)} ({', '.join(example[m] for m in missing)})")
        if extra:
            raise ValueError(f"rollout {self.strategy}: remove {extra} ({takes})")
        if self.strategy == "all-at-once" and self.guardrails is not None:
            raise ValueError("rollout all-at-once has nothing to bake: remove guardrails, or choose canary, linear or shadow")
        if self.strategy != "all-at-once" and self.guardrails is None:
            raise ValueError(f"rollout {self.strategy}: give guardrails (e.g. guardrails: {{error_rate: 0.02}}); "
                             "a rollout no guardrail watches is all-at-once with a wait")
        if self.guardrails is not None and not self.guardrails.rules():
            raise ValueError("guardrails: name at least one of error_rate, latency_p99_ms, psi, disagreement or labels")
        return self

    def steps(self) -> list[float]:
        """The new version's share (%) in each step before 100 % (for shadow, the mirrored share)."""
        if self.strategy == "canary":
            return [float(self.share or 0)]
        if self.strategy == "shadow":
            return [float(self.mirror or 0)]
        if self.strategy == "linear":
            step, shares = float(self.step or 0), []
            while (len(shares) + 1) * step < 100 - 1e-9:
                shares.append(round((len(shares) + 1) * step, 6))
            return shares
        return []

    def spec(self) -> RolloutSpec | None:
        """What ApprovalDecided carries to the deployer; None for all-at-once (today's behaviour)."""
        if self.strategy == "all-at-once" or self.guardrails is None:
            return None
        g = self.guardrails
        return RolloutSpec(
            strategy=self.strategy, steps=self.steps(), bake_seconds=(self.bake or timedelta()).total_seconds(),
            guardrails=GuardrailSpec(interval_seconds=g.interval.total_seconds(), rules=g.rules(),
                                     min_requests=g.min_requests, min_labels=g.min_labels),
        )

    def describe(self) -> str:
        if self.strategy == "all-at-once":
            return "all at once"
        bake = format_duration(self.bake) if self.bake else "0s"
        share = self.steps()[0] if self.steps() else 0
        what = {"canary": f"canary {share:g} % for {bake}", "linear": f"linear steps of {share:g} %, {bake} each",
                "shadow": f"shadow {share:g} % mirrored for {bake}"}[self.strategy]
        rules = ", ".join(f"{k} {v}" for k, v in (self.guardrails.rules() if self.guardrails else {}).items())
        return f"{what}, then 100 %; rolled back when not {rules}"


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
    rollout: RolloutPolicy = Field(default_factory=RolloutPolicy)

    @field_validator("thresholds")
    @classmethod
    def _parse_thresholds(cls, value: dict[str, str]) -> dict[str, str]:
        for rule in value.values():
            parse_rule(rule)
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

    def checks(
        self, metrics: dict[str, float], live_metrics: dict[str, float] | None = None, live_model_version_id: str | None = None
    ) -> list[MetricCheck]:
        """The thresholds against `metrics`. A rule relative to the live version (`>= live + 0.002`) is
        checked against `live_metrics`, the metrics of the version serving the stage now; with nothing live,
        or a live version without that metric, there is no champion to beat and the rule is left out."""
        result = []
        for metric, text in self.thresholds.items():
            rule = parse_rule(text)
            value = metrics.get(metric)
            if rule.relative is None:
                passed = value is not None and OPS[rule.op](value, rule.number)
                result.append(MetricCheck(metric=metric, op=rule.op, threshold=rule.number, value=value, passed=passed))
                continue
            live = (live_metrics or {}).get(metric)
            threshold = rule.threshold(live)
            if threshold is None:
                continue
            result.append(MetricCheck(
                metric=metric, op=rule.op, threshold=threshold, value=value, passed=bool(rule.holds(value, live)),
                rule=text.strip(), live_value=live, live_model_version_id=live_model_version_id,
            ))
        return result

    def describe(self) -> str:
        """The rule in words, as recorded on every request, decision and audit entry."""
        when = " and ".join(f"{m} {r.strip()}" for m, r in self.thresholds.items())
        if self.approval == "automatic":
            rollout = f"; rollout: {self.rollout.describe()}" if self.rollout.strategy != "all-at-once" else ""
            return f"{self.name}: automatic when {when}{rollout}"
        parts = [f"{self.name}: {self.approvers} distinct approver(s) from {self.group}, registrant excluded"]
        if when:
            parts.append(f"when {when}")
        if self.expires_after is not None:
            then = f"escalate to {self.escalate_to}" if self.on_expiry == "escalate" else "reject"
            parts.append(f"expires after {format_duration(self.expires_after)}, then {then}")
        if self.supersede:
            parts.append("a newer version supersedes a pending one")
        if self.rollout.strategy != "all-at-once":
            parts.append(f"rollout: {self.rollout.describe()}")
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
