"""The console's Conversations page (placeholder: issue 14)."""
from __future__ import annotations

from flask import render_template

from ingress.console.auth import bp, signed_in


@bp.route("/t/<tenant_id>/conversations")
@signed_in
def conversations():
    return render_template("console/placeholder.html", title="Conversations")
