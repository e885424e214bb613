"""Guardrails of a rollout: the new version's serving health and behaviour against the live version's.

`evaluate` reads the router's /stats (services/inference/router.py) and the stage's GuardrailSpec:
- error_rate, latency_p99_ms: the new version's, each rule absolute or relative to the live version's;
- psi: the population stability index of the new version's score distribution against the live one's;
- disagreement: the share of the same requests the two versions labelled differently;
- auc, recall, precision, accuracy: over the labelled answers (POST /feedback), once `min_labels` are in.
A guardrail is judged only once the new version has `min_requests` requests (labels: `min_labels`); before
that the evaluation is not `judged` and nothing breaks. A relative rule without a live value (the live
version saw no traffic yet) is not judged either.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from shared.events import GuardrailSpec
from shared.thresholds import parse_rule

LABEL_METRICS = ("auc", "recall", "precision", "accuracy")
SMOOTHING = 0.5  # added to every bin's count, so an empty bin does not make the index infinite


@dataclass(frozen=True)
class Evaluation:
    values: dict[str, float | None]  # each guardrail's value for the new version
    breached: list[str] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)
    judged: bool = False  # the new version had enough requests to be judged
    requests: int = 0

    @property
    def reason(self) -> str:
        return "; ".join(self.reasons)


def psi(expected: list[int], actual: list[int]) -> float | None:
    """Population stability index of `actual` against `expected` (counts per bin): sum (a - e) ln(a / e)
    over the bins' shares, each count smoothed by SMOOTHING. 0 is the same distribution; above 0.25 is
    usually read as a large shift. Small samples read higher: judge it over enough requests (min_requests)."""
    if not sum(expected) or not sum(actual):
        return None
    total_e, total_a = sum(expected) + SMOOTHING * len(expected), sum(actual) + SMOOTHING * len(actual)
    value = 0.0
    for e, a in zip(expected, actual, strict=True):
        pe, pa = (e + SMOOTHING) / total_e, (a + SMOOTHING) / total_a
        value += (pa - pe) * math.log(pa / pe)
    return value


def measured(stats: dict[str, Any], version: str | None) -> dict[str, float | None]:
    """The guardrail values of one version from the router's stats."""
    s = stats.get("versions", {}).get(version or "", {})
    return {
        "error_rate": s.get("error_rate"),
        "latency_p99_ms": (s.get("latency_ms") or {}).get("p99"),
        **{name: s.get(name) for name in LABEL_METRICS},
    }


def evaluate(spec: GuardrailSpec, stats: dict[str, Any], live: str | None, candidate: str) -> Evaluation:
    versions = stats.get("versions", {})
    new, old = versions.get(candidate, {}), versions.get(live or "", {})
    values, live_values = measured(stats, candidate), measured(stats, live)
    histograms = [(v.get("scores") or {}).get("counts") for v in (old, new)]
    values["psi"] = psi(histograms[0], histograms[1]) if all(histograms) else None
    values["disagreement"] = stats.get("disagreement_rate")
    live_values |= {"psi": 0.0, "disagreement": 0.0}
    requests = int(new.get("requests", 0))
    judged = requests >= spec.min_requests
    breached, reasons = [], []
    for name, text in spec.rules.items():
        enough = int(new.get("labelled", 0)) >= spec.min_labels if name in LABEL_METRICS else judged
        value = values.get(name)
        if not enough or value is None:
            continue
        rule = parse_rule(text)
        holds = rule.holds(value, live_values.get(name))
        if holds is False:
            threshold = rule.threshold(live_values.get(name))
            breached.append(name)
            reasons.append(f"{name}={value:.4g} breaks '{text.strip()}' (threshold {threshold:.4g})")
    return Evaluation(values, breached, reasons, judged, requests)
