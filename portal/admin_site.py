"""The staff admin, whose index page carries the operations dashboard: the
last day's jobs per hour, failures by error code, the busiest models, money
(revenue, credits sold, the credit liability) and the jobs that look stuck.
Every figure comes from a selector; this only puts them side by side."""

from __future__ import annotations

from dataclasses import asdict
from datetime import timedelta

from django.contrib import admin
from django.http import HttpRequest, HttpResponse
from django.utils import timezone

from billing.selectors import credits_outstanding, sales_summary
from generation.estimates import model_statuses
from generation.selectors import busiest_checkpoints, failures_by_code, jobs_per_hour, jobs_stuck

DASHBOARD_HOURS = 24


class PortalAdminSite(admin.AdminSite):
    site_header = "img2img portal staff"
    site_title = "img2img portal staff"
    index_template = "admin/dashboard_index.html"

    def index(self, request: HttpRequest, extra_context: dict | None = None) -> HttpResponse:
        # AdminSite.index is already staff-only (admin_view); this adds the
        # figures, the money only for staff who may see orders.
        figures = dashboard(money=request.user.has_perm(MONEY_PERMISSION))
        return super().index(request, extra_context={**figures, **(extra_context or {})})


# Revenue, sales and the credit liability: for staff who may view orders.
MONEY_PERMISSION = "billing.view_order"


def dashboard(*, money: bool = True) -> dict:
    now = timezone.now()
    since = now - timedelta(hours=DASHBOARD_HOURS)
    hours = jobs_per_hour(since=since, now=now)
    busiest = max((hour.submitted for hour in hours), default=0) or 1
    statuses = model_statuses()
    return {
        "dashboard_hours": DASHBOARD_HOURS,
        "jobs_per_hour": [{**asdict(hour), "bar": round(100 * hour.submitted / busiest)} for hour in hours],
        "jobs_last_day": sum(hour.submitted for hour in hours),
        "failures": failures_by_code(since=since),
        "busiest_models": busiest_checkpoints(since=since),
        "show_money": money,
        "sales": sales_summary(since=since) if money else [],
        "credits": credits_outstanding() if money else {},
        "model_statuses": statuses,
        "stuck_jobs": jobs_stuck(statuses=statuses, now=now),
    }
