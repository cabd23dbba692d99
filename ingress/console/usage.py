"""The console's Usage page (issue 14): what the bot costs and how it does, per tenant-local day.

Tokens and model calls of the last `DAYS` days as server-drawn SVG charts (ingress/console/charts.py), the
latency percentiles of the model calls (per day and for the period), the daily token budget and how much of
today's is spent (shared.db.usage: the same numbers the turn's budget check reads), and the sends that failed,
with why. `usage.json` gives the same numbers to a script or a poll."""
from __future__ import annotations

from datetime import date, datetime, time, timedelta

from flask import g, jsonify, render_template
from markupsafe import Markup

from ingress.admin_api.context import admin_context
from ingress.console.auth import bp, signed_in
from ingress.console.charts import NARROW, WIDE, Bar, bar_chart
from shared.clock import utcnow
from shared.config.prices import Bill, bill, bills_by_day
from shared.config.tenants import Tenant
from shared.db import console_usage
from shared.db import usage as usage_repo

DAYS = 30
FAILED_SHOWN = 50


def _midnight(day: date, tenant: Tenant) -> datetime:
    return datetime.combine(day, time(0), tzinfo=tenant.config.tz)


def _percentiles(latency: list | None) -> dict:
    """{p50, p95, p99} in whole milliseconds (None without calls)."""
    values = list(latency) if latency else [None, None, None]
    return {name: None if v is None else round(v) for name, v in zip(("p50", "p95", "p99"), values)}


def _days(rows: list[dict], first: date, bills: dict[date, Bill]) -> list[dict]:
    """One entry per day of the period, days without calls as zeros (a chart needs the gaps), with its cached
    prompt tokens and billed cost (None: a model without a price; shared.config.prices)."""
    by_day = {r["day"]: r for r in rows}
    out = []
    for n in range(DAYS):
        day = first + timedelta(days=n)
        row = by_day.get(day, {})
        out.append({"day": day.isoformat(), "calls": int(row.get("calls") or 0),
                    **bills.get(day, Bill(0, 0)).as_json(),
                    "prompt_tokens": int(row.get("prompt_tokens") or 0),
                    "completion_tokens": int(row.get("completion_tokens") or 0),
                    "total_tokens": int(row.get("total_tokens") or 0),
                    "latency_ms": _percentiles(row.get("latency"))})
    return out


def _budget(conn, tenant: Tenant, now: datetime) -> dict:
    """Today's (tenant-local) tokens against the daily budget (`budget` None: unlimited), and how many of them
    the console's playground spent (they count toward the budget too)."""
    budget = tenant.config.daily_token_budget
    midnight = usage_repo.start_of_local_day(tenant, now)
    used = usage_repo.tokens_since(conn, midnight)
    return {"budget": budget, "used_today": used, "spent": usage_repo.budget_spent(conn, tenant, now),
            "playground_today": usage_repo.tokens_since(conn, midnight, playground=True),
            "percent": None if budget is None else min(100, round(100 * used / budget))}


def _numbers(tenant: Tenant) -> dict:
    """Everything the page shows, read in one connection."""
    now = utcnow()
    today = now.astimezone(tenant.config.tz).date()
    first = today - timedelta(days=DAYS - 1)
    since, until = _midnight(first, tenant), _midnight(today + timedelta(days=1), tenant)
    with admin_context().pools.connection(tenant) as conn:
        rows = console_usage.daily(conn, timezone=tenant.config.timezone, since=since, until=until)
        whole = console_usage.period(conn, since=since, until=until)
        models = console_usage.per_model(conn, timezone=tenant.config.timezone, since=since, until=until)
        budget = _budget(conn, tenant, now)
        failed = console_usage.failed_sends(conn, limit=FAILED_SHOWN)
    return {"since": first.isoformat(), "until": today.isoformat(), "timezone": tenant.config.timezone,
            "days": _days(rows, first, bills_by_day(models, tenant.prices)), "budget": budget, "failed": failed,
            "period": {"calls": int(whole["calls"]), "total_tokens": int(whole["total_tokens"]),
                       "latency_ms": _percentiles(whole["latency"]), **bill(models, tenant.prices).as_json()}}


def _charts(days: list[dict]) -> dict[str, Markup]:
    """The two bar charts, labelled MM-DD, each bar's tip giving its exact numbers; each drawn wide and narrow
    (usage.css shows the one that fits the screen)."""
    tokens = [Bar(d["day"][5:], d["total_tokens"], f"{d['day']}: {d['total_tokens']} tokens "
                                               f"({d['prompt_tokens']} prompt, {d['completion_tokens']} completion)")
              for d in days]
    calls = [Bar(d["day"][5:], d["calls"], f"{d['day']}: {d['calls']} model calls") for d in days]
    return {name: bar_chart(bars, f"{what} per day, last {DAYS} days", WIDE)
            + bar_chart(bars, f"{what} per day, last {DAYS} days", NARROW)
            for name, what, bars in (("tokens", "Tokens", tokens), ("calls", "Model calls", calls))}


@bp.route("/t/<tenant_id>/usage")
@signed_in
def usage():
    numbers = _numbers(g.tenant)
    return render_template("console/usage.html", title="Usage", charts=_charts(numbers["days"]), **numbers)


@bp.route("/t/<tenant_id>/usage.json")
@signed_in
def usage_json():
    numbers = _numbers(g.tenant)
    numbers["failed"] = [{**f, "created_at": f["created_at"].isoformat(), "updated_at": f["updated_at"].isoformat()}
                         for f in numbers["failed"]]
    return jsonify(numbers)
