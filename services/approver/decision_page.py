"""The page a decision link opens in a browser: what is asked, and approve / reject with a comment."""

from __future__ import annotations

import json
from html import escape
from pathlib import Path
from string import Template
from typing import Any

PAGE = Template(Path(__file__).with_name("decision_page.html").read_text())
FORM = """<textarea id="comment" placeholder="Comment (required to reject)"></textarea>
<p><button onclick="decide('approve')">Approve</button><button onclick="decide('reject')">Reject</button></p>"""


def render_decision_page(info: dict[str, Any]) -> str:
    """`info` is a LinkInfo as JSON; every value is escaped."""
    a = info["approval"]
    checks = "".join(
        f"<tr class='{'passed' if c['passed'] else 'failed'}'><td>{escape(c['metric'])}</td>"
        f"<td>{escape(str(c['value']))}</td><td>{escape(c['op'])} {c['threshold']:g}</td>"
        f"<td>{'passed' if c['passed'] else 'FAILED'}</td></tr>"
        for c in a["checks"]
    ) or "<tr><td class='muted'>no thresholds for this stage</td></tr>"
    if info["used"]:
        form = "<p>This link has been used already.</p>"
    elif a["status"] != "pending":
        form = f"<p>This request is {escape(a['status'])}: {escape(a['closed_reason'] or 'decided')}.</p>"
    else:
        form = FORM
    approved = f", approved so far by {escape(', '.join(a['approved_by']))}" if a["approved_by"] else ""
    return PAGE.substitute(
        model_version_id=escape(a["model_version_id"]),
        stage=escape(a["stage"]),
        approver=escape(info["approver"]),
        expires_at=escape(info["expires_at"]),
        policy_rule=escape(a["policy_rule"]),
        registered_by=escape(a["registered_by"]),
        live=escape(a["live_model_version_id"] or "nothing"),
        status=escape(a["status"]),
        approved_by=approved,
        checks=checks,
        model_card_summary=escape(a["model_card_summary"] or "none given"),
        lineage=escape(json.dumps(a["lineage"], indent=2)),
        form=form,
    )
