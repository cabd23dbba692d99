"""The console's Playground page (placeholder: issue 14)."""
from __future__ import annotations

from flask import render_template

from ingress.console.auth import bp, signed_in


@bp.route("/t/<tenant_id>/playground")
@signed_in
def playground():
    return render_template("console/placeholder.html", title="Playground")
