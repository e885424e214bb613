"""The console's plots, drawn on the server as inline SVG: no JavaScript library, nothing fetched.

Where a version's plots live (docs/console.md): its model card's `custom_details.plots`, a list of
    {"kind": "curve", "name": "roc", "x": [fpr, ...], "y": [tpr, ...]}     (a curve whose name has "roc")
    {"kind": "confusion_matrix", "labels": ["Normal", "Fraud"], "matrix": [[tn, fp], [fn, tp]]}
with the matrix's rows the actual class and its columns the predicted one. A version registered from Comet
gets exactly these from the experiment's log_curve / log_confusion_matrix (services/registrar/comet_api.py);
any other registration puts the same in the model card it sends.
"""

from __future__ import annotations

from dataclasses import dataclass
from html import escape
from itertools import pairwise
from typing import Any

from markupsafe import Markup

BLUE, GREY, RED, INK, FAINT = "#2563eb", "#9ca3af", "#dc2626", "#111827", "#e5e7eb"


@dataclass
class Roc:
    fpr: list[float]
    tpr: list[float]

    @property
    def auc(self) -> float:
        points = sorted(zip(self.fpr, self.tpr, strict=True))
        return sum((x2 - x1) * (y1 + y2) / 2 for (x1, y1), (x2, y2) in pairwise(points))


@dataclass
class ConfusionMatrix:
    labels: list[str]
    matrix: list[list[float]]


@dataclass
class Plots:
    roc: Roc | None = None
    confusion: ConfusionMatrix | None = None


def _numbers(value: Any) -> list[float] | None:
    if isinstance(value, list) and value and all(isinstance(v, int | float) and not isinstance(v, bool) for v in value):
        return [float(v) for v in value]
    return None


def _roc(fpr: Any, tpr: Any) -> Roc | None:
    fpr, tpr = _numbers(fpr), _numbers(tpr)
    if fpr and tpr and len(fpr) == len(tpr) and len(fpr) >= 2:
        return Roc(fpr, tpr)
    return None


def _confusion(value: Any, labels: Any = None) -> ConfusionMatrix | None:
    rows = [_numbers(row) for row in value] if isinstance(value, list) and value else None
    if not rows or any(r is None or len(r) != len(rows) for r in rows):
        return None
    names = [str(x) for x in labels] if isinstance(labels, list) and len(labels) == len(rows) else None
    if names is None:
        names = ["negative", "positive"] if len(rows) == 2 else [str(i) for i in range(len(rows))]
    return ConfusionMatrix(names, rows)  # type: ignore[arg-type]


def plots_of(record: dict[str, Any]) -> Plots:
    """The plots a version's record carries (see the module's docstring); malformed entries are ignored."""
    plots = Plots()
    found = ((record.get("model_card") or {}).get("custom_details") or {}).get("plots")
    for plot in found if isinstance(found, list) else []:
        if not isinstance(plot, dict):
            continue
        if plot.get("kind") == "confusion_matrix" and plots.confusion is None:
            plots.confusion = _confusion(plot.get("matrix"), plot.get("labels"))
        elif plot.get("kind") == "curve" and "roc" in str(plot.get("name", "")).lower() and plots.roc is None:
            plots.roc = _roc(plot.get("x"), plot.get("y"))
    return plots


def _svg(width: int, height: int, body: str, label: str) -> Markup:
    return Markup(
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" width="{width}" height="{height}" '
        f'role="img" aria-label="{escape(label)}" class="plot" font-family="system-ui, sans-serif" font-size="11">'
        f"<title>{escape(label)}</title>{body}</svg>"
    )


def roc_svg(roc: Roc, size: int = 300) -> Markup:
    pad, inner = 40, size - 55
    x = lambda v: pad + v * inner
    y = lambda v: 15 + (1 - v) * inner
    points = " ".join(f"{x(f):.1f},{y(t):.1f}" for f, t in sorted(zip(roc.fpr, roc.tpr, strict=True)))
    ticks = "".join(
        f'<text x="{x(v):.1f}" y="{y(0) + 14:.1f}" text-anchor="middle" fill="{INK}">{v:g}</text>'
        f'<text x="{pad - 6}" y="{y(v) + 4:.1f}" text-anchor="end" fill="{INK}">{v:g}</text>'
        f'<line x1="{x(v):.1f}" y1="{y(0):.1f}" x2="{x(v):.1f}" y2="{y(1):.1f}" stroke="{FAINT}"/>'
        f'<line x1="{x(0):.1f}" y1="{y(v):.1f}" x2="{x(1):.1f}" y2="{y(v):.1f}" stroke="{FAINT}"/>'
        for v in (0, 0.5, 1)
    )
    body = (
        f"{ticks}"
        f'<rect x="{x(0)}" y="{y(1)}" width="{inner}" height="{inner}" fill="none" stroke="{INK}"/>'
        f'<line x1="{x(0)}" y1="{y(0)}" x2="{x(1)}" y2="{y(1)}" stroke="{GREY}" stroke-dasharray="4 4"/>'
        f'<polyline points="{points}" fill="none" stroke="{BLUE}" stroke-width="2.5" class="roc-line"/>'
        f'<text x="{x(0.97)}" y="{y(0.05)}" text-anchor="end" fill="{BLUE}" font-size="13" font-weight="600">'
        f"AUC {roc.auc:.3f}</text>"
        f'<text x="{x(0.5)}" y="{size - 4}" text-anchor="middle" fill="{INK}">false positive rate</text>'
        f'<text transform="translate(11 {y(0.5)}) rotate(-90)" text-anchor="middle" fill="{INK}">true positive rate</text>'
    )
    return _svg(size, size, body, f"ROC curve, AUC {roc.auc:.3f}")


