"""The web console for approvers and ML engineers, served by the approver under /console.

Pages are rendered on the server (Jinja2 templates in templates/, plots as inline SVG in plots.py) with a
few lines of plain JavaScript; there is no front-end build and nothing is fetched from elsewhere.
The approver's app includes `console_router`; see docs/console.md.
"""

from services.console.router import router as console_router

__all__ = ["console_router"]
