"""The web console's plots and its who-may-decide hint, without a browser (tests/e2e/test_console.py has one)."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from services.console.plots import MetricRow, confusion_svg, metric_bars_svg, plots_of, roc_svg
from services.console.router import metric_rows
from services.console.session import SignedIn

SVG = "{http://www.w3.org/2000/svg}"


def card(*plots: object) -> dict:
    """A version record whose model card carries `plots` where the registrar's Comet import puts them."""
    return {"model_card": {"custom_details": {"plots": list(plots)}}}


ROC = {"kind": "curve", "name": "roc-curve", "x": [0, 0.1, 1], "y": [0, 0.9, 1]}
MATRIX = {"kind": "confusion_matrix", "name": "confusion-matrix.json", "labels": ["Normal", "Fraud"],
          "matrix": [[980, 3], [5, 12]]}


def test_plots_are_read_from_the_model_cards_custom_details():
    plots = plots_of(card({"kind": "curve", "name": "loss", "x": [1, 2], "y": [0.5, 0.4]}, ROC, MATRIX))
    assert plots.roc is not None and plots.roc.fpr == [0, 0.1, 1] and plots.roc.tpr == [0, 0.9, 1]
    assert round(plots.roc.auc, 3) == 0.9
    assert plots.confusion is not None and plots.confusion.labels == ["Normal", "Fraud"]
    assert plots.confusion.matrix == [[980, 3], [5, 12]]


def test_a_confusion_matrix_without_labels_gets_default_ones():
    plots = plots_of(card({"kind": "confusion_matrix", "matrix": [[9, 1], [2, 8]]}))
    assert plots.confusion is not None and plots.confusion.labels == ["negative", "positive"]


def test_a_version_without_plots_has_none():
    assert plots_of({"model_card": {}}) == plots_of({}) == plots_of(card())
    assert plots_of({}).roc is None


def test_malformed_plot_data_is_ignored_not_fatal():
    for bad in ({**ROC, "y": [0]}, {**ROC, "x": "x"}, {**MATRIX, "matrix": [[1, 2], [3]]},
                {**MATRIX, "matrix": [["a", "b"], ["c", "d"]]}, "plot", None):
        plots = plots_of(card(bad))
        assert plots.roc is None and plots.confusion is None
    assert plots_of({"model_card": {"custom_details": {"plots": "nope"}}}).roc is None


def test_the_svgs_are_well_formed_and_draw_the_data():
    roc = plots_of(card({**ROC, "x": [0, 0.2, 1], "y": [0, 0.8, 1]})).roc
    assert roc is not None
    tree = ET.fromstring(str(roc_svg(roc)))
    assert len(tree.find(f"{SVG}polyline[@class='roc-line']").get("points").split()) == 3
    assert "AUC 0.800" in str(roc_svg(roc))
    cm = plots_of(card({**MATRIX, "labels": ["a<b", "c"], "matrix": [[1, 0], [0, 1]]}))
    matrix = ET.fromstring(str(confusion_svg(cm.confusion)))  # type: ignore[arg-type]
    assert len(matrix.findall(f"{SVG}g[@class='cm-cell']")) == 4
    assert "a&lt;b" in str(confusion_svg(cm.confusion))  # type: ignore[arg-type]
    bars = ET.fromstring(str(metric_bars_svg([MetricRow("auc", 0.93, 0.9, ">=", 0.8, True),
                                              MetricRow("latency_ms", 120.0, 150.0)], "fraud/6")))
    assert bars.get("aria-label") == "metrics compared with the live version"


def test_metric_rows_put_live_values_and_thresholds_next_to_the_versions():
    rows = metric_rows({"auc": 0.93, "recall": 0.7}, {"auc": 0.9},
                       [{"metric": "auc", "op": ">=", "threshold": 0.8, "value": 0.93, "passed": True},
                        {"metric": "precision", "op": ">=", "threshold": 0.5, "value": None, "passed": False}])
    assert [(r.name, r.value, r.live, r.threshold, r.passed) for r in rows] == [
        ("auc", 0.93, 0.9, 0.8, True), ("recall", 0.7, None, None, None), ("precision", None, None, 0.5, False)]


def test_the_console_says_who_may_not_decide_and_why():
    lee = SignedIn("lee", "t", ("ml-leads",))
    request = {"model_version_id": "fraud/7", "registered_by": "ana", "approver_group": "ml-leads",
               "eligible_groups": ["ml-leads"]}
    assert lee.why_not(request) is None
    assert "registered fraud/7" in (SignedIn("ana", "t", ("ml-leads",)).why_not(request) or "")
    assert "model-risk" in (lee.why_not({**request, "eligible_groups": ["model-risk"]}) or "")
    assert lee.why_not({**request, "eligible_groups": ["model-risk", "ml-leads"]}) is None  # escalated
    assert "already approved" in (lee.why_not({**request, "approved_by": ["lee"]}) or "")


def test_the_version_page_says_who_superseded_or_replaced_a_version_and_what_is_deploying():
    from services.console.router import templates

    page = templates.env.from_string('{% from "_parts.html" import stages_row %}{{ stages_row(record, stages, {}) }}')
    record = {
        "model_version_id": "fraud/7", "stages": {"dev": "Retired", "test": "Superseded", "prod": "Deploying"},
        "stage_details": {"dev": {"replaced_by": "fraud/9"}, "test": {"superseded_by": "fraud/8"}, "prod": {"target": "sagemaker"}},
    }
    html = page.render(record=record, stages=["dev", "test", "prod"])
    assert 'replaced by <a href="/console/groups/fraud/versions/9">fraud/9</a>' in html
    assert 'superseded by <a href="/console/groups/fraud/versions/8">fraud/8</a>' in html
    assert "deploying to sagemaker" in html and 'class="pill wait">Deploying' in html
