"""Threshold rules, absolute or relative to the version serving a stage now ("live").

    ">= 0.8"              absolute
    ">= live + 0.002"     at least the live version's value plus 0.002
    ">= live * 1.01"      at least 1 % better than the live version
    "<= live"             no worse than the live version

The same syntax serves the approver's metric thresholds (champion/challenger) and the deployer's
guardrails during a rollout. A relative rule needs the live value: without one it cannot be judged
(`Rule.threshold` answers None) and the caller says what then happens.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable
from dataclasses import dataclass

OPS: dict[str, Callable[[float, float], bool]] = {
    ">=": operator.ge, ">": operator.gt, "<=": operator.le, "<": operator.lt, "==": operator.eq,
}
_NUMBER = r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?"
_RULE = re.compile(rf"^\s*(>=|<=|==|>|<)\s*(?:(live)\s*(?:([+\-*])\s*({_NUMBER}))?|({_NUMBER}))\s*$")


@dataclass(frozen=True)
class Rule:
    """One parsed threshold: `op` and either a number, or `live` with an optional `+`, `-` or `*` term."""

    op: str
    number: float
    relative: str | None = None  # None: absolute; "+", "-" or "*": relative to live

    def threshold(self, live: float | None) -> float | None:
        """The number a value is compared with; None for a relative rule without a live value."""
        if self.relative is None:
            return self.number
        if live is None:
            return None
        if self.relative == "+":
            return live + self.number
        if self.relative == "-":
            return live - self.number
        return live * self.number

    def holds(self, value: float | None, live: float | None = None) -> bool | None:
        """Whether `value` meets the rule; False for a missing value; None when it cannot be judged (no live)."""
        threshold = self.threshold(live)
        if threshold is None:
            return None
        return value is not None and OPS[self.op](value, threshold)


def parse_rule(rule: object) -> Rule:
    """Parses '>= 0.8' or '>= live + 0.002'; ValueError saying what a rule looks like otherwise."""
    match = _RULE.match(str(rule))
    if match is None:
        raise ValueError(
            f"threshold {rule!r} must be an operator and a number, e.g. '>= 0.8', or relative to the live version, "
            f"e.g. '>= live + 0.002' or '>= live * 1.01' (operators: {', '.join(OPS)})"
        )
    op, live, sign, term, absolute = match.groups()
    if live is None:
        return Rule(op, float(absolute))
    if sign is None:
        return Rule(op, 0.0, "+")
    return Rule(op, float(term), sign)