def confusion_svg(cm: ConfusionMatrix, cell: int = 90) -> Markup:
    n = len(cm.labels)
    left, top = 90, 40
    width, height = left + n * cell + 10, top + n * cell + 30
    parts = []
    for r, row in enumerate(cm.matrix):
        total = sum(row) or 1
        for c, value in enumerate(row):
            share = value / total
            fill = f"rgba(37, 99, 235, {0.08 + 0.8 * share:.2f})"
            ink = "#ffffff" if share > 0.55 else INK
            cx, cy = left + c * cell, top + r * cell
            parts.append(
                f'<g class="cm-cell"><title>actual {escape(cm.labels[r])}, predicted {escape(cm.labels[c])}: '
                f"{value:g} ({share:.1%} of actual {escape(cm.labels[r])})</title>"
                f'<rect x="{cx}" y="{cy}" width="{cell}" height="{cell}" fill="{fill}" stroke="#ffffff" stroke-width="2"/>'
                f'<text x="{cx + cell / 2}" y="{cy + cell / 2}" text-anchor="middle" fill="{ink}" font-size="16" '
                f'font-weight="600">{value:g}</text>'
                f'<text x="{cx + cell / 2}" y="{cy + cell / 2 + 16}" text-anchor="middle" fill="{ink}">{share:.2%}</text></g>'
            )
    for i, label in enumerate(cm.labels):
        parts.append(f'<text x="{left + i * cell + cell / 2}" y="{top - 8}" text-anchor="middle" fill="{INK}">'
                     f"{escape(label)}</text>")
        parts.append(f'<text x="{left - 8}" y="{top + i * cell + cell / 2 + 4}" text-anchor="end" fill="{INK}">'
                     f"{escape(label)}</text>")
    parts.append(f'<text x="{left + n * cell / 2}" y="{top - 26}" text-anchor="middle" fill="{GREY}">predicted</text>')
    parts.append(f'<text x="{left - 8}" y="{top + n * cell + 18}" text-anchor="end" fill="{GREY}">actual</text>')
    return _svg(width, height, "".join(parts), "confusion matrix")


@dataclass
class MetricRow:
    """One metric of the version under review, next to what is live in the stage and the stage's threshold."""

    name: str
    value: float | None
    live: float | None = None
    op: str | None = None
    threshold: float | None = None
    passed: bool | None = None


def metric_bars_svg(rows: list[MetricRow], live_label: str | None) -> Markup:
    """Horizontal bars: this version (blue) against the live version (grey), the threshold as a red tick."""
    label_w, bar_w, row_h = 90, 300, 34
    height = 28 + row_h * len(rows)
    parts = [
        (
            f'<rect x="{label_w}" y="4" width="10" height="10" fill="{BLUE}"/>'
            f'<text x="{label_w + 14}" y="13" fill="{INK}">this version</text>'
        )
    ]
    if live_label:
        parts.append(f'<rect x="{label_w + 100}" y="4" width="10" height="10" fill="{GREY}"/>'
                     f'<text x="{label_w + 114}" y="13" fill="{INK}">live: {escape(live_label)}</text>')
    for i, row in enumerate(rows):
        values = [v for v in (row.value, row.live, row.threshold) if v is not None]
        top_value = max(values + [1.0]) if all(0 <= v <= 1 for v in values) else max(values) * 1.1 or 1.0
        def scale(v: float, top_value: float = top_value) -> float:
            return bar_w * max(v, 0) / top_value

        y = 24 + i * row_h
        parts.append(f'<text x="{label_w - 8}" y="{y + 15}" text-anchor="end" fill="{INK}">{escape(row.name)}</text>')
        if row.value is not None:
            parts.append(f'<rect x="{label_w}" y="{y}" width="{scale(row.value):.1f}" height="12" fill="{BLUE}">'
                         f"<title>{escape(row.name)} {row.value:.4g}</title></rect>"
                         f'<text x="{label_w + scale(row.value) + 4:.1f}" y="{y + 10}" fill="{INK}">{row.value:.4g}</text>')
        if row.live is not None:
            parts.append(f'<rect x="{label_w}" y="{y + 14}" width="{scale(row.live):.1f}" height="8" fill="{GREY}">'
                         f"<title>live {row.live:.4g}</title></rect>"
                         f'<text x="{label_w + scale(row.live) + 4:.1f}" y="{y + 21}" fill="{GREY}">{row.live:.4g}</text>')
        if row.threshold is not None:
            tx = label_w + scale(row.threshold)
            parts.append(f'<line x1="{tx:.1f}" y1="{y - 3}" x2="{tx:.1f}" y2="{y + 25}" stroke="{RED}" stroke-width="2">'
                         f"<title>threshold {escape(row.op or '')} {row.threshold:g}</title></line>")
    return _svg(label_w + bar_w + 70, height, "".join(parts), "metrics compared with the live version")
