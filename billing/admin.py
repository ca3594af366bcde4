from __future__ import annotations

import stripe
from django.contrib import admin, messages
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.db.models import Q, QuerySet
from django.http import HttpRequest
from django.template.response import TemplateResponse
from django.utils.html import format_html_join

from billing.errors import CreditError
from billing.forms import CreditAdjustmentForm
from billing.ledger import credits_adjust
from billing.models import CreditAccount, CreditPack, LedgerEntry, Order, StripeEvent
from billing.purchases import UnknownOrder, order_refund


class ReadOnlyAdmin(admin.ModelAdmin):
    """Money rows change only through billing.ledger, never by editing."""

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


class LedgerEntryInline(admin.TabularInline):
    model = LedgerEntry
    fk_name = "account"
    fields = ["created_at", "kind", "amount", "balance_after", "reference", "actor", "memo"]
    readonly_fields = fields
    ordering = ["-id"]
    extra = 0
    max_num = 0
    show_change_link = True
    can_delete = False

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("actor")


@admin.register(CreditAccount)
class CreditAccountAdmin(ReadOnlyAdmin):
    list_display = ["user", "balance", "debt", "frozen", "updated_at"]
    list_filter = ["frozen"]
    list_select_related = ["user"]
    search_fields = ["user__email"]
    readonly_fields = ["user", "balance", "debt", "frozen", "created_at", "updated_at"]
    inlines = [LedgerEntryInline]
    actions = ["adjust_credits"]

    def has_adjust_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("billing.adjust_credits")

    @admin.action(description="Grant or deduct credits…", permissions=["adjust"])
    def adjust_credits(self, request: HttpRequest, queryset: QuerySet[CreditAccount]):
        form = CreditAdjustmentForm(request.POST if "apply" in request.POST else None)
        if form.is_bound and form.is_valid():
            self._apply_adjustment(request, queryset, form.cleaned_data)
            return None  # back to the list, with messages
        return TemplateResponse(
            request,
            "admin/billing/creditaccount/adjust_credits.html",
            {
                **self.admin_site.each_context(request),
                "title": "Grant or deduct credits",
                "opts": self.model._meta,
                "accounts": queryset.select_related("user"),
                "form": form,
                "action_checkbox_name": ACTION_CHECKBOX_NAME,
            },
        )

    def _apply_adjustment(self, request: HttpRequest, queryset, data: dict) -> None:
        done = 0
        for account in queryset.select_related("user"):
            if account.user is None:
                self.message_user(request, f"Account {account.pk} has no user; skipped.", messages.WARNING)
                continue
            try:
                entry = credits_adjust(
                    user=account.user,
                    amount=data["amount"],
                    ref=f"adjust:{data['token']}:{account.pk}",
                    actor=request.user,
                    memo=data["memo"],
                )
            except CreditError as exc:
                self.message_user(request, f"{account.user}: {exc}", messages.ERROR)
            else:
                done += 1
                self.log_change(
                    request, account, f"Adjusted credits by {data['amount']:+d} ({entry.reference}): {data['memo']}"
                )
        if done:
            self.message_user(request, f"Adjusted {done} account(s) by {data['amount']:+d} credits.", messages.SUCCESS)


@admin.register(LedgerEntry)
class LedgerEntryAdmin(ReadOnlyAdmin):
    list_display = ["created_at", "account", "kind", "amount", "balance_after", "reference", "actor", "memo"]
    list_filter = ["kind", "created_at"]
    list_select_related = ["account__user", "actor"]
    search_fields = ["reference", "account__user__email", "memo"]
    date_hierarchy = "created_at"
    readonly_fields = [f.name for f in LedgerEntry._meta.fields]


@admin.register(CreditPack)
class CreditPackAdmin(admin.ModelAdmin):
    list_display = ["name", "credits", "price_cents", "currency", "active", "sort_order"]
    list_editable = ["credits", "price_cents", "active", "sort_order"]
    ordering = ["sort_order", "price_cents"]


class StripeEventInline(admin.TabularInline):
    model = StripeEvent
    fields = ["id", "type", "received_at"]
    readonly_fields = fields
    extra = 0
    max_num = 0
    can_delete = False


@admin.register(Order)
class OrderAdmin(ReadOnlyAdmin):
    list_display = ["created_at", "user", "pack", "amount_display", "status", "credits", "credits_clawed_back"]
    list_filter = ["status", "pack"]
    search_fields = ["user__email", "checkout_session_id", "payment_intent_id", "id"]
    readonly_fields = [f.name for f in Order._meta.fields] + ["ledger"]
    inlines = [StripeEventInline]
    actions = ["refund"]

    @admin.display(description="ledger rows")
    def ledger(self, order: Order) -> str:
        rows = LedgerEntry.objects.filter(
            Q(reference=order.grant_ref) | Q(reverses__reference=order.grant_ref)
        ).order_by("id")
        # format_html escapes its arguments into strings first: sign the
        # amount before, never with a numeric format spec.
        return format_html_join(", ", "{} {}", ((row.reference, f"{row.amount:+d}") for row in rows)) or "—"

    def has_refund_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("billing.refund_order")

    @admin.action(description="Refund through Stripe (the webhook claws the credits back)", permissions=["refund"])
    def refund(self, request: HttpRequest, queryset: QuerySet[Order]) -> None:
        for order in queryset:
            try:
                refund_id = order_refund(order=order)
            except UnknownOrder as exc:
                self.message_user(request, f"{order}: {exc}", messages.ERROR)
            except stripe.StripeError as exc:
                self.message_user(
                    request,
                    f"{order}: Stripe refused or could not be reached, nothing was refunded ({exc}).",
                    messages.ERROR,
                )
            else:
                self.log_change(request, order, f"Refund {refund_id} requested through Stripe.")
                self.message_user(request, f"{order}: refund {refund_id} requested.", messages.SUCCESS)
